"""Messagers made for a test or benchmark and disconnected when it ends."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from argentic.messaging import Messager

MakeMessager = Callable[..., Awaitable[Messager]]


@contextlib.asynccontextmanager
async def connected_messagers(build: Callable[..., Messager]) -> AsyncIterator[MakeMessager]:
    """``await make(*args, connect=True, **options)`` builds a messager with ``build`` and connects it
    (unless ``connect=False``); every messager made is disconnected on exit, newest first."""
    made: list[Messager] = []

    async def make(*args: Any, connect: bool = True, **options: Any) -> Messager:
        messager = build(*args, **options)
        made.append(messager)
        if connect:
            await messager.connect()
        return messager

    try:
        yield make
    finally:
        for messager in reversed(made):
            await messager.disconnect()
