"""RedisStore against a real redis-server on loopback."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest

from argentic.errors import StorageUnavailableError
from argentic.netutil import free_port
from argentic.storage.redis import RedisStore, mask_url
from argentic.testing.redis_server import RedisServer

PASSWORD = "s3cret-pa55"


@pytest.fixture
def prefix() -> str:
    """A key prefix unique to the test, so tests sharing the server never see each other's keys."""
    return f"t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def password_redis() -> Iterator[RedisServer]:
    with RedisServer(password=PASSWORD) as server:
        yield server


@pytest.fixture
def tiny_redis() -> Iterator[RedisServer]:
    with RedisServer(maxmemory="2mb", maxmemory_policy="noeviction") as server:
        yield server


async def test_get_set_round_trip(redis_server: RedisServer, prefix: str) -> None:
    async with RedisStore(redis_server.url, prefix=prefix) as store:
        assert await store.get("k") is None
        await store.set("k", b"\x00value\xff")
        assert await store.get("k") == b"\x00value\xff"
        await store.set("k", b"other")
        assert await store.get("k") == b"other"
        await store.delete("k")
        assert await store.get("k") is None
        await store.delete("k")  # deleting nothing is fine


async def test_ttl_expires(redis_server: RedisServer, prefix: str) -> None:
    async with RedisStore(redis_server.url, prefix=prefix) as store:
        await store.set("short", b"v", ttl_s=0.2)
        await store.set("kept", b"v")
        # Poll until gone (the predicate is async, so wait_until's sync one does not fit).
        deadline = time.monotonic() + 15
        while await store.get("short") is not None:
            assert time.monotonic() < deadline, "a key with ttl 0.2 s never expired"
            await asyncio.sleep(0.02)
        assert await store.get("kept") == b"v"
        # Once expired, add may write it again.
        assert await store.add("short", b"again", ttl_s=60)
        assert await store.get("short") == b"again"


async def test_add_is_atomic_across_clients(redis_server: RedisServer, prefix: str) -> None:
    async with (
        RedisStore(redis_server.url, prefix=prefix) as one,
        RedisStore(redis_server.url, prefix=prefix) as two,
    ):
        stores = [one, two]
        results = await asyncio.gather(
            *(stores[i % 2].add("once", f"writer-{i}".encode(), ttl_s=60) for i in range(20))
        )
        assert results.count(True) == 1
        winner = results.index(True)
        assert await one.get("once") == f"writer-{winner}".encode()
        assert await two.get("once") == f"writer-{winner}".encode()


async def test_replace_if_only_with_expected_value(redis_server: RedisServer, prefix: str) -> None:
    async with RedisStore(redis_server.url, prefix=prefix) as store:
        assert not await store.replace_if("lease", b"me", b"me")  # no value yet
        assert await store.get("lease") is None
        await store.set("lease", b"me")
        assert not await store.replace_if("lease", b"you", b"you")
        assert await store.get("lease") == b"me"
        assert await store.replace_if("lease", b"me", b"me-renewed", ttl_s=0.2)
        assert await store.get("lease") == b"me-renewed"
        # The renewal set the new expiry.
        deadline = time.monotonic() + 15
        while await store.get("lease") is not None:
            assert time.monotonic() < deadline, "the replaced key never expired"
            await asyncio.sleep(0.02)
        await store.set("lease", b"a", ttl_s=0.2)
        assert await store.replace_if("lease", b"a", b"b")  # no ttl: never expires
        await asyncio.sleep(0.3)
        assert await store.get("lease") == b"b"


async def test_delete_if_only_with_expected_value(redis_server: RedisServer, prefix: str) -> None:
    async with RedisStore(redis_server.url, prefix=prefix) as store:
        assert not await store.delete_if("lease", b"me")
        await store.set("lease", b"me")
        assert not await store.delete_if("lease", b"you")
        assert await store.get("lease") == b"me"
        assert await store.delete_if("lease", b"me")
        assert await store.get("lease") is None


async def test_prefixes_isolate(redis_server: RedisServer, prefix: str) -> None:
    async with (
        RedisStore(redis_server.url, prefix=prefix + "a:") as a,
        RedisStore(redis_server.url, prefix=prefix + "b:") as b,
    ):
        await a.set("k", b"from-a")
        assert await b.get("k") is None
        assert await b.add("k", b"from-b")
        assert await a.get("k") == b"from-a"
        assert await b.get("k") == b"from-b"
        await b.delete("k")
        assert await a.get("k") == b"from-a"


async def test_unreachable_server_names_the_url() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    store = RedisStore(url, connect_timeout_s=2)
    with pytest.raises(StorageUnavailableError) as caught:
        async with store:
            pass
    message = str(caught.value)
    assert url in message
    assert "redis-server" in message
    # A failed start leaves nothing behind: starting again tries again (and fails again).
    with pytest.raises(StorageUnavailableError):
        await store.start()


@pytest.mark.parametrize("given", [None, "wrong-password"])
async def test_refused_authentication_masks_the_password(
    password_redis: RedisServer, given: str | None
) -> None:
    auth = f":{given}@" if given else ""
    url = f"redis://{auth}127.0.0.1:{password_redis.port}/0"
    with pytest.raises(StorageUnavailableError) as caught:
        async with RedisStore(url, connect_timeout_s=2):
            pass
    message = str(caught.value)
    assert "authentication failed" in message
    assert mask_url(url) in message
    assert PASSWORD not in message
    if given:
        assert given not in message
        assert ":***@" in message
    # With the right password it works, and the password is shown as *** in the store's url.
    async with RedisStore(password_redis.url) as store:
        assert PASSWORD not in store.url
        assert f"redis://:***@127.0.0.1:{password_redis.port}/0" == store.url
        await store.set("k", b"v")
        assert await store.get("k") == b"v"


async def test_out_of_memory_is_unavailable(tiny_redis: RedisServer) -> None:
    big = b"x" * 512 * 1024
    async with RedisStore(tiny_redis.url) as store:
        with pytest.raises(StorageUnavailableError) as caught:
            for i in range(40):  # 20 MB at most: well past the 2 MB limit
                await store.set(f"big-{i}", big)
    message = str(caught.value)
    assert tiny_redis.url in message
    assert "memory" in message


async def test_concurrent_commands_each_get_their_own_reply(redis_server: RedisServer, prefix: str) -> None:
    """Commands of many tasks share pipelines; each caller still gets its own reply, in order."""
    async with RedisStore(redis_server.url, prefix=prefix) as store:
        await asyncio.gather(*(store.set(f"k{i}", str(i).encode()) for i in range(200)))
        values, added, many = await asyncio.gather(
            asyncio.gather(*(store.get(f"k{i}") for i in range(200))),
            asyncio.gather(*(store.add(f"k{i}", b"again") for i in range(0, 200, 2))),
            store.get_many([f"k{i}" for i in range(199, -1, -1)]),
        )
        assert values == [str(i).encode() for i in range(200)]
        assert added == [False] * 100  # every key was there
        assert many == [str(i).encode() for i in range(199, -1, -1)]
        replaced = await asyncio.gather(
            *(store.replace_if(f"k{i}", str(i).encode(), b"new") for i in range(100)),
            *(store.replace_if(f"k{i}", b"not-its-value", b"new") for i in range(100, 200)),
        )
        assert replaced == [True] * 100 + [False] * 100


async def test_a_refused_command_fails_only_its_caller(tiny_redis: RedisServer) -> None:
    """Out of memory refuses writes, not reads: in one pipeline, the writer gets the error and
    the readers their values."""
    big = b"x" * 512 * 1024
    async with RedisStore(tiny_redis.url) as store:
        await store.set("small", b"v")
        outcomes = await asyncio.gather(
            *(store.set(f"big-{i}", big) for i in range(40)),
            *(store.get("small") for _ in range(10)),
            return_exceptions=True,
        )
    refused = [o for o in outcomes[:40] if isinstance(o, StorageUnavailableError)]
    assert refused and all("memory" in str(error) for error in refused)
    assert outcomes[40:] == [b"v"] * 10


async def test_commands_in_flight_when_the_server_dies_fail_clearly(prefix: str) -> None:
    with RedisServer() as server:
        async with RedisStore(server.url, prefix=prefix, connect_timeout_s=2) as store:
            await store.set("k", b"v")
            await asyncio.to_thread(server.stop, kill=True)
            outcomes = await asyncio.gather(*(store.get("k") for _ in range(20)), return_exceptions=True)
            assert all(isinstance(o, StorageUnavailableError) for o in outcomes), outcomes
            assert all(server.url in str(o) for o in outcomes)
            # The server back on its port: the same store works again.
            await asyncio.to_thread(server.start)
            await store.set("k", b"back")
            assert await store.get("k") == b"back"
