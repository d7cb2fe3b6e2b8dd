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
