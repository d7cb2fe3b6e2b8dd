"""The store in a SQLite file: the default, shared by every process on one machine.

One table of keys, values and expiry times, in WAL mode so that readers do not wait for a writer.
Each step is one SQL statement, which SQLite makes atomic across processes (``Add`` is an insert
that only replaces an expired row; ``ReplaceIf`` and ``DeleteIf`` compare the value in their
WHERE clause). The statements run on one thread of the store's own, never on the event loop; a
batch runs in one transaction, and the batches asked for while that thread is busy run next,
together, in one transaction (one commit, one hand-over back to the loop), so many concurrent
agents' steps cost little more than one's.
URLs as SQLAlchemy writes them: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from argentic.errors import ArgumentError, StorageUnavailableError
from argentic.storage.base import Add, Delete, DeleteIf, Get, Put, ReplaceIf, Step, Store

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires_at REAL
)
"""
#: Expired rows are deleted after this many writes (reads already ignore them).
PURGE_EVERY = 500
#: Most rows one statement reads or writes (SQLite takes at most 32766 parameters).
MAX_ROWS = 500


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

    async def batch(self, *steps: Step) -> list[Any]:
        def run() -> list[Any]:
            db = self._conn()
            if len(steps) == 1 or db.in_transaction:  # alone, or in the drained batch's transaction
                return self._steps(steps)
            with db:  # one transaction: one commit for them all
                db.execute("BEGIN")
                return self._steps(steps)

        return await self._run(run)

    def _steps(self, steps: Sequence[Step]) -> list[Any]:
        """The steps' outcomes, on the store's thread. Each run of consecutive reads, and of
        consecutive writes, is one statement: every statement hands Python's GIL to the event loop
        and back, which costs more than SQLite's own work."""
        outcomes: list[Any] = []
        at = 0
        while at < len(steps):
            kind = type(steps[at])
            end = at + 1
            if kind is Get or kind is Put:
                while end < len(steps) and type(steps[end]) is kind and end - at < MAX_ROWS:
                    end += 1
            if end - at == 1:
                outcomes.append(self._step(steps[at]))
            elif kind is Get:
                outcomes.extend(self._get_many([step.key for step in steps[at:end]]))
            else:
                self._put_many(steps[at:end])  # type: ignore[arg-type]
                outcomes.extend([None] * (end - at))
            at = end
        return outcomes

    def _get_many(self, keys: list[str]) -> list[bytes | None]:
        marks = ", ".join("?" * len(keys))
        sql = f"SELECT key, value FROM kv WHERE key IN ({marks}) AND (expires_at IS NULL OR expires_at > ?)"
        found = {key: bytes(value) for key, value in self._conn().execute(sql, (*keys, time.time()))}
        return [found.get(key) for key in keys]

    def _put_many(self, puts: Sequence[Put]) -> None:
        rows = ", ".join("(?, ?, ?)" for _ in puts)
        params = [p for put in puts for p in (put.key, put.value, self._expiry(put.ttl_s))]
        self._write(f"INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES {rows}", tuple(params))

    def _step(self, step: Step) -> Any:
        """One step, on the store's thread."""
        now = time.time()
        match step:
            case Get(key):
                sql = "SELECT value FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)"
                row = self._conn().execute(sql, (key, now)).fetchone()
                return None if row is None else bytes(row[0])
            case Put(key, value, ttl_s):
                sql = "INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)"
                self._write(sql, (key, value, self._expiry(ttl_s)))
                return None
            case Add(key, value, ttl_s):
                # Inserts, or replaces a row that has expired; a live row stays (no change counted).
                sql = (
                    "INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                    "value = excluded.value, expires_at = excluded.expires_at "
                    "WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?"
                )
                return self._write(sql, (key, value, self._expiry(ttl_s), now)) == 1
            case ReplaceIf(key, expected, value, ttl_s):
                sql = (
                    "UPDATE kv SET value = ?, expires_at = ? "
                    "WHERE key = ? AND value = ? AND (expires_at IS NULL OR expires_at > ?)"
                )
                return self._write(sql, (value, self._expiry(ttl_s), key, expected, now)) == 1
            case DeleteIf(key, expected):
                sql = "DELETE FROM kv WHERE key = ? AND value = ? AND (expires_at IS NULL OR expires_at > ?)"
                return self._write(sql, (key, expected, now)) == 1
            case Delete(key):
                self._write("DELETE FROM kv WHERE key = ?", (key,))
                return None
