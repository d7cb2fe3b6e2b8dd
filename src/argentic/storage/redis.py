"""The store on a Redis server (``redis://[:password@]host:port/db``), shared by every process
that reaches it: agents on many machines.

Keys get a prefix (``argentic:`` unless told) so one Redis can hold several deployments and other
data. Expiry is Redis's own (``SET ... PX``); ``add`` is ``SET NX``, and the two compare steps are
small Lua scripts, which Redis runs atomically. Every Redis failure (unreachable, refused
password, out of memory) is raised as :class:`~argentic.errors.StorageUnavailableError` naming the
URL, with its password shown as ``***``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Mapping, Sequence
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript

from argentic.errors import ArgumentError, StorageUnavailableError, UsageError
from argentic.storage.base import Store

T = TypeVar("T")

# GET then SET in one script: Redis runs a script without interleaving other commands.
_REPLACE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[3] == '' then
    redis.call('SET', KEYS[1], ARGV[2])
  else
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  end
  return 1
end
return 0
"""

_DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


def mask_url(url: str) -> str:
    """``url`` with its password (in the address or a ``password=`` parameter) shown as ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(name == "password" for name, _ in pairs):
            masked = [(name, "***" if name == "password" else value) for name, value in pairs]
            query = urlencode(masked, safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _secrets(url: str) -> list[str]:
    """The passwords ``url`` carries, to keep them out of messages."""
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
    except ValueError:
        return []
    found += [value for name, value in parse_qsl(parts.query) if name == "password"]
    return [secret for secret in found if secret]


def _px(ttl_s: float | None) -> int | None:
    """``ttl_s`` in whole milliseconds, at least 1 (Redis refuses PX 0); None: no expiry."""
    if ttl_s is None:
        return None
    if not math.isfinite(ttl_s):
        raise ArgumentError(f"ttl_s must be a finite number of seconds or None, not {ttl_s!r}")
    return max(1, math.ceil(ttl_s * 1000))


class RedisStore(Store):
    """A :class:`~argentic.storage.base.Store` on Redis: ``async with RedisStore(url) as store:``.

    ``connect_timeout_s`` bounds the connection and the first PING, and also each later reply, so
    no call waits on a silent server for long.
    """

    def __init__(self, url: str, *, prefix: str = "argentic:", connect_timeout_s: float = 5.0) -> None:
        if connect_timeout_s <= 0:
            raise ArgumentError(f"connect_timeout_s must be positive, not {connect_timeout_s!r}")
        self._raw_url = url
        self.url = mask_url(url)
        self.prefix = prefix
        self.connect_timeout_s = connect_timeout_s
        self._client: aioredis.Redis | None = None
        self._replace_if: AsyncScript | None = None
        self._delete_if: AsyncScript | None = None

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, prefix={self.prefix!r})"

    async def start(self) -> None:
        if self._client is not None:
            return
        try:
            client = aioredis.Redis.from_url(
                self._raw_url,
                socket_connect_timeout=self.connect_timeout_s,
                socket_timeout=self.connect_timeout_s,
                # A dropped connection is retried a little, quickly (the default waits seconds).
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2),
            )
        except ValueError as exc:
            raise StorageUnavailableError(
                f"Redis store {self.url}: the URL is not usable ({exc}); "
                "write it as redis://[:password@]host:port/db"
            ) from None
        self._client = client
        self._replace_if = client.register_script(_REPLACE_IF)
        self._delete_if = client.register_script(_DELETE_IF)
        try:
            await self._ping(client)
        except BaseException:
            # A later start() must try again, not find a client and take it as started.
            await self.stop()
            raise

    async def _ping(self, client: aioredis.Redis) -> None:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await client.ping()
        except TimeoutError:
            raise StorageUnavailableError(
                f"Redis store {self.url}: no answer to PING within {self.connect_timeout_s}s; "
                "check that redis-server runs there and is reachable, or raise connect_timeout_s"
            ) from None
        except rexc.RedisError as exc:
            raise self._error(exc) from None

    async def stop(self) -> None:
        client, self._client = self._client, None
        self._replace_if = self._delete_if = None
        if client is not None:
            await client.aclose()

    def _error(self, exc: BaseException) -> StorageUnavailableError:
        """``exc`` (a redis-py error) as a StorageUnavailableError that names the URL and what to do."""
        detail = str(exc) or type(exc).__name__
        for secret in _secrets(self._raw_url):
            detail = detail.replace(secret, "***")
        if isinstance(exc, rexc.AuthenticationError) or (
            isinstance(exc, rexc.ResponseError) and detail.startswith(("NOAUTH", "WRONGPASS"))
        ):
            what = (
                f"authentication failed ({detail}); put the server's password in the URL "
                "(redis://:PASSWORD@host:port/db)"
            )
        elif isinstance(exc, rexc.OutOfMemoryError):
            what = (
                f"the server is out of memory and refuses writes ({detail}); raise its maxmemory, "
                "set a maxmemory-policy that evicts, or free space"
            )
        elif isinstance(exc, rexc.NoPermissionError):
            what = f"the Redis user may not run this command ({detail}); grant it in the server's ACL"
        elif isinstance(exc, rexc.TimeoutError):
            what = f"the server did not answer in time ({detail}); check that it runs and is reachable"
        elif isinstance(exc, rexc.ConnectionError):
            what = f"cannot connect ({detail}); start redis-server there or correct the URL"
        else:
            what = f"the server refused the command ({detail})"
        return StorageUnavailableError(f"Redis store {self.url}: {what}")

    def _running(self) -> aioredis.Redis:
        if self._client is None:
            raise UsageError(f"{self!r} is not started; use it inside `async with store:`")
        return self._client

    def _script(self, script: AsyncScript | None) -> AsyncScript:
        if script is None:
            raise UsageError(f"{self!r} is not started; use it inside `async with store:`")
        return script

    async def _call(self, op: Awaitable[T]) -> T:
        try:
            return await op
        except rexc.RedisError as exc:
            raise self._error(exc) from None

    async def get(self, key: str) -> bytes | None:
        value = await self._call(self._running().get(self.prefix + key))
        return None if value is None else bytes(value)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        values = await self._call(self._running().mget([self.prefix + key for key in keys]))
        return [None if value is None else bytes(value) for value in values]

    async def set_many(self, items: Mapping[str, bytes], ttl_s: float | None = None) -> None:
        px = _px(ttl_s)
        pipe = self._running().pipeline(transaction=False)
        for key, value in items.items():
            pipe.set(self.prefix + key, value, px=px)
        await self._call(pipe.execute())

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        px = _px(ttl_s)
        await self._call(self._running().set(self.prefix + key, value, px=px))

    async def add(self, key: str, value: bytes, ttl_s: float | None = None) -> bool:
        px = _px(ttl_s)
        written = await self._call(self._running().set(self.prefix + key, value, px=px, nx=True))
        return bool(written)

    async def add_then_get_many(
        self, key: str, value: bytes, ttl_s: float | None, keys: Sequence[str]
    ) -> tuple[bool, list[bytes | None]]:
        # One round trip; the commands of a pipeline run in order, so the reads follow the add.
        pipe = self._running().pipeline(transaction=False)
        pipe.set(self.prefix + key, value, px=_px(ttl_s), nx=True)
        for item in keys:
            pipe.get(self.prefix + item)
        written, *values = await self._call(pipe.execute())
        return bool(written), [None if v is None else bytes(v) for v in values]

    async def replace_if(self, key: str, expected: bytes, value: bytes, ttl_s: float | None = None) -> bool:
        px = _px(ttl_s)
        args = [expected, value, b"" if px is None else str(px).encode()]
        done = await self._call(self._script(self._replace_if)(keys=[self.prefix + key], args=args))
        return bool(done)

    async def delete_if(self, key: str, expected: bytes) -> bool:
        done = await self._call(self._script(self._delete_if)(keys=[self.prefix + key], args=[expected]))
        return bool(done)

    async def delete(self, key: str) -> None:
        await self._call(self._running().delete(self.prefix + key))
