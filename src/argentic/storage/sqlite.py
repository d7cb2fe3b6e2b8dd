"""The store in a SQLite file: the default, shared by every process on one machine.

One table of keys, values and expiry times, in WAL mode so that readers do not wait for a writer.
The statements run on one thread of the store's own, never on the event loop. The batches asked
for while that thread is busy run next, together, in one transaction (one commit, one hand-over
back to the loop), and their steps are merged by kind into a few statements (:func:`phases`), so
many concurrent agents' steps cost little more than one's. Each statement is atomic across
processes (``Add`` is an insert that only replaces an expired row; ``ReplaceIf`` and ``DeleteIf``
compare the value in their WHERE clause, and report the keys they wrote with ``RETURNING``).
URLs as SQLAlchemy writes them: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from argentic.errors import ArgumentError, StorageUnavailableError
from argentic.storage.base import Add, Delete, DeleteIf, Get, Put, ReplaceIf, Step, Store

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL)",
    # The purge finds expired rows through this index: without it each purge read the whole table
    # (60 ms at 100,000 rows), holding every process's writes meanwhile.
    "CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL",
)
#: Expired rows are deleted after this many writes (reads already ignore them).
PURGE_EVERY = 500
#: The statement that deletes them (the parameter is now).
PURGE = "DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?"
#: A row not expired as of the parameter given (now).
LIVE = "(expires_at IS NULL OR expires_at > ?)"
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
        # Batches waiting for the store's thread, and whether it is draining them (both shared
        # with that thread, under the lock).
        self._batch: list[tuple[tuple[Step, ...], asyncio.Future[list[Any]]]] = []
        self._draining = False
        self._lock = threading.Lock()

    async def start(self) -> None:
        if self._db is not None:
            return
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="argentic-sqlite")
        with self._failures():
            self._db = await asyncio.get_running_loop().run_in_executor(self._thread, self._open)

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        if sqlite3.sqlite_version_info < (3, 35):  # RETURNING
            raise sqlite3.NotSupportedError(
                f"SQLite {sqlite3.sqlite_version} is too old: 3.35 or newer is needed"
            )
        db.execute("PRAGMA journal_mode=WAL")
        # Consistent under WAL; a power cut (not a killed process) may lose the last writes.
        db.execute("PRAGMA synchronous=NORMAL")
        for statement in SCHEMA:
            db.execute(statement)
        return db

    async def stop(self) -> None:
        db, self._db = self._db, None
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(thread, db.close)
        thread.shutdown(wait=False)

    @contextlib.contextmanager
    def _failures(self) -> Iterator[None]:
        """SQLite's errors as StorageUnavailableError naming the file."""
        try:
            yield
        except sqlite3.Error as exc:
            raise StorageUnavailableError(
                f"the SQLite store {self.url} failed: {exc} (is the file's folder writable, the disk full?)"
            ) from exc
        except OSError as exc:
            raise StorageUnavailableError(f"the SQLite store {self.url} cannot be opened: {exc}") from exc

    async def batch(self, *steps: Step) -> list[Any]:
        if not steps:
            return []
        if self._thread is None or self._db is None:
            raise StorageUnavailableError(f"the store {self.url} is not open: use it inside `async with`")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[Any]] = loop.create_future()
        with self._lock:
            self._batch.append((steps, done))
            idle, self._draining = not self._draining, True
        if idle:
            loop.run_in_executor(self._thread, self._drain, loop)
        with self._failures():
            return await done

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the store's thread: run the waiting batches, all of them in one transaction and
        their steps merged into few statements (:func:`phases`), and hand their outcomes back to
        the loop at once; then the batches that came meanwhile, until none is left."""
        while True:
            batch = self._take_batch()
            if not batch:
                return
            steps = [step for steps, _ in batch for step in steps]
            try:
                outcomes = self._in_transaction(steps)
            except Exception as exc:  # the transaction failed: every batch in it did
                outcomes = [exc] * len(steps)
            settled: list[tuple[asyncio.Future[list[Any]], list[Any]]] = []
            at = 0
            for mine, done in batch:
                settled.append((done, outcomes[at : at + len(mine)]))
                at += len(mine)
            try:
                loop.call_soon_threadsafe(self._settle, settled)
            except RuntimeError:  # the loop closed: nobody waits for these any more
                return

    def _take_batch(self) -> list[tuple[tuple[Step, ...], asyncio.Future[list[Any]]]]:
        with self._lock:
            batch, self._batch = self._batch, []
            if not batch:
                self._draining = False
            return batch

    @staticmethod
    def _settle(settled: list[tuple[asyncio.Future[list[Any]], list[Any]]]) -> None:
        for done, outcomes in settled:
            if done.done():
                continue  # its caller gave up (cancelled)
            error = next((o for o in outcomes if isinstance(o, Exception)), None)
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(outcomes)

    def _in_transaction(self, steps: list[Step]) -> list[Any]:
        """The steps' outcomes (an exception for a step whose statement failed), run in one
        transaction when they write (one commit for them all)."""
        db = self._conn()
        if all(isinstance(step, Get) for step in steps):
            return self._run_phases(steps)
        db.execute("BEGIN IMMEDIATE")
        try:
            outcomes = self._run_phases(steps)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled it back itself
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return outcomes

    def _run_phases(self, steps: list[Step]) -> list[Any]:
        outcomes: list[Any] = [None] * len(steps)
        for kind, members in phases(steps):
            for at in range(0, len(members), MAX_ROWS):
                chunk = members[at : at + MAX_ROWS]
                try:
                    results = self._statement(kind, [steps[i] for i in chunk])
                except sqlite3.Error as exc:
                    results = [exc] * len(chunk)
                for i, result in zip(chunk, results, strict=True):
                    outcomes[i] = result
        return outcomes

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageUnavailableError(f"the store {self.url} is not open: use it inside `async with`")
        return self._db

    def _write(self, sql: str, params: Sequence[object], rows: int) -> set[str]:
        """Run a statement that writes ``rows`` rows; the keys it returns (``RETURNING key``)."""
        db = self._conn()
        returned = {row[0] for row in db.execute(sql, params).fetchall()}
        before, self._writes = self._writes, self._writes + rows
        if before // PURGE_EVERY != self._writes // PURGE_EVERY:
            db.execute(PURGE, (time.time(),))
        return returned

    @staticmethod
    def _expiry(ttl_s: float | None) -> float | None:
        return None if ttl_s is None else time.time() + ttl_s

    def _statement(self, kind: type[Step], steps: list[Step]) -> list[Any]:
        """The outcomes of steps of one kind on distinct keys (reads, puts and deletes may repeat
        a key), in one statement."""
        now = time.time()
        keys = [step.key for step in steps]
        marks = ", ".join("?" * len(steps))
        if kind is Get:
            sql = f"SELECT key, value FROM kv WHERE key IN ({marks}) AND {LIVE}"
            found = {key: bytes(value) for key, value in self._conn().execute(sql, (*keys, now))}
            return [found.get(key) for key in keys]
        if kind is Delete:
            self._write(f"DELETE FROM kv WHERE key IN ({marks})", keys, len(steps))
            return [None] * len(steps)
        if kind is DeleteIf:
            # Only the holder's value: compared per key (CASE) so that the key's index finds the rows.
            cases = " ".join("WHEN ? THEN ?" for _ in steps)
            sql = (
                f"DELETE FROM kv WHERE key IN ({marks}) AND value = CASE key {cases} END "
                f"AND {LIVE} RETURNING key"
            )
            pairs = [p for step in steps if isinstance(step, DeleteIf) for p in (step.key, step.expected)]
            deleted = self._write(sql, (*keys, *pairs, now), len(steps))
            return [key in deleted for key in keys]
        rows: list[object] = []
        for step in steps:
            if isinstance(step, Put | Add):
                rows += (step.key, step.value, self._expiry(step.ttl_s))
        values = ", ".join("(?, ?, ?)" for _ in steps)
        if kind is Put:  # a key given twice: the later row wins
            self._write(
                f"INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES {values}", rows, len(steps)
            )
            return [None] * len(steps)
        if kind is Add:
            # Inserts, or replaces a row that has expired; a live row stays (and is not returned).
            sql = (
                f"INSERT INTO kv (key, value, expires_at) VALUES {values} ON CONFLICT(key) DO UPDATE SET "
                "value = excluded.value, expires_at = excluded.expires_at "
                "WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ? RETURNING key"
            )
            added = self._write(sql, (*rows, now), len(steps))
            return [key in added for key in keys]
        outcomes = []
        for step in steps:  # ReplaceIf: rare (lease renewals), one statement each
            assert isinstance(step, ReplaceIf)
            sql = (
                "UPDATE kv SET value = ?, expires_at = ? "
                f"WHERE key = ? AND value = ? AND {LIVE} RETURNING key"
            )
            params = (step.value, self._expiry(step.ttl_s), step.key, step.expected, now)
            outcomes.append(bool(self._write(sql, params, 1)))
        return outcomes


def phases(steps: Sequence[Step]) -> list[tuple[type[Step], list[int]]]:
    """The steps' positions grouped into phases to run in order, each phase one kind of step, so
    that many batches' steps take a few statements: a step joins the first phase of its kind that
    comes no earlier than the last phase touching its key, so each key sees its steps in the order
    given (steps on different keys cannot see each other's order within a transaction). A
    conditional step (add, compare) meets its key at most once per phase."""
    groups: list[tuple[type[Step], list[int], set[str]]] = []
    last: dict[str, int] = {}
    for i, step in enumerate(steps):
        kind = type(step)
        repeats = kind is Get or kind is Put or kind is Delete
        at = last.get(step.key, 0)
        while at < len(groups) and not (groups[at][0] is kind and (repeats or step.key not in groups[at][2])):
            at += 1
        if at == len(groups):
            groups.append((kind, [], set()))
        groups[at][1].append(i)
        groups[at][2].add(step.key)
        last[step.key] = at
    return [(kind, members) for kind, members, _ in groups]
