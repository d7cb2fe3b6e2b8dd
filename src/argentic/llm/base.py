"""The one interface every model provider implements.

A provider has one abstract method, :meth:`LLMProvider.chat`, which answers one
:class:`~argentic.llm.types.ChatRequest`. Streaming has a default built on
``chat`` (one text event, one event per tool call, then the end), which real providers replace with
true token streaming.

A provider is a :class:`~argentic.lifecycle.Running` part: ``async with provider:`` makes it ready
(:meth:`LLMProvider.start`: the embedded engine loads its model; an HTTP provider opens nothing, its
connections come with the first request) and closes it on leaving. ``close()`` is the older name of
``stop()`` and what providers override.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from argentic.errors import ArgumentError
from argentic.lifecycle import Running
from argentic.llm.types import (
    ChatRequest,
    ChatResponse,
    SamplingSettings,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
)


@dataclass(frozen=True)
class Overrides:
    """What a per-role copy of a provider changes (see :meth:`LLMProvider.with_overrides`)."""

    model: str | None = None
    base_url: str | None = None
    #: Over the provider's defaults.
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    #: The provider's own keys (api_key, timeout_s, lora_path).
    options: Mapping[str, Any] = field(default_factory=dict)

    def check_options(self, known: set[str], provider: str) -> None:
        """Raise :class:`~argentic.errors.ArgumentError` for an option ``provider`` does not take."""
        extra = sorted(set(self.options) - known)
        if extra:
            raise ArgumentError(f"{provider}.with_overrides takes no {', '.join(extra)}")


class LLMProvider(Running):
    """A chat model: messages in, a reply (text, tool calls, a structured answer) out."""

    model_name: str = ""
    #: The most images one prompt may carry, when known (vLLM's ``--limit-mm-per-prompt``).
    max_images_per_prompt: int | None = None
    #: The most audio clips one prompt may carry, when known (also ``--limit-mm-per-prompt``).
    max_audio_per_prompt: int | None = None
    #: The sampling every request gets unless it sets its own.
    defaults: SamplingSettings = SamplingSettings()

    @abstractmethod
    async def chat(self, request: ChatRequest) -> ChatResponse:
        """One reply to ``request`` (see :class:`ChatRequest` for tools, output and settings)."""

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """The reply as events: text and tool-call pieces, then :class:`StreamEnd` with the whole reply."""
        response = await self.chat(request)
        for event in events_from_response(response):
            yield event

    def with_overrides(
        self,
        *,
        model: str | None = None,
        base_url: str | None = None,
        sampling: SamplingSettings | None = None,
        **keywords: Any,
    ) -> LLMProvider:
        """A provider like this one with another model, endpoint or sampling defaults (per role).

        Sampling keys given loose (``temperature=``, ``max_tokens=``, ``top_p=``, ``seed=``,
        ``stop=``, ``extra_body=``) join ``sampling``; other keywords are the provider's own
        (``api_key``, ``timeout_s``; ``lora_path`` for the embedded engine). None means unchanged."""
        given = {key: value for key, value in keywords.items() if value is not None}
        loose = {key: given.pop(key) for key in list(given) if key in SamplingSettings.model_fields}
        overrides = Overrides(model, base_url, SamplingSettings(**loose).merged(sampling), given)
        return self._overridden(overrides)

    def _overridden(self, overrides: Overrides) -> LLMProvider:
        """The copy :meth:`with_overrides` describes (a provider that can make one says how)."""
        raise NotImplementedError(f"{type(self).__name__} does not support overrides")

    async def resolve_model(self) -> str:
        """The model this provider talks to (a server provider may ask the server which it serves)."""
        return self.model_name

    async def start(self) -> None:
        """Be ready to answer (load what answers take); nothing for a provider that needs nothing."""
        return None

    async def stop(self) -> None:
        """Release connections or the engine (:meth:`close`); the provider is unusable afterwards."""
        await self.close()

    async def close(self) -> None:
        """Release connections or the engine; the provider is unusable afterwards (idempotent)."""
        return None


def events_from_response(response: ChatResponse, *, chunk_words: bool = False) -> list[StreamEvent]:
    """The stream events of a finished reply (for providers that do not stream)."""
    events: list[StreamEvent] = []
    if response.content:
        if chunk_words:
            words = response.content.split(" ")
            events += [TextDelta(word if i == 0 else " " + word) for i, word in enumerate(words)]
        else:
            events.append(TextDelta(response.content))
    for index, call in enumerate(response.tool_calls):
        events.append(
            ToolCallDelta(index=index, id=call.id, name=call.name, arguments_delta=call.arguments_json)
        )
    events.append(StreamEnd(response))
    return events
