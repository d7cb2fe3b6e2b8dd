"""The LLM layer: one provider interface over vLLM (endpoint or embedded engine) and OpenAI-compatible
servers.

``LLMFactory.create(config)`` picks the provider named by ``llm.provider``. ``ScriptedLLM`` and
``FunctionLLM`` are deterministic providers for unit tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from argentic.llm.base import LLMProvider
from argentic.llm.scripted import ChatRequest, FunctionLLM, ScriptedLLM, tool_call
from argentic.llm.types import (
    ChatMessage,
    ChatResponse,
    ContentPart,
    ImagePart,
    LLMToolCall,
    OutputSpec,
    SamplingSettings,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolChoice,
    ToolDefinition,
)

if TYPE_CHECKING:
    from argentic.llm.factory import LLMFactory

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "ContentPart",
    "FunctionLLM",
    "ImagePart",
    "LLMFactory",
    "LLMProvider",
    "LLMToolCall",
    "OutputSpec",
    "SamplingSettings",
    "ScriptedLLM",
    "StreamEnd",
    "StreamEvent",
    "TextDelta",
    "TextPart",
    "ToolCallDelta",
    "ToolChoice",
    "ToolDefinition",
    "tool_call",
]


def __getattr__(name: str) -> Any:
    # The factory imports the openai client; load it on first use so `import argentic.llm` stays light.
    if name == "LLMFactory":
        from argentic.llm.factory import LLMFactory

        return LLMFactory
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
