"""Two handles on one fresh store, as replicas in two processes would hold them: for the tests
and benchmarks of what replicas share."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from argentic.storage import MemoryStore, SQLiteStore, Store
from argentic.storage.redis import RedisStore

#: The backends :func:`store_pair` opens.
KINDS = ("memory", "sqlite", "redis")


@contextlib.asynccontextmanager
async def store_pair(
    kind: str, folder: Path, redis_url: str | None = None
) -> AsyncIterator[tuple[Store, Store]]:
    """Two handles on a new store of ``kind``: two connections where the backend has them (a SQLite
    file in ``folder``; keys of their own on the Redis server at ``redis_url``), one shared
    ``MemoryStore`` for memory (it lives in one process)."""
    if kind == "memory":
        shared = MemoryStore()
        yield shared, shared
    elif kind == "sqlite":
        url = f"sqlite:///{folder / f'{uuid.uuid4().hex}.db'}"
        async with SQLiteStore(url) as first, SQLiteStore(url) as second:
            yield first, second
    elif kind == "redis" and redis_url is not None:
        prefix = f"t{uuid.uuid4().hex[:8]}:"  # a shared server: each pair its own keys
        async with (
            RedisStore(redis_url, prefix=prefix) as first,
            RedisStore(redis_url, prefix=prefix) as second,
        ):
            yield first, second
    else:
        raise ValueError(f"no store pair of kind {kind!r} (redis needs redis_url)")
