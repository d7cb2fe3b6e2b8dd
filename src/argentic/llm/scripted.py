"""Deterministic providers for fast unit tests of agents: no server, no network.

``ScriptedLLM`` plays a list of replies in order; ``FunctionLLM`` asks a function for each reply.
Both record every request (``.requests``) so a test can check what the agent sent, and both parse
structured output like the real providers do, so agent code sees the same ``ChatResponse.parsed``.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from argentic.errors import LLMError, UsageError
from argentic.llm.base import LLMProvider, Overrides, events_from_response
from argentic.llm.output import parse_output
from argentic.llm.types import (
    ChatRequest,
    ChatResponse,
    LLMToolCall,
    StreamEvent,
)
from argentic.protocol import Usage

#: fn(request) -> reply (or an awaitable of one).
ReplyFunction: TypeAlias = Callable[
    [ChatRequest],
    "ChatResponse | str | LLMToolCall | list[LLMToolCall]"
    " | Awaitable[ChatResponse | str | LLMToolCall | list[LLMToolCall]]",
]
#: One scripted step: a reply, text, one or several tool calls, or a function that makes the reply.
ScriptStep: TypeAlias = ChatResponse | str | LLMToolCall | list[LLMToolCall] | ReplyFunction | BaseException


@dataclass
class _Shared:
    """State shared by a provider and its ``with_overrides`` copies."""

    requests: list[ChatRequest] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=itertools.count)


def tool_call(name: str, arguments: dict[str, Any] | None = None, *, id: str | None = None) -> LLMToolCall:
    """A tool call for a script: ``tool_call("add", {"a": 1, "b": 2})``."""
    args = arguments or {}
    return LLMToolCall(id=id or f"call_{name}", name=name, arguments=args, raw_arguments=json.dumps(args))


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


class _TestProvider(LLMProvider):
    def __init__(self, model_name: str, shared: _Shared | None, max_images_per_prompt: int | None) -> None:
        self.model_name = model_name
        self.max_images_per_prompt = max_images_per_prompt
        self._shared = shared or _Shared()
        self.overrides: dict[str, Any] = {}
        self.closed = False

    @property
    def requests(self) -> list[ChatRequest]:
        """Every request so far, oldest first (shared with override copies)."""
        return self._shared.requests

    @property
    def last_request(self) -> ChatRequest:
        """The newest request; read before any was made, a :class:`~argentic.errors.UsageError`."""
        if not self._shared.requests:
            raise UsageError("no request was made to this provider yet: ask the agent first")
        return self._shared.requests[-1]

    async def _reply(self, request: ChatRequest) -> ChatResponse | str | LLMToolCall | list[LLMToolCall]:
        raise NotImplementedError

    def _finish(
        self, reply: ChatResponse | str | LLMToolCall | list[LLMToolCall], request: ChatRequest
    ) -> ChatResponse:
        if isinstance(reply, str):
            response = ChatResponse(content=reply, finish_reason="stop")
        elif isinstance(reply, LLMToolCall):
            response = ChatResponse(tool_calls=[reply], finish_reason="tool_calls")
        elif isinstance(reply, list):
            response = ChatResponse(tool_calls=list(reply), finish_reason="tool_calls")
        else:
            response = reply.model_copy(deep=True)
        # Unique ids per call, like a real server, so an agent's history never holds duplicates.
        calls = [
            c.model_copy(update={"id": f"{c.id}_{next(self._shared.ids)}", "raw_arguments": c.arguments_json})
            for c in response.tool_calls
        ]
        prompt = sum(_estimate_tokens(m.text) for m in request.messages)
        completion = _estimate_tokens(response.content or "") + sum(
            _estimate_tokens(c.arguments_json) for c in calls
        )
        update: dict[str, Any] = {"tool_calls": calls, "model": response.model or self.model_name}
        if response.usage == Usage():
            update["usage"] = Usage(
                prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
            )
        if request.output is not None and response.parsed is None and response.content and not calls:
            update["parsed"] = parse_output(response.content, request.output)
        return response.model_copy(update=update)

    async def chat(self, request: ChatRequest) -> ChatResponse:
        if self.closed:
            raise LLMError(f"{type(self).__name__} is closed")
        self._shared.requests.append(request)
        await asyncio.sleep(0)  # a real provider always yields to the loop
        return self._finish(await self._reply(request), request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        response = await self.chat(request)
        for event in events_from_response(response, chunk_words=True):
            await asyncio.sleep(0)
            yield event

    async def close(self) -> None:
        self.closed = True


class ScriptedLLM(_TestProvider):
    """Replies from a script, in order.

    Each step is a :class:`ChatResponse`, a string (a text reply), an :class:`LLMToolCall` or a list
    of them (a tool-call reply), an exception (raised), or a function ``fn(request)`` (sync or
    async, given the :class:`ChatRequest`) returning one of those.
    When the script runs out, the call raises :class:`LLMError` (or the last step repeats with
    ``repeat_last=True``).
    """

    def __init__(
        self,
        responses: Sequence[ScriptStep] = (),
        *,
        model_name: str = "scripted",
        repeat_last: bool = False,
        max_images_per_prompt: int | None = None,
    ) -> None:
        super().__init__(model_name, None, max_images_per_prompt)
        self._script: list[ScriptStep] = list(responses)
        self._position = [0]  # a list so override copies advance the same script
        self.repeat_last = repeat_last

    def add(self, *steps: ScriptStep) -> ScriptedLLM:
        self._script.extend(steps)
        return self

    @property
    def remaining(self) -> int:
        return len(self._script) - self._position[0]

    async def _reply(self, request: ChatRequest) -> ChatResponse | str | LLMToolCall | list[LLMToolCall]:
        position = self._position[0]
        if position >= len(self._script):
            if not (self.repeat_last and self._script):
                raise LLMError(
                    f"ScriptedLLM: script exhausted after {len(self._script)} replies "
                    f"(request {len(self.requests)} had {len(request.messages)} messages)"
                )
            position = len(self._script) - 1
        else:
            self._position[0] += 1
        step = self._script[position]
        if isinstance(step, BaseException):
            raise step
        if callable(step) and not isinstance(step, ChatResponse):
            return await _call(step, request)
        return step

    def _overridden(self, overrides: Overrides) -> ScriptedLLM:
        copy = ScriptedLLM(
            model_name=overrides.model or self.model_name,
            repeat_last=self.repeat_last,
            max_images_per_prompt=self.max_images_per_prompt,
        )
        copy._script, copy._position, copy._shared = self._script, self._position, self._shared
        copy.overrides = _overrides(self.overrides, overrides)
        return copy


class FunctionLLM(_TestProvider):
    """Replies computed by ``fn(request)`` (sync or async, given the :class:`ChatRequest`).

    The function may return a :class:`ChatResponse`, a string, or tool call(s).
    """

    def __init__(
        self,
        fn: ReplyFunction,
        *,
        model_name: str = "function",
        max_images_per_prompt: int | None = None,
    ) -> None:
        super().__init__(model_name, None, max_images_per_prompt)
        self.fn = fn

    async def _reply(self, request: ChatRequest) -> ChatResponse | str | LLMToolCall | list[LLMToolCall]:
        return await _call(self.fn, request)

    def _overridden(self, overrides: Overrides) -> FunctionLLM:
        copy = FunctionLLM(
            self.fn,
            model_name=overrides.model or self.model_name,
            max_images_per_prompt=self.max_images_per_prompt,
        )
        copy._shared = self._shared
        copy.overrides = _overrides(self.overrides, overrides)
        return copy


async def _call(
    fn: ReplyFunction, request: ChatRequest
) -> ChatResponse | str | LLMToolCall | list[LLMToolCall]:
    result: Any = fn(request)
    if inspect.isawaitable(result):
        result = await result
    if not isinstance(result, ChatResponse | str | LLMToolCall | list):
        raise LLMError(f"reply function returned {type(result).__name__}, expected a ChatResponse or str")
    return result


def _overrides(base: dict[str, Any], overrides: Overrides) -> dict[str, Any]:
    """What a test provider's copy records: every setting it was given (the model aside)."""
    given = {"base_url": overrides.base_url, **overrides.options}
    return {
        **base,
        **overrides.sampling.model_dump(exclude_none=True),
        **{k: v for k, v in given.items() if v is not None},
    }
