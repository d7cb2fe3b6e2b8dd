"""The store's contract on every backend: values with expiry, and the atomic steps leases and
"once" rest on (add, replace_if, delete_if). SQLite's across processes too."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from argentic.errors import ArgumentError, StorageUnavailableError
from argentic.protocol import Answer, TaskStatus
from argentic.storage import Lease, MemoryStore, SQLiteStore, Store, TaskRecords, open_store
from argentic.storage.base import Add, Delete, DeleteIf, Get, Put, ReplaceIf, Step
from argentic.storage.sqlite import PURGE, PURGE_EVERY


async def test_values_round_trip_and_expire(store_pair: tuple[Store, Store]) -> None:
    first, second = store_pair
    await first.set("k", b"v1")
    assert await second.get("k") == b"v1"
    await second.set("k", b"v2", ttl_s=0.2)
    assert await first.get("k") == b"v2"
    await asyncio.sleep(0.3)
    assert await first.get("k") is None
    assert await first.get("never") is None
    await first.set("gone", b"x")
    await second.delete("gone")
    assert await first.get("gone") is None


async def test_many_values_in_one_round_trip(store_pair: tuple[Store, Store]) -> None:
    first, second = store_pair
    await first.set_many({"a": b"1", "b": b"2"})
    await first.set_many({"c": b"3"}, ttl_s=0.2)
    assert await second.get_many(["a", "missing", "c", "b"]) == [b"1", None, b"3", b"2"]
    await first.set_many({"a": b"one"})  # replaces
    await asyncio.sleep(0.3)
    assert await second.get_many(["a", "c"]) == [b"one", None]
    assert await second.get_many([]) == []


async def test_a_batch_runs_its_steps_in_order(store_pair: tuple[Store, Store]) -> None:
    first, second = store_pair
    outcomes = await first.batch(
        Add("lease", b"me", 5),
        Get("lease"),
        Add("lease", b"you", 5),
        Put("history", b"h1"),
        ReplaceIf("lease", b"you", b"x"),
        ReplaceIf("lease", b"me", b"me", 5),
        Get("history"),
        DeleteIf("lease", b"you"),
        DeleteIf("lease", b"me"),
        Get("lease"),
        Delete("history"),
        Get("history"),
    )
    assert outcomes == [True, b"me", False, None, False, True, b"h1", False, True, None, None, None]
    assert await first.batch() == []
    # What one batch wrote, another client reads.
    await first.batch(Put("a", b"1"), Put("b", b"2", ttl_s=0.2))
    assert await second.batch(Get("a"), Get("b")) == [b"1", b"2"]


async def test_add_is_atomic_and_takes_an_expired_key(store_pair: tuple[Store, Store]) -> None:
    first, second = store_pair
    wins = await asyncio.gather(
        *(store.add("lock", str(i).encode()) for i, store in enumerate([first, second] * 10))
    )
    assert wins.count(True) == 1
    assert await first.add("short", b"a", ttl_s=0.1)
    assert not await second.add("short", b"b", ttl_s=0.1)
    await asyncio.sleep(0.2)
    assert await second.add("short", b"b")  # the first holder's time is up
    assert await first.get("short") == b"b"


async def test_replace_and_delete_only_with_the_expected_value(store_pair: tuple[Store, Store]) -> None:
    first, second = store_pair
    await first.set("lease", b"mine", ttl_s=5)
    assert not await second.replace_if("lease", b"theirs", b"theirs")
    assert await second.replace_if("lease", b"mine", b"mine", ttl_s=5)
    assert not await second.delete_if("lease", b"theirs")
    assert await first.get("lease") == b"mine"
    assert await second.delete_if("lease", b"mine")
    assert await first.get("lease") is None
    assert not await first.replace_if("lease", b"mine", b"again")  # nothing to replace


RACE = textwrap.dedent(
    """
    import asyncio, sys
    from argentic.storage import SQLiteStore

    async def main() -> None:
        async with SQLiteStore(sys.argv[1]) as store:
            won = [i for i in range(200) if await store.add(f"k{i}", sys.argv[2].encode(), ttl_s=60)]
        print(",".join(map(str, won)))

    asyncio.run(main())
    """
)


def test_sqlite_add_is_atomic_across_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    racers = [
        subprocess.Popen([sys.executable, "-c", RACE, url, name], stdout=subprocess.PIPE, text=True)
        for name in ("a", "b", "c")
    ]
    won = [racer.communicate(timeout=120)[0].strip() for racer in racers]
    assert all(racer.returncode == 0 for racer in racers)
    keys = [int(k) for line in won for k in line.split(",") if k]
    assert sorted(keys) == list(range(200))  # every key added exactly once, by one of the three


async def test_sqlite_deletes_expired_rows_through_an_index(tmp_path: Path) -> None:
    """Expired rows leave the file as writes go on, found through an index (not by reading the
    whole table), also in a file made before the index existed."""
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as old:  # a file as an earlier version made it
        old.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL)")
        old.commit()
    async with SQLiteStore(f"sqlite:///{path}") as store:
        await store.set_many({f"brief{i}": b"x" for i in range(10)}, ttl_s=0.05)
        await store.set("kept", b"y")
        await asyncio.sleep(0.1)
        for at in range(0, PURGE_EVERY, 100):  # enough writes for a purge
            await store.set_many({f"k{i}": b"z" for i in range(at, at + 100)}, ttl_s=60)
        assert await store.get("kept") == b"y"
    with contextlib.closing(sqlite3.connect(path)) as db:
        left = db.execute("SELECT count(*) FROM kv WHERE key LIKE 'brief%'").fetchone()[0]
        plan = " ".join(str(row[-1]) for row in db.execute(f"EXPLAIN QUERY PLAN {PURGE}", (0.0,)))
    assert left == 0
    assert "USING INDEX kv_expiry" in plan or "USING COVERING INDEX kv_expiry" in plan, plan


async def test_sqlite_waits_for_another_writer_without_holding_the_loop(tmp_path: Path) -> None:
    """A write while another connection holds the file's write lock waits for it off the event
    loop, and lands once the lock is let go; reads go on meanwhile."""
    path = tmp_path / "held.db"
    busy_timeout_s = 6.0
    async with SQLiteStore(f"sqlite:///{path}", busy_timeout_s=busy_timeout_s) as store:
        await store.set("before", b"0")
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as holder:
            holder.execute("BEGIN IMMEDIATE")  # another process's writer, as far as the store knows
            holder.execute("INSERT INTO kv (key, value) VALUES ('theirs', x'01')")
            writing = asyncio.create_task(store.set("mine", b"1"))
            gaps = []
            for _ in range(30):  # with the lock held, the loop keeps turning
                before = time.monotonic()
                await asyncio.sleep(0.01)
                gaps.append(time.monotonic() - before)
            assert not writing.done()  # it waits for the lock (within its busy timeout)
            assert await asyncio.wait_for(store.get("before"), 1) == b"0"
            holder.execute("COMMIT")
        await asyncio.wait_for(writing, busy_timeout_s)
        assert await store.get_many(["mine", "theirs"]) == [b"1", b"\x01"]
    # A loop that waited for the lock would have stood still for the busy timeout.
    assert max(gaps) < busy_timeout_s / 2, max(gaps)


async def test_sqlite_copies_its_wal_into_the_file_as_writes_go_on(tmp_path: Path) -> None:
    """The WAL does not grow with every write: it is copied into the file as writes go on (off
    the loop), and written again from its start."""
    path = tmp_path / "busy.db"
    wal = Path(f"{path}-wal")
    sizes = []
    async with SQLiteStore(f"sqlite:///{path}") as store:
        for round_ in range(6):
            for at in range(0, PURGE_EVERY, 100):
                await store.set_many({f"r{round_}k{i}": bytes(1000) for i in range(at, at + 100)})
            await asyncio.sleep(0.3)  # the copy runs on the store's thread
            sizes.append((await asyncio.to_thread(wal.stat)).st_size)
        assert await store.get("r0k0") == bytes(1000)
    # Each round writes about 0.6 MB of pages to the WAL: kept, the WAL would grow by that each round.
    assert sizes[-1] < 2 * sizes[0], sizes


async def test_a_store_that_cannot_be_opened_names_its_url(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    url = f"sqlite:///{blocker / 'store.db'}"
    with pytest.raises(StorageUnavailableError, match=r"cannot be opened|failed") as caught:
        async with open_store(url):
            pass
    assert url in str(caught.value)
    with pytest.raises(ArgumentError, match="unknown store URL"):
        open_store("postgres://localhost/db")
    store = SQLiteStore(f"sqlite:///{tmp_path / 'closed.db'}")
    with pytest.raises(StorageUnavailableError, match="not open"):
        await store.get("k")


async def test_task_statuses_are_written_together_and_the_last_one_wins(
    store_pair: tuple[Store, Store],
) -> None:
    first, second = store_pair
    writer, reader = TaskRecords(first, flush_s=0.05), TaskRecords(second)
    await writer.put_status(TaskStatus(question_id="q1", state="submitted", role="r"))
    await writer.put_status(TaskStatus(question_id="q1", state="working", role="r"))
    await writer.put_status(TaskStatus(question_id="q2", state="working", role="r"))
    noted = await writer.get("q1")  # the writer knows at once
    assert noted is not None and noted.status.state == "working"
    await asyncio.sleep(0.5)  # ten times flush_s: written by then
    seen = await reader.get("q1")
    assert seen is not None and seen.status.state == "working" and seen.answer is None
    await writer.put_status(TaskStatus(question_id="q1", state="completed", role="r"))
    claim = Lease(first, "claim:q1", ttl_s=30)
    assert await claim.acquire()
    answer = Answer(question_id="q1", conversation_id="c1", text="done")
    await writer.finish("q1", answer, [Put("extra", b"x")], claim=claim)
    await asyncio.sleep(0.2)  # past any later flush
    done = await reader.get("q1")
    assert done is not None and done.status.state == "completed"
    assert done.answer is not None and done.answer.text == "done"
    assert await second.get("extra") == b"x"
    assert await second.get("claim:q1") is None  # let go with the answer's writing


async def test_a_task_kept_as_an_earlier_version_kept_it_is_read(store_pair: tuple[Store, Store]) -> None:
    """A task's status and answer under keys of their own (as earlier versions kept them) are read
    as one record."""
    store, _ = store_pair
    status = TaskStatus(question_id="old", state="completed", role="helper")
    answer = Answer(question_id="old", conversation_id="c", text="from before")
    await store.set("task:old:status", status.model_dump_json().encode())
    await store.set("task:old:answer", answer.model_dump_json().encode())
    record = await TaskRecords(store).get("old")
    assert record is not None and record.status == status and record.answer == answer


async def test_concurrent_batches_give_what_one_after_another_gives(store_pair: tuple[Store, Store]) -> None:
    """Batches sent at once (merged into few statements on SQLite, into one pipeline on Redis)
    have the outcomes they have when run one after another in memory: each key sees its steps in
    the order they were sent."""
    rng = random.Random(7)
    keys = [f"k{i}" for i in range(6)]
    values = [b"a", b"b", b"c"]

    def some_step() -> Step:
        key, value, other = rng.choice(keys), rng.choice(values), rng.choice(values)
        return rng.choice(
            [
                Get(key),
                Put(key, value),
                Add(key, value),
                ReplaceIf(key, other, value),
                DeleteIf(key, other),
                Delete(key),
            ]
        )

    batches = [tuple(some_step() for _ in range(rng.randint(1, 5))) for _ in range(300)]
    first, _ = store_pair
    got = await asyncio.gather(*(first.batch(*batch) for batch in batches))
    async with MemoryStore() as memory:
        expected = [await memory.batch(*batch) for batch in batches]
    assert got == expected
    assert await first.get_many(keys) == await memory.get_many(keys)
