"""The LLM layer: one provider interface over vLLM (endpoint or embedded engine) and OpenAI-compatible
servers.

``LLMFactory.create(config)`` picks the provider named by ``llm.provider``. ``ScriptedLLM`` and
``FunctionLLM`` are deterministic providers for unit tests.
"""

from __future__ import annotations

from argentic.llm.base import LLMProvider
from argentic.llm.factory import LLMFactory
from argentic.llm.scripted import FunctionLLM, ScriptedLLM, tool_call
from argentic.llm.types import (
    ChatMessage,
    ChatRequest,
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
