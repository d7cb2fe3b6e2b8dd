"""The store in a SQLite file: the default, shared by every process on one machine.

One table of keys, values and expiry times, in WAL mode so that readers do not wait for a writer.
Each step is one SQL statement, which SQLite makes atomic across processes (``add`` is an insert
that only replaces an expired row; ``replace_if`` and ``delete_if`` compare the value in their
WHERE clause). The statements run on one thread of the store's own, never on the event loop;
the steps asked for while that thread is busy run next as one batch in one transaction (one
commit, one hand-over back to the loop), so many concurrent agents' steps cost little more than
one's.
URLs as SQLAlchemy writes them: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from argentic.errors import ArgumentError, StorageUnavailableError
from argentic.storage.base import Store

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires_at REAL
)
"""
#: ``add``: inserts, or replaces a row that has expired; a live row stays (no change counted).
ADD_SQL = (
    "INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
    "value = excluded.value, expires_at = excluded.expires_at "
    "WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?"
)
#: Expired rows are deleted after this many writes (reads already ignore them).
PURGE_EVERY = 500


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///...`` URL (``~`` expanded)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ArgumentError(f"not a SQLite URL: {url!r} (sqlite:///relative.db or sqlite:////absolute.db)")
    return Path(url[len(prefix) :]).expanduser()


class SQLiteStore(Store):
    """Keys in a SQLite file: ``async with SQLiteStore("sqlite:///data/argentic.db") as store:``."""

    def __init__(self, url: str, *, busy_timeout_s: float = 10.0) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.busy_timeout_s = busy_timeout_s
        self._db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._writes = 0
        # Steps waiting for the store's thread, and whether it is draining them (both shared
        # with that thread, under the lock).
        self._batch: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._draining = False
        self._lock = threading.Lock()

    async def start(self) -> None:
        if self._db is not None:
            return
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="argentic-sqlite")
        self._db = await self._run(self._open)

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        db.execute("PRAGMA journal_mode=WAL")
        # Consistent under WAL; a power cut (not a killed process) may lose the last writes.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(SCHEMA)
        return db

    async def stop(self) -> None:
        db, self._db = self._db, None
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(thread, db.close)
        thread.shutdown(wait=False)

    async def _run(self, step: Callable[[], T]) -> T:
        if self._thread is None:
            raise StorageUnavailableError(f"the store {self.url} is not open: use it inside `async with`")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._batch.append((step, done))
            idle, self._draining = not self._draining, True
        if idle:
            loop.run_in_executor(self._thread, self._drain, loop)
        try:
            return await done
        except sqlite3.Error as exc:
            raise StorageUnavailableError(
                f"the SQLite store {self.url} failed: {exc} (is the file's folder writable, the disk full?)"
            ) from exc
        except OSError as exc:
            raise StorageUnavailableError(f"the SQLite store {self.url} cannot be opened: {exc}") from exc

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the store's thread: run the waiting steps, batch after batch, each batch in one
        transaction, and hand their outcomes back to the loop at once."""
        while True:
            batch = self._take_batch()
            if not batch:
                return
            outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
            db = self._db
            in_transaction = False
            try:
                if db is not None and len(batch) > 1:
                    db.execute("BEGIN IMMEDIATE")
                    in_transaction = True
            except sqlite3.Error:
                in_transaction = False  # each step then commits by itself
            for step, done in batch:
                try:
                    outcomes.append((done, step(), None))
                except BaseException as exc:  # the step's own error, for its caller
                    outcomes.append((done, None, exc))
            if in_transaction and db is not None:
                try:
                    db.execute("COMMIT")
                except sqlite3.Error as exc:
                    outcomes = [(done, None, exc) for done, _, _ in outcomes]
            try:
                loop.call_soon_threadsafe(self._settle, outcomes)
            except RuntimeError:  # the loop closed: nobody waits for these any more
                return

    def _take_batch(self) -> list[tuple[Callable[[], Any], asyncio.Future[Any]]]:
        with self._lock:
            batch, self._batch = self._batch, []
            if not batch:
                self._draining = False
            return batch

    @staticmethod
    def _settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
        for done, value, error in outcomes:
            if done.done():
                continue  # its caller gave up (cancelled)
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(value)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageUnavailableError(f"the store {self.url} is not open: use it inside `async with`")
        return self._db

    def _write(self, sql: str, params: tuple[object, ...]) -> int:
        db = self._conn()
        changed = db.execute(sql, params).rowcount
        self._writes += 1
        if self._writes % PURGE_EVERY == 0:
            db.execute("DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?", (time.time(),))
        return changed

    @staticmethod
    def _expiry(ttl_s: float | None) -> float | None:
        return None if ttl_s is None else time.time() + ttl_s

    async def get(self, key: str) -> bytes | None:
        def step() -> bytes | None:
            row = (
                self._conn()
                .execute(
                    "SELECT value FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
                    (key, time.time()),
                )
                .fetchone()
            )
            return None if row is None else bytes(row[0])

        return await self._run(step)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return await self._run(lambda: self._read_many(keys))

    def _read_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = time.time()
        db = self._conn()
        found: list[bytes | None] = []
        for key in keys:
            row = db.execute(
                "SELECT value FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
                (key, now),
            ).fetchone()
            found.append(None if row is None else bytes(row[0]))
        return found

    async def add_then_get_many(
        self, key: str, value: bytes, ttl_s: float | None, keys: Sequence[str]
    ) -> tuple[bool, list[bytes | None]]:
        # One step on the store's thread: one hand-over there and back instead of two.
        def step() -> tuple[bool, list[bytes | None]]:
            added = self._write(ADD_SQL, (key, value, self._expiry(ttl_s), time.time())) == 1
            return added, self._read_many(keys)

        return await self._run(step)

    async def set_many(self, items: Mapping[str, bytes], ttl_s: float | None = None) -> None:
        def step() -> None:
            expiry = self._expiry(ttl_s)
            db = self._conn()
            sql = "INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)"
            rows = [(key, value, expiry) for key, value in items.items()]
            if db.in_transaction:  # the batch's: it commits them all
                db.executemany(sql, rows)
            else:
                with db:  # one transaction: one commit for them all
                    db.execute("BEGIN")
                    db.executemany(sql, rows)
            self._writes += 1

        await self._run(step)

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        sql = "INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)"
        await self._run(lambda: self._write(sql, (key, value, self._expiry(ttl_s))))

    async def add(self, key: str, value: bytes, ttl_s: float | None = None) -> bool:
        params = (key, value, self._expiry(ttl_s), time.time())
        return await self._run(lambda: self._write(ADD_SQL, params) == 1)

    async def replace_if(self, key: str, expected: bytes, value: bytes, ttl_s: float | None = None) -> bool:
        sql = (
            "UPDATE kv SET value = ?, expires_at = ? "
            "WHERE key = ? AND value = ? AND (expires_at IS NULL OR expires_at > ?)"
        )
        params = (value, self._expiry(ttl_s), key, expected, time.time())
        return await self._run(lambda: self._write(sql, params) == 1)

    async def delete_if(self, key: str, expected: bytes) -> bool:
        sql = "DELETE FROM kv WHERE key = ? AND value = ? AND (expires_at IS NULL OR expires_at > ?)"
        return await self._run(lambda: self._write(sql, (key, expected, time.time())) == 1)

    async def delete(self, key: str) -> None:
        await self._run(lambda: self._write("DELETE FROM kv WHERE key = ?", (key,)))
