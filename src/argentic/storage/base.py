"""The store every agent process shares: a small key-value interface with expiry and the two
atomic steps leases and "once" need, so that conversations, task records and stored replies are
written once, in :mod:`argentic.storage.records`, whichever backend holds them.

A backend implements :class:`Store`'s abstract methods; keys are strings, values bytes (the
records are JSON), and every ``ttl_s`` is seconds until the key expires (None: never). Backends:
:class:`~argentic.storage.memory.MemoryStore` (one process; ``memory://``),
:class:`~argentic.storage.sqlite.SQLiteStore` (every process on one machine; ``sqlite:///path``),
:class:`~argentic.storage.redis.RedisStore` (a cluster; ``redis://host:port/db``). A backend that
cannot be reached raises :class:`~argentic.errors.StorageUnavailableError` naming its URL.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence

from argentic.lifecycle import Running


class Store(Running):
    """Keys with expiry, shared by whoever opens the same URL: ``async with store:``."""

    #: Where the data lives, as given (passwords shown as ``***``).
    url: str = ""

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value of ``key``, None when there is none (or it expired)."""

    @abstractmethod
    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        """Write ``key`` (replacing any value), expiring after ``ttl_s`` seconds."""

    @abstractmethod
    async def add(self, key: str, value: bytes, ttl_s: float | None = None) -> bool:
        """Write ``key`` only when it has no (unexpired) value; whether it was written. Atomic:
        of two processes adding one key at once, exactly one gets True."""

    @abstractmethod
    async def replace_if(self, key: str, expected: bytes, value: bytes, ttl_s: float | None = None) -> bool:
        """Write ``key`` only while its value is ``expected`` (atomic compare-and-set); whether it
        was written. Renews a lease its holder still has."""

    @abstractmethod
    async def delete_if(self, key: str, expected: bytes) -> bool:
        """Delete ``key`` only while its value is ``expected`` (atomic); whether it was deleted.
        Releases a lease only by its holder."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Delete ``key`` whatever its value."""

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys``, in order (None where there is none): one round trip where the
        backend allows."""
        return [await self.get(key) for key in keys]

    async def add_then_get_many(
        self, key: str, value: bytes, ttl_s: float | None, keys: Sequence[str]
    ) -> tuple[bool, list[bytes | None]]:
        """:meth:`add`, then :meth:`get_many` of ``keys`` read after it: one round trip where the
        backend allows (a claim taken together with the look for a kept reply)."""
        added = await self.add(key, value, ttl_s)
        return added, await self.get_many(keys)

    async def set_many(self, items: Mapping[str, bytes], ttl_s: float | None = None) -> None:
        """Write every key of ``items`` (as :meth:`set`): one round trip where the backend allows."""
        for key, value in items.items():
            await self.set(key, value, ttl_s)
