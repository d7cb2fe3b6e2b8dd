"""The store agents share: conversations (and the turn of each), across replicas and restarts.

``open_store(url)`` picks the backend by the URL's scheme: ``memory://``, ``sqlite:///path``
(the default: a file every process on the machine shares), ``redis://host:port/db`` (a cluster).
"""

from __future__ import annotations

from argentic.errors import ArgumentError, LeaseTimeoutError
from argentic.storage.base import Add, Delete, DeleteIf, Get, Put, ReplaceIf, Step, Store
from argentic.storage.memory import MemoryStore
from argentic.storage.records import Claim, ConversationRecords, Lease, Once, TaskRecords
from argentic.storage.sqlite import SQLiteStore


def open_store(url: str) -> Store:
    """The store ``url`` names, not yet started (``async with open_store(url) as store:``)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        return MemoryStore(url)
    if scheme == "sqlite":
        return SQLiteStore(url)
    if scheme in ("redis", "rediss", "valkey"):
        from argentic.storage.redis import RedisStore

        return RedisStore(url)
    raise ArgumentError(
        f"unknown store URL {url!r}: use memory://, sqlite:///path/to/file.db or redis://host:6379/0"
    )


__all__ = [
    "Add",
    "Claim",
    "ConversationRecords",
    "Delete",
    "DeleteIf",
    "Get",
    "Lease",
    "LeaseTimeoutError",
    "MemoryStore",
    "Once",
    "Put",
    "ReplaceIf",
    "SQLiteStore",
    "Step",
    "Store",
    "TaskRecords",
    "open_store",
]
