"""What a Messager winds down before it disconnects: components' leave callbacks, shared parts.

Components register a callback to withdraw what they announced even if they are never stopped;
parts shared by every component on one messager (a task board, a directory of roles) are built
on first use and closed with it. Both run newest first, each within a bound, and one that fails
does not keep the others from running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from argentic.messaging.messager import Messager

logger = logging.getLogger("argentic.messaging")

P = TypeVar("P", bound="SharedPart")


class SharedPart(Protocol):
    """A part every component on one messager shares (a task board, a directory of roles): built
    from the messager on first use, closed by its disconnect."""

    def __init__(self, messager: Messager) -> None: ...

    async def close(self) -> None: ...


class Leaving:
    def __init__(self) -> None:
        self._callbacks: list[Callable[[], Awaitable[None]]] = []
        self._parts: dict[type[Any], Any] = {}

    def before_disconnect(self, callback: Callable[[], Awaitable[None]]) -> Callable[[], None]:
        """Register ``callback``; returns a function that cancels the registration."""
        self._callbacks.append(callback)

        def cancel() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return cancel

    def shared(self, kind: type[P], messager: Messager) -> P:
        part = self._parts.get(kind)
        if part is None:
            part = self._parts[kind] = kind(messager)
        return part

    async def run(self, timeout_s: float) -> None:
        """The callbacks, then the shared parts' ``close``, newest first, each within ``timeout_s``."""
        callbacks, self._callbacks = list(self._callbacks), []
        for callback in reversed(callbacks):
            try:
                async with asyncio.timeout(timeout_s):
                    await callback()
            except Exception as exc:  # leaving must not fail because one component could not
                logger.warning("while disconnecting, %r failed: %s", callback, exc)
        parts, self._parts = list(self._parts.values()), {}
        for part in reversed(parts):
            try:
                async with asyncio.timeout(timeout_s):
                    await part.close()
            except Exception as exc:
                logger.warning("while disconnecting, closing %r failed: %s", part, exc)
