"""The store in one process's memory: the fast tier's, and ``storage.url: memory://``.

Nothing outlives the process and nothing is shared with another one: replicas of a role in other
processes need :class:`~argentic.storage.sqlite.SQLiteStore` or
:class:`~argentic.storage.redis.RedisStore`.
"""

from __future__ import annotations

import time
from typing import Any

from argentic.storage.base import Add, Delete, DeleteIf, Get, Put, ReplaceIf, Step, Store


class MemoryStore(Store):
    """Keys in a dict, with expiry; every step is atomic (one event loop, no awaits inside)."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._values: dict[str, tuple[bytes, float | None]] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def _live(self, key: str) -> bytes | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires is not None and expires <= time.monotonic():
            del self._values[key]
            return None
        return value

    def _put(self, key: str, value: bytes, ttl_s: float | None) -> None:
        self._values[key] = (value, None if ttl_s is None else time.monotonic() + ttl_s)

    async def batch(self, *steps: Step) -> list[Any]:
        return [self._step(step) for step in steps]

    def _step(self, step: Step) -> Any:
        match step:
            case Get(key):
                return self._live(key)
            case Put(key, value, ttl_s):
                self._put(key, value, ttl_s)
                return None
            case Add(key, value, ttl_s):
                if self._live(key) is not None:
                    return False
                self._put(key, value, ttl_s)
                return True
            case ReplaceIf(key, expected, value, ttl_s):
                if self._live(key) != expected:
                    return False
                self._put(key, value, ttl_s)
                return True
            case DeleteIf(key, expected):
                if self._live(key) != expected:
                    return False
                del self._values[key]
                return True
            case Delete(key):
                self._values.pop(key, None)
                return None
