"""Several model servers behind one endpoint: health, a circuit breaker, routing and failover.

Every request of :class:`~argentic.llm.openai_provider.OpenAICompatibleProvider` goes through a
:class:`ServerPool` (of one server when the endpoint has one URL).

- **Health.** Each server's state comes from our own calls (a failure takes it out at once), from
  its ``/metrics`` (requests running and waiting, KV-cache use; read every ``health_interval_s``)
  and, while it is out, from probes of ``/health`` and ``/v1/models`` until it answers again.
  Failures are: no connection, no progress within the timeout, 408/429/5xx, a stream cut off
  before its end, and a 200 whose body is not the API's (a proxy's HTML page).
- **Routing.** A request's affinity key (its system prompt and tools: what the agents of one role
  share) picks a server by rendezvous hashing over the healthy ones, so a role's prefix stays warm in
  one server's cache and only the keys of a server that leaves move. When that server carries more
  than ``overflow`` requests beyond the least loaded one, the request goes there instead.
- **Failover.** A request whose server fails before answering goes to another. A streamed answer
  whose server fails after some text continues on another from the prompt plus the text already
  sent (vLLM continues a final assistant message), so the stream goes on with no gap and no repeat;
  a stream of tool calls or of a constrained answer is started again instead (the provider shows
  none of it twice). Only model requests are retried here: tools are never run by a failover.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import openai

from argentic.errors import LLMError, LLMRequestError, LLMTimeoutError, LLMUnavailableError, NotTheAPIError
from argentic.llm.endpoint import RETRY_STATUS, Endpoint, prometheus_samples
from argentic.llm.types import ChatRequest

log = logging.getLogger(__name__)

T = TypeVar("T")

#: What a pool stream yields before the chunks of an answer started again from scratch.
RESTART: Final = object()


def is_server_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says the server, not the request, failed: worth another server."""
    if isinstance(exc, LLMRequestError):
        return exc.status_code in RETRY_STATUS
    if isinstance(exc, LLMUnavailableError | LLMTimeoutError | TimeoutError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRY_STATUS
    return isinstance(exc, openai.APIConnectionError | OSError) or _transport_error(exc)


def _transport_error(exc: BaseException) -> bool:
    """An HTTP transport error the SDK lets through unwrapped (a stream cut off mid-body); matched by
    name, as the SDK's HTTP library changes its package name between releases (httpx, httpx2)."""
    return any(
        cls.__name__ in ("TransportError", "StreamError") and cls.__module__.startswith("httpx")
        for cls in type(exc).__mro__
    )


def affinity_key(request: ChatRequest) -> str:
    """What requests sharing a prompt prefix have in common: the system prompt and the tools (the
    agents of one role), else the first message (one conversation)."""
    system = [m.text for m in request.messages if m.role == "system"]
    tools = [(t.name, t.description, t.parameters) for t in request.tools]
    if not system and not tools and request.messages:
        system = [request.messages[0].text]
    data = json.dumps([system, tools], sort_keys=True, default=str)
    return hashlib.blake2b(data.encode(), digest_size=16).hexdigest()


def _score(key: str, url: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{key}|{url}".encode(), digest_size=8).digest(), "big")


@dataclass
class Server:
    """One server of a pool and what is known about it."""

    endpoint: Endpoint
    up: bool = True
    in_flight: int = 0
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    metrics_at: float = 0.0
    last_error: str = ""
    requests: int = 0
    failures: int = 0

    @property
    def url(self) -> str:
        return self.endpoint.base_url

    def load(self, fresh_s: float) -> float:
        """Requests it carries: ours, or what its ``/metrics`` counted when that is recent (and more)."""
        load = float(self.in_flight)
        if self.running is not None and time.monotonic() - self.metrics_at <= fresh_s:
            load = max(load, self.running + (self.waiting or 0.0))
        return load


class ServerPool:
    """The servers of one endpoint (see the module's description). An async context manager; the
    monitor of health and metrics starts with the first request when there are several servers."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        overflow: int = 4,
        health_interval_s: float = 2.0,
        rounds: int | None = None,
    ) -> None:
        if not endpoints:
            raise LLMError("a server pool needs at least one server")
        self.servers = [Server(e) for e in endpoints]
        self.overflow = overflow
        self.health_interval_s = health_interval_s
        # With one server its endpoint retries; with several the pool does, over the others.
        first = endpoints[0]
        self.rounds = rounds if rounds is not None else (0 if len(endpoints) == 1 else first.max_retries)
        self._monitor: asyncio.Task[None] | None = None

    @property
    def multi(self) -> bool:
        return len(self.servers) > 1

    # -- state ------------------------------------------------------------------------------

    def failed(self, server: Server, exc: BaseException) -> None:
        """Take ``server`` out after a failure of ours on it (warned once per outage)."""
        server.failures += 1
        server.last_error = str(exc) or type(exc).__name__
        if server.up and self.multi:
            log.warning(
                "model server %s taken out of the pool: %s; probing it until it answers",
                server.url,
                server.last_error[:300],
            )
        server.up = False
        self._ensure_monitor()

    def succeeded(self, server: Server) -> None:
        server.requests += 1
        if not server.up:
            self._back(server)

    def _back(self, server: Server) -> None:
        server.up = True
        if self.multi:
            log.warning("model server %s answers again: back in the pool", server.url)

    def choose(self, key: str, tried: Collection[int] = ()) -> Server | None:
        """The server for ``key`` among those not ``tried`` (by index): the healthy one rendezvous
        hashing ranks first, or the least loaded when that one carries more than ``overflow``
        beyond it; a server that is out only when no healthy one is left."""
        self._ensure_monitor()
        left = [s for i, s in enumerate(self.servers) if i not in tried]
        if not left:
            return None
        healthy = [s for s in left if s.up] or left
        chosen = max(healthy, key=lambda s: _score(key, s.url))
        fresh = 2 * self.health_interval_s
        least = min(healthy, key=lambda s: (s.load(fresh), -_score(key, s.url)))
        if chosen.load(fresh) - least.load(fresh) > self.overflow:
            chosen = least
        return chosen

    # -- requests ---------------------------------------------------------------------------

    async def _next(self, key: str, tried: set[int], round_: list[int], last: BaseException | None) -> Server:
        """The next server to try, after a pause between rounds; raises ``last`` when none is left."""
        server = self.choose(key, tried)
        if server is None:
            if round_[0] >= self.rounds:
                assert last is not None
                raise last
            delay = self.servers[0].endpoint.backoff(round_[0])
            round_[0] += 1
            tried.clear()
            await asyncio.sleep(delay)
            server = self.choose(key, tried)
            assert server is not None
        tried.add(self.servers.index(server))
        return server

    async def run(self, key: str, call: Callable[[Server], Awaitable[T]]) -> T:
        """``call(server)`` on the server for ``key``, then on others while servers fail."""
        tried: set[int] = set()
        round_ = [0]
        last: BaseException | None = None
        while True:
            server = await self._next(key, tried, round_, last)
            server.in_flight += 1
            try:
                result = await call(server)
            except Exception as exc:
                if not is_server_failure(exc):
                    raise
                self.failed(server, exc)
                last = exc
                continue
            finally:
                server.in_flight -= 1
            self.succeeded(server)
            return result

    async def stream(
        self,
        key: str,
        body: dict[str, Any],
        *,
        what: str,
        tools_sent: bool = False,
        continuable: bool = True,
    ) -> AsyncGenerator[Any, None]:
        """The chunks of the streamed completion ``body`` asks for, carried over server failures:
        a text answer cut off goes on from where it stopped (``continuable``: a vLLM server and an
        unconstrained answer), anything else starts again after :data:`RESTART`."""
        tried: set[int] = set()
        round_ = [0]
        last: BaseException | None = None
        current = body
        text: list[str] = []
        produced = 0  # chunks of text so far: about one token each
        calls_seen = False
        resumed = 0  # times a lone server's cut-off stream was asked again (its endpoint's retries)
        while True:
            server = await self._next(key, tried, round_, last)
            server.in_flight += 1
            finished = started = False
            chunks = server.endpoint.chunks(current, what=what, tools_sent=tools_sent)
            try:
                async for chunk in chunks:
                    started = True
                    for choice in chunk.choices or ():
                        if choice.index != 0:
                            continue
                        delta = choice.delta
                        if delta is not None and delta.tool_calls:
                            calls_seen = True
                        if delta is not None and delta.content:
                            text.append(delta.content)
                            produced += 1
                        if choice.finish_reason:
                            finished = True
                    yield chunk
                if not finished:
                    raise NotTheAPIError(f"{what}: the stream from {server.url} ended before the answer did")
            except Exception as exc:
                if not is_server_failure(exc):
                    raise
                self.failed(server, exc)
                last = exc
                cut = not isinstance(exc, TimeoutError)  # a stall would stall again
                if not self.multi and started and cut and resumed < server.endpoint.max_retries:
                    # One URL (a router in front, say): a cut stream is asked again, which may
                    # reach another server behind it.
                    resumed += 1
                    tried.clear()
                    await asyncio.sleep(server.endpoint.backoff(resumed - 1))
                if calls_seen or not continuable:
                    yield RESTART
                    current, text, produced, calls_seen = body, [], 0, False
                elif text:
                    current = continuation(body, "".join(text), produced)
                continue
            finally:
                server.in_flight -= 1
                await chunks.aclose()
            self.succeeded(server)
            return

    # -- monitor ----------------------------------------------------------------------------

    def _ensure_monitor(self) -> None:
        if not self.multi or (self._monitor is not None and not self._monitor.done()):
            return
        try:
            self._monitor = asyncio.get_running_loop().create_task(self._watch())
        except RuntimeError:  # no loop: the next request starts it
            self._monitor = None

    async def _watch(self) -> None:
        """Read the metrics of the servers that are in, probe those that are out."""
        while True:
            looks = await asyncio.gather(*(self._look(s) for s in self.servers), return_exceptions=True)
            for server, outcome in zip(self.servers, looks, strict=True):
                if isinstance(outcome, Exception):  # a look that failed oddly: the next one retries
                    log.debug("looking at %s failed: %r", server.url, outcome)
            await asyncio.sleep(self.health_interval_s)

    async def _look(self, server: Server) -> None:
        timeout = max(1.0, min(5.0, server.endpoint.timeout_s))
        if not server.up:
            if await self.probe(server, timeout):
                self._back(server)
            return
        if not server.endpoint.vllm:
            return
        try:
            async with asyncio.timeout(timeout):
                text = await server.endpoint.client.get(server.endpoint.root + "/metrics", cast_to=str)
        except openai.APIConnectionError as exc:
            if not isinstance(exc, openai.APITimeoutError):  # a busy server may be slow to say so
                self.failed(server, exc)
            return
        except (TimeoutError, openai.APIError):
            return
        read_metrics(server, text)

    async def probe(self, server: Server, timeout: float) -> bool:  # noqa: ASYNC109
        """Whether ``server`` answers as the API does again: ``/health`` (vLLM) and ``/v1/models``."""
        endpoint = server.endpoint
        try:
            async with asyncio.timeout(timeout):
                if endpoint.vllm:
                    await endpoint.client.get(endpoint.root + "/health", cast_to=str)
                page = await endpoint.client.get(endpoint.base_url + "/models", cast_to=object)
        except (TimeoutError, openai.APIError, OSError):
            return False
        except Exception as exc:
            if _transport_error(exc):
                return False
            raise
        return isinstance(page, dict) and isinstance(page.get("data"), list)

    def status(self) -> list[dict[str, Any]]:
        """What the pool knows of each server."""
        return [
            {
                "url": s.url,
                "up": s.up,
                "in_flight": s.in_flight,
                "running": s.running,
                "waiting": s.waiting,
                "kv_cache_usage": s.kv_cache_usage,
                "requests": s.requests,
                "failures": s.failures,
                "last_error": s.last_error,
            }
            for s in self.servers
        ]

    async def close(self) -> None:
        task, self._monitor = self._monitor, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for server in self.servers:
            await server.endpoint.close()

    async def __aenter__(self) -> ServerPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def read_metrics(server: Server, text: str) -> None:
    """Running and waiting requests and KV-cache use from a vLLM ``/metrics`` text."""
    sums: dict[str, float] = {}
    for name, value in prometheus_samples(text).items():
        base = name.split("{", 1)[0]
        sums[base] = sums.get(base, 0.0) + value
    if "vllm:num_requests_running" not in sums:
        return
    server.running = sums["vllm:num_requests_running"]
    server.waiting = sums.get("vllm:num_requests_waiting", 0.0)
    kv = sums.get("vllm:kv_cache_usage_perc", sums.get("vllm:gpu_cache_usage_perc"))
    server.kv_cache_usage = kv
    server.metrics_at = time.monotonic()


def continuation(body: dict[str, Any], text: str, produced: int) -> dict[str, Any]:
    """``body`` asking to go on from ``text``, the part of the answer already sent: the prompt plus
    an assistant message with that text, which vLLM continues (no new turn is opened)."""
    messages = [*body["messages"], {"role": "assistant", "content": text}]
    extra = {**body.get("extra_body", {}), "continue_final_message": True, "add_generation_prompt": False}
    result = {**body, "messages": messages, "extra_body": extra}
    if isinstance(body.get("max_tokens"), int):
        result["max_tokens"] = max(1, body["max_tokens"] - produced)
    if isinstance(extra.get("min_tokens"), int):  # vLLM refuses a min_tokens above max_tokens
        extra["min_tokens"] = max(0, extra["min_tokens"] - produced)
    return result
