"""Waiting in tests for something that happens over the network."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def wait_until(
    predicate: Callable[[], bool], limit_s: float = 15.0, what: str | Callable[[], str] = "condition"
) -> None:
    """Poll ``predicate`` until true; raise AssertionError after ``limit_s`` (a guard, not a measurement)."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        await asyncio.sleep(0.01)
