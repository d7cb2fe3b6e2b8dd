"""The store on a Redis server (``redis://[:password@]host:port/db``), shared by every process
that reaches it: agents on many machines.

Keys get a prefix (``argentic:`` unless told) so one Redis can hold several deployments and other
data. Expiry is Redis's own (``SET ... PX``); ``add`` is ``SET NX``. A batch of reads is one
``MGET``; any other batch is one small Lua script (``EVAL``) that runs its steps, which Redis
runs atomically, so the compare steps compare and write with nothing in between. Every Redis
failure (unreachable, refused password, out of memory) is raised as
:class:`~argentic.errors.StorageUnavailableError` naming the URL, with its password shown as
``***``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import hiredis
import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from argentic.errors import ArgumentError, StorageUnavailableError, UsageError
from argentic.storage.base import Add, Delete, DeleteIf, Get, Put, ReplaceIf, Step, Store

# A batch of steps in one script: one command to pack and one reply to parse whatever the number of
# steps (redis-py's per-command work is what a turn's store time is made of), and Redis runs it
# without interleaving other commands. KEYS holds each step's key; ARGV each step's kind, then its
# arguments: g (get), x (delete), d (delete if: expected), p and a (put and add: value, PX or ''),
# r (replace if: expected, value, PX or '').
_BATCH = """
local out = {}
local at = 1
local function set(key, value, px, nx)
  local args = {key, value}
  if px ~= '' then args[#args + 1] = 'PX'; args[#args + 1] = px end
  if nx then args[#args + 1] = 'NX' end
  if redis.call('SET', unpack(args)) then return 1 end
  return 0
end
for i, key in ipairs(KEYS) do
  local kind = ARGV[at]
  if kind == 'g' then
    out[i] = redis.call('GET', key)
    at = at + 1
  elseif kind == 'x' then
    redis.call('DEL', key)
    out[i] = 0
    at = at + 1
  elseif kind == 'd' then
    out[i] = 0
    if redis.call('GET', key) == ARGV[at + 1] then
      redis.call('DEL', key)
      out[i] = 1
    end
    at = at + 2
  elseif kind == 'p' or kind == 'a' then
    out[i] = set(key, ARGV[at + 1], ARGV[at + 2], kind == 'a')
    at = at + 3
  elseif kind == 'r' then
    out[i] = 0
    if redis.call('GET', key) == ARGV[at + 1] then
      out[i] = set(key, ARGV[at + 2], ARGV[at + 3], false)
    end
    at = at + 4
  else
    return redis.error_reply('argentic batch: unknown step ' .. tostring(kind))
  end
end
return out
"""


#: A command (a tuple of its words) and the future its reply goes to.
_Queued = tuple[tuple[object, ...], "asyncio.Future[object]"]


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
        self._queue: list[_Queued] = []
        self._queued = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._sending: list[_Queued] = []

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
        try:
            await self._ping(client)
            self._sender = asyncio.create_task(self._send_queued(), name=f"redis store {self.url}")
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
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        queue, self._queue, self._sending = [*self._sending, *self._queue], [], []
        for _, future in queue:
            if not future.done():
                future.set_exception(StorageUnavailableError(f"Redis store {self.url}: the store stopped"))
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

    async def _command(self, *words: object) -> object:
        """The reply to a command, sent with every other command issued meanwhile (by any task) in
        one pipeline: under load, turns of many conversations share each round trip."""
        self._running()
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._queue.append((words, future))
        self._queued.set()
        return await future

    async def _send_queued(self) -> None:
        """Sends what is queued, one pipeline at a time (what queues while one is on its way goes
        in the next), until the store stops."""
        while True:
            await self._queued.wait()
            self._queued.clear()
            batch, self._queue = self._queue, []
            self._sending = [(words, future) for words, future in batch if not future.done()]
            if self._sending:
                await self._send(self._sending)
            self._sending = []

    async def _send(self, batch: list[_Queued]) -> None:
        try:
            replies = await self._pipeline([words for words, _ in batch])
        except Exception as exc:
            # Every caller in the batch gets the failure (a lost connection, a timeout).
            error = self._error(exc) if isinstance(exc, rexc.RedisError) else exc
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, rexc.RedisError):
                future.set_exception(self._error(reply))
            else:
                future.set_result(reply)

    async def _pipeline(self, commands: list[tuple[object, ...]]) -> list[object]:
        """The replies to ``commands``, sent in one write on a connection of the client's pool
        (a reply that is an error is returned as the error). The commands are packed by hiredis:
        redis-py's own pipeline packs in Python, which cost more than the rest of a turn's store
        time."""
        pool = self._running().connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]  # reconnected if closed
        try:
            await connection.send_packed_command(
                b"".join(hiredis.pack_command(words) for words in commands),  # type: ignore[arg-type]
                check_health=False,
            )
            replies: list[object] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except rexc.ResponseError as refused:  # this command's: the others' replies follow
                    replies.append(refused)
            return replies
        finally:
            await pool.release(connection)

    async def batch(self, *steps: Step) -> list[Any]:
        if not steps:
            return []
        keys = [self.prefix + step.key for step in steps]
        if all(isinstance(step, Get) for step in steps):
            return await self._command("MGET", *keys)  # type: ignore[return-value]
        args: list[object] = []
        for step in steps:
            args.extend(_script_args(step))
        # EVAL, not EVALSHA: a server that lost its scripts (restarted) would refuse EVALSHA after
        # later commands of the same pipeline ran, and sending it again would reorder the steps.
        replies = await self._command("EVAL", _BATCH, len(keys), *keys, *args)
        assert isinstance(replies, list)
        return [_outcome(step, reply) for step, reply in zip(steps, replies, strict=True)]


def _outcome(step: Step, reply: object) -> object:
    """A step's outcome from the script's reply for it: the value read, or 1 or 0."""
    if isinstance(step, Get):
        return reply
    if isinstance(step, Add | ReplaceIf | DeleteIf):
        return bool(reply)
    return None


def _script_args(step: Step) -> tuple[object, ...]:
    """A step's kind and arguments, as the batch script reads them from ARGV."""
    match step:
        case Get():
            return (b"g",)
        case Delete():
            return (b"x",)
        case DeleteIf(_, expected):
            return (b"d", expected)
        case Put(_, value, ttl_s):
            return (b"p", value, _px_arg(ttl_s))
        case Add(_, value, ttl_s):
            return (b"a", value, _px_arg(ttl_s))
        case ReplaceIf(_, expected, value, ttl_s):
            return (b"r", expected, value, _px_arg(ttl_s))


def _px_arg(ttl_s: float | None) -> bytes:
    px = _px(ttl_s)
    return b"" if px is None else str(px).encode()
