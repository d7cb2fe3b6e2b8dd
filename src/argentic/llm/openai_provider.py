"""The provider for vLLM's OpenAI-compatible server (``vllm``) and any OpenAI-compatible one (``openai``).

vLLM specifics: the model name is discovered from ``/v1/models`` when not configured; structured
output goes as ``response_format`` json_schema (vLLM's structured outputs; the removed
``guided_json`` is never sent), and never together with ``tools``; tool schemas are strict; a
demanded tool call ("required" or a named tool) is written under vLLM's structured outputs, with
the server's own way as the fallback for a server that refuses them; tool calls the model wrote as
text are recovered; LoRA adapters are chosen by model name
(``with_overrides(model="adapter")``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai
from openai.types.chat import ChatCompletion

from argentic.config import LLMConfig
from argentic.errors import LLMError, LLMRequestError, LLMUnavailableError, NotTheAPIError
from argentic.llm.base import LLMProvider, Overrides
from argentic.llm.endpoint import Endpoint, normalize_base_url, prometheus_samples
from argentic.llm.pool import RESTART, Server, ServerPool, affinity_key
from argentic.llm.profiles import profile_for
from argentic.llm.types import (
    ChatRequest,
    ChatResponse,
    SamplingSettings,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
)
from argentic.llm.wire import (
    Guided,
    StreamAssembler,
    check_media_limits,
    forces_call,
    guided_calls_schema,
    message_to_wire,
    response_format_for,
    response_from_completion,
    tagged_calls_tag,
    tool_choice_to_wire,
    tool_to_wire,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Words of a server's 400 that refuses guided calls (structured outputs, or the structural tag).
REFUSAL_WORDS = ("structured_outputs", "structured output", "structural_tag", "structural tag")


@dataclass(frozen=True)
class ServerCheck:
    """What :meth:`OpenAICompatibleProvider.check` found on one server of the endpoint."""

    base_url: str
    healthy: bool
    models: list[str]
    error: str = ""  # why it did not list its models


@dataclass(frozen=True)
class ServerStatus:
    """What :meth:`OpenAICompatibleProvider.check` found: the endpoint as a whole (``healthy`` when
    any of its servers is; ``models`` of the first that listed them) and each server."""

    base_url: str
    healthy: bool
    models: list[str]
    servers: list[ServerCheck] = field(default_factory=list)

    @property
    def down(self) -> list[str]:
        """The URLs of the servers that are not healthy."""
        return [s.base_url for s in self.servers if not s.healthy]


@dataclass
class ShownSoFar:
    """What a stream has shown its reader, so that an answer started again on another server
    shows only what comes after it (its text, and each tool call's arguments)."""

    text: str = ""
    calls: dict[int, str] = field(default_factory=dict)
    _again: str | None = None  # the new attempt's text, while it catches up
    _again_calls: dict[int, str] = field(default_factory=dict)

    def restart(self) -> None:
        self._again, self._again_calls = "", {}

    def new(self, event: StreamEvent) -> list[StreamEvent]:
        if isinstance(event, TextDelta):
            if self._again is None:
                self.text += event.text
                return [event]
            self._again += event.text
            if len(self._again) <= len(self.text):
                return []
            unseen = self._again[len(self.text) :]
            self.text = self._again
            return [TextDelta(unseen)]
        if isinstance(event, ToolCallDelta):
            before = self.calls.get(event.index)
            if self._again is None or before is None:
                self.calls[event.index] = (before or "") + event.arguments_delta
                return [event]
            again = self._again_calls.get(event.index, "") + event.arguments_delta
            self._again_calls[event.index] = again
            if len(again) <= len(before):
                return []
            self.calls[event.index] = again
            return [ToolCallDelta(index=event.index, arguments_delta=again[len(before) :])]
        return [event]


class OpenAICompatibleProvider(LLMProvider):
    """Chat through an OpenAI-compatible HTTP endpoint with the ``openai`` package's async client."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        vllm: bool = True,
        defaults: SamplingSettings | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        max_concurrency: int = 64,
        retry_delay_s: float = 0.5,
        retry_max_delay_s: float = 8.0,
        max_images_per_prompt: int | None = None,
        max_audio_per_prompt: int | None = None,
        endpoint: Endpoint | None = None,
        base_urls: Sequence[str] = (),
        affinity_overflow: int = 4,
        health_interval_s: float = 2.0,
        pool: ServerPool | None = None,
    ) -> None:
        self.vllm = vllm
        if pool is None:
            urls = list(base_urls) or [base_url]
            several = len(urls) > 1
            endpoints = (
                [endpoint]
                if endpoint is not None and not several
                else [
                    Endpoint(
                        url,
                        api_key=api_key,
                        timeout_s=timeout_s,
                        # With several servers the pool retries, on another server first.
                        max_retries=0 if several else max_retries,
                        max_concurrency=max_concurrency,
                        retry_delay_s=retry_delay_s,
                        retry_max_delay_s=retry_max_delay_s,
                        vllm=vllm,
                    )
                    for url in urls
                ]
            )
            pool = ServerPool(
                endpoints,
                overflow=affinity_overflow,
                health_interval_s=health_interval_s,
                rounds=max_retries if several else 0,
            )
        self.pool = pool
        self._owns_endpoint = endpoint is None
        self._model = model
        self.model_name = model or ""  # the discovered name once known
        self.defaults = defaults or SamplingSettings()
        self.max_images_per_prompt = max_images_per_prompt
        self.max_audio_per_prompt = max_audio_per_prompt
        self._discovery = asyncio.Lock()
        self._guided_calls = True  # False once the server refused them (see _refused_guidance)

    @classmethod
    def from_config(cls, llm: LLMConfig) -> OpenAICompatibleProvider:
        vllm = llm.provider != "openai"
        if vllm:
            base_url, model, key = llm.vllm_base_url, llm.vllm_model_name, llm.vllm_api_key
        else:
            base_url = llm.base_url or llm.vllm_base_url
            model, key = llm.model_name or llm.vllm_model_name, llm.api_key or llm.vllm_api_key
        images, audio = llm.media_limits()
        return cls(
            base_url=base_url,
            model=model,
            api_key=key.get_secret_value() if key else None,
            vllm=vllm,
            defaults=SamplingSettings(
                temperature=llm.temperature, max_tokens=llm.max_tokens, top_p=llm.top_p, seed=llm.seed
            ),
            timeout_s=llm.timeout_s,
            max_retries=llm.max_retries,
            max_concurrency=llm.max_concurrency,
            retry_delay_s=llm.retry_delay_s,
            retry_max_delay_s=llm.retry_max_delay_s,
            max_images_per_prompt=images,
            max_audio_per_prompt=audio,
            base_urls=llm.base_urls,
            affinity_overflow=llm.affinity_overflow,
            health_interval_s=llm.health_interval_s,
        )

    # -- model and server ---------------------------------------------------------------------

    @property
    def endpoint(self) -> Endpoint:
        """The first server's endpoint (the only one, with one URL)."""
        return self.pool.servers[0].endpoint

    @property
    def base_url(self) -> str:
        return self.endpoint.base_url

    @property
    def base_urls(self) -> list[str]:
        return [server.url for server in self.pool.servers]

    async def resolve_model(self) -> str:
        """The model to ask: configured, else the first one the server lists (discovered once)."""
        if self._model:
            return self._model
        async with self._discovery:
            if not self._model:
                ids = await self.pool.run("", lambda server: server.endpoint.model_ids())
                if not ids:
                    raise LLMError(f"{self.base_url}/models lists no model: is the server still loading?")
                self._model = self.model_name = ids[0]
        return self._model

    async def health(self) -> bool:
        """Whether any server of the endpoint answers ``/health`` with 200 (no retries, short
        timeout); those that do not are named in a warning while another one answers."""
        up = await asyncio.gather(*(self._healthy(s) for s in self.pool.servers))
        down = [s.url for s, ok in zip(self.pool.servers, up, strict=True) if not ok]
        if down and any(up):
            log.warning("model server(s) of %s not healthy: %s", self.base_url, ", ".join(down))
        return any(up)

    @staticmethod
    async def _healthy(server: Server) -> bool:
        endpoint = server.endpoint
        try:
            await endpoint.client.get(endpoint.root + "/health", cast_to=str, options={"timeout": 5.0})
        except openai.APIError:
            return False
        return True

    async def check(self) -> ServerStatus:
        """``/health`` and ``/v1/models`` of every server of the endpoint, one :class:`ServerCheck`
        each; raises :class:`LLMUnavailableError` naming the URL(s) when none lists its models."""
        found: list[ServerCheck] = []
        failed: list[tuple[str, LLMError]] = []
        for server, outcome in await self._on_every_server(self._check):
            if isinstance(outcome, LLMError):
                failed.append((server.url, outcome))
                found.append(ServerCheck(server.url, False, [], _reason(outcome)))
            else:
                found.append(outcome)
        listing = [c for c in found if not c.error]
        if not listing:
            raise _none_answered(failed)
        healthy = any(c.healthy for c in found)
        return ServerStatus(self.base_url, healthy, listing[0].models, found)

    async def _check(self, server: Server) -> ServerCheck:
        healthy = await self._healthy(server) if self.vllm else True
        models = await server.endpoint.model_ids()
        return ServerCheck(server.url, healthy, models)

    async def metrics(self) -> dict[str, dict[str, float]]:
        """Every server's Prometheus ``/metrics`` as ``{base_url: {"name{labels}": value}}``, in the
        endpoint's order. A server that cannot be read is left out and named in a warning; when none
        can be, the error says why (as :meth:`check`'s does)."""

        async def read(server: Server) -> str:
            return await server.endpoint.get_text("/metrics", what="reading /metrics")

        samples: dict[str, dict[str, float]] = {}
        failed: list[tuple[str, LLMError]] = []
        for server, outcome in await self._on_every_server(read):
            if isinstance(outcome, LLMError):
                failed.append((server.url, outcome))
            else:
                samples[server.url] = prometheus_samples(outcome)
        if not samples:
            raise _none_answered(failed)
        if failed:
            log.warning("/metrics not read from %s", "; ".join(f"{url}: {_reason(e)}" for url, e in failed))
        return samples

    async def _on_every_server(
        self, call: Callable[[Server], Awaitable[T]]
    ) -> list[tuple[Server, T | LLMError]]:
        """``call`` on every server of the endpoint at once, in its order: each one's result or its
        :class:`LLMError` (any other exception is raised)."""
        servers = self.pool.servers
        outcomes = await asyncio.gather(*(call(s) for s in servers), return_exceptions=True)
        paired: list[tuple[Server, T | LLMError]] = []
        for server, outcome in zip(servers, outcomes, strict=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, LLMError):
                raise outcome
            paired.append((server, outcome))
        return paired

    # -- requests ---------------------------------------------------------------------------

    def wire_body(self, request: ChatRequest, model: str) -> dict[str, Any]:
        """The keyword arguments of the openai client's ``chat.completions.create`` that ``request``
        becomes here (guided calls and structured outputs included): to replay or log it."""
        return self._body(model, request)[0]

    def _body(self, model: str, request: ChatRequest) -> tuple[dict[str, Any], bool, Guided]:
        """The request body; whether the server will enforce ``request.output``; whether the reply is
        the demanded calls written under guided decoding (see :meth:`_guide_calls`)."""
        messages, tools, output = request.messages, request.tools, request.output
        over = check_media_limits(messages, self.max_images_per_prompt, self.max_audio_per_prompt)
        if over is not None:
            raise LLMRequestError(f"{over} (llm.server.limit_mm_per_prompt)")
        merged = self.defaults.merged(request.settings)
        body: dict[str, Any] = {"model": model, "messages": [message_to_wire(m) for m in messages]}
        for key in ("temperature", "max_tokens", "top_p", "seed", "stop"):
            value = getattr(merged, key)
            if value is not None:
                body[key] = value
        extra = dict(merged.extra_body or {})
        guided: Guided = None
        if self.vllm and self._guided_calls and forces_call(request):
            guided = "tagged" if profile_for(model).tool_call_tags else "json"
        if tools:
            body["tools"] = [tool_to_wire(t, vllm=self.vllm) for t in tools]
            body["tool_choice"] = tool_choice_to_wire(request.tool_choice, tools)
            if request.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = request.parallel_tool_calls
        if guided is not None:
            self._guide_calls(body, extra, request, profile_for(model).tool_call_tags)
        # A constraining response_format beside tools makes vLLM constrain everything: no tool calls.
        constrained = output is not None and not tools
        if constrained:
            assert output is not None
            body["response_format"] = response_format_for(output)
        if extra:
            body["extra_body"] = extra
        return body, constrained, guided

    @staticmethod
    def _guide_calls(
        body: dict[str, Any], extra: dict[str, Any], request: ChatRequest, tags: tuple[str, str] | None
    ) -> None:
        """Ask vLLM for the demanded calls under its structured outputs, parsed on our side.

        vLLM's own "required" grammar lets whitespace run between a call's JSON tokens (a small model
        fills ``max_tokens`` with it) and, with several calls allowed, lets calls repeat to the end.
        Here whitespace is bounded and the calls stop after the first when one is allowed: written as
        the model's template writes them when its profile names the tags, else as one JSON list. The
        tools stay in the request (``tool_choice: "none"``), so the template still shows them."""
        body["tool_choice"] = "none"
        body.pop("parallel_tool_calls", None)
        if tags is not None:
            extra["structured_outputs"] = {"structural_tag": json.dumps(tagged_calls_tag(request, tags))}
        else:
            schema = guided_calls_schema(request)
            extra["structured_outputs"] = {"json": schema, "disable_any_whitespace": True}

    def _refused_guidance(self, exc: LLMRequestError, request: ChatRequest) -> bool:
        """Whether ``exc`` is a server refusing guided calls (an older vLLM): from then on this
        provider asks for calls the server's own way, once warned."""
        text = str(exc).lower()
        guided = self.vllm and self._guided_calls and forces_call(request)
        if not guided or not any(word in text for word in REFUSAL_WORDS):
            return False
        log.warning(
            "%s refused guided tool calls (%s); asking for tool calls the server's own way from now on",
            self.base_url,
            exc,
        )
        self._guided_calls = False
        return True

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """The whole reply. The timeout bounds each wait for progress, never a long answer that keeps
        coming: a vLLM server answers in one response (a stream costs it about a tenth of its
        throughput) while its work count grows; any other server streams, and the reply is assembled."""
        model = await self.resolve_model()
        try:
            return await self._chat(model, request)
        except LLMRequestError as exc:
            if not self._refused_guidance(exc, request):
                raise
            return await self._chat(model, request)

    async def _chat(self, model: str, request: ChatRequest) -> ChatResponse:
        body, constrained, guided = self._body(model, request)
        what, tools_sent = f"chat with {model}", bool(request.tools)

        async def on(server: Server) -> ChatResponse:
            endpoint = server.endpoint
            if await endpoint.counts_work():
                create = endpoint.client.chat.completions.create

                async def call() -> Any:
                    return await create(**body, timeout=None)  # bounded by the endpoint's watch instead

                completion = await endpoint.run(call, what=what, tools_sent=tools_sent, while_working=True)
                if not isinstance(completion, ChatCompletion):  # the SDK gives a body it cannot read as text
                    raise NotTheAPIError(f"{what}: {endpoint.base_url} answered {str(completion)[:120]!r}")
                return response_from_completion(completion, request, constrained=constrained, guided=guided)
            assembler = StreamAssembler()
            async for chunk in endpoint.chunks(body, what=what, tools_sent=tools_sent):
                assembler.feed(chunk)
            if assembler.finish_reason is None:
                cut = f"{what}: the stream from {endpoint.base_url} ended before the answer did"
                raise NotTheAPIError(cut)
            return assembler.response(request, constrained=constrained, guided=guided)

        return await self.pool.run(affinity_key(request), on)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Token by token; tool-call pieces carry their call's id; the end has the whole reply.

        Connection errors before the first chunk are retried; each chunk must come within the timeout.
        Guided calls (see :meth:`_guide_calls`) are announced whole at the end, not as text.
        """
        model = await self.resolve_model()
        for attempt in range(2):
            body, constrained, guided = self._body(model, request)
            assembler = StreamAssembler()
            # Text goes on where a failed server stopped only when nothing constrains it.
            continuable = self.vllm and guided is None and "response_format" not in body
            chunks = self.pool.stream(
                affinity_key(request),
                body,
                what=f"streaming chat with {model}",
                tools_sent=bool(request.tools),
                continuable=continuable,
            )
            shown = ShownSoFar()
            started = False
            try:
                async for chunk in chunks:
                    started = True
                    if chunk is RESTART:  # the answer starts again on another server
                        assembler = StreamAssembler()
                        shown.restart()
                        continue
                    for event in assembler.feed(chunk):
                        if guided is None or not isinstance(event, TextDelta):
                            for unseen in shown.new(event):
                                yield unseen
            except LLMRequestError as exc:
                if started or attempt or not self._refused_guidance(exc, request):
                    raise
                continue
            finally:
                await chunks.aclose()  # a consumer that stops early frees the connection and the slot now
            break
        response = assembler.response(request, constrained=constrained, guided=guided)
        if response.tool_calls and not assembler.calls:  # recovered from text: announce them too
            for index, call in enumerate(response.tool_calls):
                yield ToolCallDelta(
                    index=index, id=call.id, name=call.name, arguments_delta=call.arguments_json
                )
        yield StreamEnd(response)

    # -- lifecycle -----------------------------------------------------------------------------

    def _overridden(self, overrides: Overrides) -> OpenAICompatibleProvider:
        """Another model (or LoRA adapter), sampling defaults or server (``api_key`` and
        ``timeout_s`` as options). On the same server the copy shares this provider's connections
        and concurrency bound."""
        overrides.check_options({"api_key", "timeout_s"}, type(self).__name__)
        model, base_url = overrides.model, overrides.base_url
        api_key = overrides.options.get("api_key")
        timeout_s = overrides.options.get("timeout_s")
        defaults = self.defaults.merged(overrides.sampling)
        same_server = base_url is None or normalize_base_url(base_url, vllm=self.vllm) == self.base_url
        pool = self.pool
        if not same_server or api_key is not None or timeout_s is not None:
            old = self.endpoint
            urls = [base_url] if base_url is not None and not same_server else self.base_urls
            several = len(urls) > 1
            retries = self.pool.rounds if self.pool.multi else old.max_retries
            endpoints = [
                Endpoint(
                    url,
                    api_key=api_key or old.api_key,
                    timeout_s=timeout_s or old.timeout_s,
                    max_retries=0 if several else retries,
                    max_concurrency=old.max_concurrency,
                    retry_delay_s=old.retry_delay_s,
                    retry_max_delay_s=old.retry_max_delay_s,
                    vllm=self.vllm,
                )
                for url in urls
            ]
            pool = ServerPool(
                endpoints,
                overflow=self.pool.overflow,
                health_interval_s=self.pool.health_interval_s,
                rounds=retries if several else 0,
            )
        copy = OpenAICompatibleProvider(
            base_url=pool.servers[0].url,
            model=model or (self._model if same_server else None),
            vllm=self.vllm,
            defaults=defaults,
            max_images_per_prompt=self.max_images_per_prompt,
            max_audio_per_prompt=self.max_audio_per_prompt,
            pool=pool,
        )
        copy._owns_endpoint = pool is not self.pool
        return copy

    async def close(self) -> None:
        if self._owns_endpoint:
            await self.pool.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, model={self._model!r})"


def _reason(exc: LLMError) -> str:
    return str(exc) or type(exc).__name__


def _none_answered(failed: list[tuple[str, LLMError]]) -> LLMError:
    """The error when no server of an endpoint answered: a lone server's own, else one naming each."""
    if len(failed) == 1:
        return failed[0][1]
    names = "; ".join(f"{url}: {_reason(exc)}" for url, exc in failed)
    return LLMUnavailableError(f"no model server of this endpoint answers ({names})")
