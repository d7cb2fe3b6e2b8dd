"""The store every agent process shares: a small key-value interface with expiry and the two
atomic steps leases and "once" need, so that conversations, task records and stored replies are
written once, in :mod:`argentic.storage.records`, whichever backend holds them.

A backend implements :meth:`Store.batch`: steps (:class:`Get`, :class:`Put`, :class:`Add`,
:class:`ReplaceIf`, :class:`DeleteIf`, :class:`Delete`) run in order, in one round trip where it
can (a Redis pipeline, one SQLite transaction): a lease taken with the history it guards read, a
history written with its lease let go. Keys are strings, values bytes (the records are JSON), and
every ``ttl_s`` is seconds until the key expires (None: never). Backends:
:class:`~argentic.storage.memory.MemoryStore` (one process; ``memory://``),
:class:`~argentic.storage.sqlite.SQLiteStore` (every process on one machine; ``sqlite:///path``),
:class:`~argentic.storage.redis.RedisStore` (a cluster; ``redis://host:port/db``). A backend that
cannot be reached raises :class:`~argentic.errors.StorageUnavailableError` naming its URL.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from argentic.lifecycle import Running


@dataclass(frozen=True, slots=True)
class Get:
    """The value of ``key``, None when there is none (or it expired)."""

    key: str


@dataclass(frozen=True, slots=True)
class Put:
    """Write ``key`` (replacing any value), expiring after ``ttl_s`` seconds. Outcome: None."""

    key: str
    value: bytes
    ttl_s: float | None = None


@dataclass(frozen=True, slots=True)
class Add:
    """Write ``key`` only when it has no (unexpired) value; whether it was written. Atomic: of two
    processes adding one key at once, exactly one gets True."""

    key: str
    value: bytes
    ttl_s: float | None = None


@dataclass(frozen=True, slots=True)
class ReplaceIf:
    """Write ``key`` only while its value is ``expected`` (atomic compare-and-set); whether it was
    written. Renews a lease its holder still has."""

    key: str
    expected: bytes
    value: bytes
    ttl_s: float | None = None


@dataclass(frozen=True, slots=True)
class DeleteIf:
    """Delete ``key`` only while its value is ``expected`` (atomic); whether it was deleted.
    Releases a lease only by its holder."""

    key: str
    expected: bytes


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete ``key`` whatever its value. Outcome: None."""

    key: str


Step = Get | Put | Add | ReplaceIf | DeleteIf | Delete


class Store(Running):
    """Keys with expiry, shared by whoever opens the same URL: ``async with store:``."""

    #: Where the data lives, as given (passwords shown as ``***``).
    url: str = ""

    @abstractmethod
    async def batch(self, *steps: Step) -> list[Any]:
        """The outcome of each step (see each step's class), the steps run in the order given, in
        one round trip where the backend allows. Each step is atomic; the batch is not a
        transaction (a step may fail while the others are done)."""

    async def get(self, key: str) -> bytes | None:
        (value,) = await self.batch(Get(key))
        return value  # type: ignore[no-any-return]

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys``, in order (None where there is none), in one batch."""
        return await self.batch(*(Get(key) for key in keys)) if keys else []

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        await self.batch(Put(key, value, ttl_s))

    async def set_many(self, items: Mapping[str, bytes], ttl_s: float | None = None) -> None:
        """Write every key of ``items`` (as :meth:`set`), in one batch."""
        if items:
            await self.batch(*(Put(key, value, ttl_s) for key, value in items.items()))

    async def add(self, key: str, value: bytes, ttl_s: float | None = None) -> bool:
        (written,) = await self.batch(Add(key, value, ttl_s))
        return bool(written)

    async def replace_if(self, key: str, expected: bytes, value: bytes, ttl_s: float | None = None) -> bool:
        (written,) = await self.batch(ReplaceIf(key, expected, value, ttl_s))
        return bool(written)

    async def delete_if(self, key: str, expected: bytes) -> bool:
        (deleted,) = await self.batch(DeleteIf(key, expected))
        return bool(deleted)

    async def delete(self, key: str) -> None:
        await self.batch(Delete(key))
