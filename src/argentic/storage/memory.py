"""The store in one process's memory: the fast tier's, and ``storage.url: memory://``.

Nothing outlives the process and nothing is shared with another one: replicas of a role in other
processes need :class:`~argentic.storage.sqlite.SQLiteStore` or
:class:`~argentic.storage.redis.RedisStore`.
"""

from __future__ import annotations

import time

from argentic.storage.base import Store


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

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        self._put(key, value, ttl_s)

    async def add(self, key: str, value: bytes, ttl_s: float | None = None) -> bool:
        if self._live(key) is not None:
            return False
        self._put(key, value, ttl_s)
        return True

    async def replace_if(self, key: str, expected: bytes, value: bytes, ttl_s: float | None = None) -> bool:
        if self._live(key) != expected:
            return False
        self._put(key, value, ttl_s)
        return True

    async def delete_if(self, key: str, expected: bytes) -> bool:
        if self._live(key) != expected:
            return False
        del self._values[key]
        return True

    async def delete(self, key: str) -> None:
        self._values.pop(key, None)
