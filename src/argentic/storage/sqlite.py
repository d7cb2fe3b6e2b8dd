"""The store in a SQLite file: the default, shared by every process on one machine.

One table of keys, values and expiry times, in WAL mode so that readers do not wait for a writer.
The batches asked for in one pass of the event loop run together in one transaction (one commit),
their steps merged by kind into a few statements (:func:`phases`), so many concurrent agents' steps
cost little more than one's. That transaction runs on the loop, on a connection that never waits:
it takes the file's write lock at once or not at all (busy timeout 0), its commit appends to the
WAL without syncing (``synchronous=NORMAL``), and what does wait (a lock another process holds,
copying the WAL into the file, which syncs, and closing) runs on a thread of the store's own, on a
second connection. Statements run on that thread instead hand the GIL between thread and loop at
each statement and each row they return, and took two to three times the CPU a turn
(``bench/store.py``). Each statement is atomic across processes (``Add`` is an insert that only
replaces an expired row; ``ReplaceIf`` and ``DeleteIf`` compare the value in their WHERE clause,
and report the keys they wrote with ``RETURNING``).
URLs as SQLAlchemy writes them: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
log = logging.getLogger(__name__)

#: Expired rows are deleted (reads already ignore them), and the WAL copied into the file, after
#: this many writes.
PURGE_EVERY = 500
#: The statement that deletes them (the parameter is now).
PURGE = "DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?"
#: A row not expired as of the parameter given (now).
LIVE = "(expires_at IS NULL OR expires_at > ?)"
#: Most rows one statement reads or writes (SQLite takes at most 32766 parameters).
MAX_ROWS = 500

#: Steps asked for in one call, and the future of their outcomes.
Batch = tuple[tuple[Step, ...], "asyncio.Future[list[Any]]"]


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
        self._db: sqlite3.Connection | None = None  # the loop's: never waits (see the module)
        self._waiting_db: sqlite3.Connection | None = None  # the thread's: waits for locks
        self._thread: ThreadPoolExecutor | None = None
        self._writes = 0
        self._tidied = 0  # self._writes at the last tidy
        # Batches for the next pass on the loop, and whether that pass is scheduled.
        self._queued: list[Batch] = []
        self._pass_due = False
        # Batches handed to the thread, and whether it is draining them (both shared with the
        # thread, under the lock).
        self._handed: list[Batch] = []
        self._draining = False
        self._lock = threading.Lock()

    async def start(self) -> None:
        if self._db is not None:
            return
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="argentic-sqlite")
        with self._failures():
            self._waiting_db, self._db = await asyncio.get_running_loop().run_in_executor(
                self._thread, self._open
            )

    def _open(self) -> tuple[sqlite3.Connection, sqlite3.Connection]:
        """The thread's connection and the loop's."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        waiting = self._connect(self.busy_timeout_s)
        if sqlite3.sqlite_version_info < (3, 35):  # RETURNING
            waiting.close()
            raise sqlite3.NotSupportedError(
                f"SQLite {sqlite3.sqlite_version} is too old: 3.35 or newer is needed"
            )
        waiting.execute("PRAGMA journal_mode=WAL")
        for statement in SCHEMA:
            waiting.execute(statement)
        at_once = self._connect(0.0)
        # Its commits only append to the WAL; the thread copies the WAL into the file (:meth:`_tidy`).
        at_once.execute("PRAGMA wal_autocheckpoint=0")
        return waiting, at_once

    def _connect(self, timeout_s: float) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
        # Consistent under WAL; a power cut (not a killed process) may lose the last writes. A
        # commit then writes to the WAL without waiting for the disk.
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    async def stop(self) -> None:
        connections = [db for db in (self._db, self._waiting_db) if db is not None]
        self._db = self._waiting_db = None
        thread, self._thread = self._thread, None
        if thread is None:
            return
        for db in connections:  # the last to close copies the WAL into the file: not on the loop
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
        self._queued.append((steps, done))
        if not self._pass_due:
            self._pass_due = True
            loop.call_soon(self._pass, loop)
        with self._failures():
            return await done

    def _pass(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop: the batches asked for since the last pass, in one transaction that takes
        the file's write lock at once or not at all; when another connection holds it, the thread
        runs them, waiting for the lock."""
        batch, self._queued, self._pass_due = self._queued, [], False
        db, waiting = self._db, self._waiting_db
        if db is None or waiting is None:
            error = StorageUnavailableError(f"the store {self.url} closed")
            self._settle([(done, [error]) for _, done in batch])
            return
        steps = [step for steps, _ in batch for step in steps]
        try:
            outcomes = self._in_transaction(db, steps)
        except Exception as exc:
            if isinstance(exc, sqlite3.Error) and _locked(exc):
                self._hand_over(batch, waiting, loop)
                return
            outcomes = [exc] * len(steps)  # the transaction failed: every batch in it did
        self._settle(_split(batch, outcomes))
        self._tidy_if_due(waiting, loop)

    def _hand_over(self, batch: list[Batch], db: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._handed += batch
            idle, self._draining = not self._draining, True
        if idle:
            loop.run_in_executor(self._thread, self._drain, db, loop)

    def _drain(self, db: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> None:
        """On the store's thread: run the batches handed to it, all of them in one transaction
        (which waits for the lock), and hand their outcomes back to the loop at once; then the
        batches that came meanwhile, until none is left."""
        while True:
            with self._lock:
                batch, self._handed = self._handed, []
                if not batch:
                    self._draining = False
                    return
            steps = [step for steps, _ in batch for step in steps]
            try:
                outcomes = self._in_transaction(db, steps)
            except Exception as exc:  # the transaction failed: every batch in it did
                outcomes = [exc] * len(steps)
            try:
                loop.call_soon_threadsafe(self._settle, _split(batch, outcomes))
            except RuntimeError:  # the loop closed: nobody waits for these any more
                return

    def _tidy_if_due(self, db: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> None:
        if self._writes >= self._tidied + PURGE_EVERY:
            self._tidied = self._writes
            loop.run_in_executor(self._thread, self._tidy, db)

    def _tidy(self, db: sqlite3.Connection) -> None:
        """On the store's thread: delete the expired rows and copy the WAL into the file (which
        lets later commits write the WAL from its start, so it stays small)."""
        try:
            db.execute(PURGE, (time.time(),))
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            log.warning("could not tidy the SQLite store %s (tried again later): %s", self.url, exc)

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

    def _in_transaction(self, db: sqlite3.Connection, steps: list[Step]) -> list[Any]:
        """The steps' outcomes (an exception for a step whose statement failed), run in one
        transaction when they write (one commit for them all). A lock that another connection
        holds is raised (:func:`_locked`), the transaction rolled back."""
        if all(isinstance(step, Get) for step in steps):
            return self._run_phases(db, steps)
        db.execute("BEGIN IMMEDIATE")
        try:
            outcomes = self._run_phases(db, steps)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled it back itself
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return outcomes

    def _run_phases(self, db: sqlite3.Connection, steps: list[Step]) -> list[Any]:
        outcomes: list[Any] = [None] * len(steps)
        for kind, members in phases(steps):
            for at in range(0, len(members), MAX_ROWS):
                chunk = members[at : at + MAX_ROWS]
                try:
                    results = self._statement(db, kind, [steps[i] for i in chunk])
                except sqlite3.Error as exc:
                    if _locked(exc):
                        raise
                    results = [exc] * len(chunk)
                for i, result in zip(chunk, results, strict=True):
                    outcomes[i] = result
        return outcomes

    def _write(self, db: sqlite3.Connection, sql: str, params: Sequence[object], rows: int) -> set[str]:
        """Run a statement that writes ``rows`` rows; the keys it returns (``RETURNING key``)."""
        returned = {row[0] for row in db.execute(sql, params).fetchall()}
        self._writes += rows  # counted on both threads: a lost count only delays a purge
        return returned

    @staticmethod
    def _expiry(ttl_s: float | None) -> float | None:
        return None if ttl_s is None else time.time() + ttl_s

    def _statement(self, db: sqlite3.Connection, kind: type[Step], steps: list[Step]) -> list[Any]:
        """The outcomes of steps of one kind on distinct keys (reads, puts and deletes may repeat
        a key), in one statement."""
        now = time.time()
        keys = [step.key for step in steps]
        marks = ", ".join("?" * len(steps))
        if kind is Get:
            sql = f"SELECT key, value FROM kv WHERE key IN ({marks}) AND {LIVE}"
            found = {key: bytes(value) for key, value in db.execute(sql, (*keys, now))}
            return [found.get(key) for key in keys]
        if kind is Delete:
            self._write(db, f"DELETE FROM kv WHERE key IN ({marks})", keys, len(steps))
            return [None] * len(steps)
        if kind is DeleteIf:
            # Only the holder's value: compared per key (CASE) so that the key's index finds the rows.
            cases = " ".join("WHEN ? THEN ?" for _ in steps)
            sql = (
                f"DELETE FROM kv WHERE key IN ({marks}) AND value = CASE key {cases} END "
                f"AND {LIVE} RETURNING key"
            )
            pairs = [p for step in steps if isinstance(step, DeleteIf) for p in (step.key, step.expected)]
            deleted = self._write(db, sql, (*keys, *pairs, now), len(steps))
            return [key in deleted for key in keys]
        rows: list[object] = []
        for step in steps:
            if isinstance(step, Put | Add):
                rows += (step.key, step.value, self._expiry(step.ttl_s))
        values = ", ".join("(?, ?, ?)" for _ in steps)
        if kind is Put:  # a key given twice: the later row wins
            self._write(
                db, f"INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES {values}", rows, len(steps)
            )
            return [None] * len(steps)
        if kind is Add:
            # Inserts, or replaces a row that has expired; a live row stays (and is not returned).
            sql = (
                f"INSERT INTO kv (key, value, expires_at) VALUES {values} ON CONFLICT(key) DO UPDATE SET "
                "value = excluded.value, expires_at = excluded.expires_at "
                "WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ? RETURNING key"
            )
            added = self._write(db, sql, (*rows, now), len(steps))
            return [key in added for key in keys]
        outcomes = []
        for step in steps:  # ReplaceIf: rare (lease renewals), one statement each
            assert isinstance(step, ReplaceIf)
            sql = (
                "UPDATE kv SET value = ?, expires_at = ? "
                f"WHERE key = ? AND value = ? AND {LIVE} RETURNING key"
            )
            params = (step.value, self._expiry(step.ttl_s), step.key, step.expected, now)
            outcomes.append(bool(self._write(db, sql, params, 1)))
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


def _split(batch: list[Batch], outcomes: list[Any]) -> list[tuple[asyncio.Future[list[Any]], list[Any]]]:
    """Each batch's future with its share of the outcomes."""
    settled = []
    at = 0
    for steps, done in batch:
        settled.append((done, outcomes[at : at + len(steps)]))
        at += len(steps)
    return settled


def _locked(exc: sqlite3.Error) -> bool:
    """Whether the error is another connection's lock (the loop's connection does not wait)."""
    return exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
