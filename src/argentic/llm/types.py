"""The data every LLM provider speaks: messages, tools, settings, replies and stream events.

Messages, tools and replies are pydantic models (they cross process and wire boundaries); stream
events are small frozen dataclasses, because a stream makes one per token.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from argentic.protocol import Usage
from argentic.sampling import SamplingSettings as SamplingSettings  # the one sampling object

M = TypeVar("M", bound=BaseModel)

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]

#: "auto", "required", "none", or the name of the one tool the model must call.
ToolChoice: TypeAlias = Literal["auto", "required", "none"] | str

#: What a structured answer must match: a pydantic model class or a JSON schema.
OutputSpec: TypeAlias = type[BaseModel] | dict[str, Any]


class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ImagePart(BaseModel):
    """An image, as a ``data:image/jpeg;base64,...`` URL or an http(s) URL."""

    type: Literal["image"] = "image"
    url: str


class AudioPart(BaseModel):
    """A sound clip as base64 audio file bytes (``format`` names the file type: WAV for Gemma 3n,
    which wants 16 kHz mono; vLLM resamples other rates to what the model takes)."""

    type: Literal["audio"] = "audio"
    data: str
    format: Literal["wav", "mp3"] = "wav"

    @classmethod
    def from_bytes(cls, data: bytes, format: Literal["wav", "mp3"] = "wav") -> AudioPart:
        return cls(data=base64.b64encode(data).decode("ascii"), format=format)

    def to_bytes(self) -> bytes:
        return base64.b64decode(self.data, validate=True)


ContentPart: TypeAlias = TextPart | ImagePart | AudioPart


class LLMToolCall(BaseModel):
    """A tool call the model made: ``arguments`` parsed, ``raw_arguments`` as the model wrote them."""

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    raw_arguments: str = ""

    def parse_arguments(self, model: type[M]) -> M:
        """The arguments validated against ``model`` (raises pydantic's ValidationError)."""
        return model.model_validate(self.arguments)

    @property
    def arguments_json(self) -> str:
        """The arguments as JSON text (what goes back to the model in the history)."""
        return self.raw_arguments or json.dumps(self.arguments, ensure_ascii=False)


class ChatMessage(BaseModel):
    role: Role
    content: str | list[ContentPart] | None = None
    tool_calls: list[LLMToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None

    @classmethod
    def system(cls, text: str) -> ChatMessage:
        return cls(role="system", content=text)

    @classmethod
    def user(cls, text: str, images: Sequence[str] = (), audio: Sequence[AudioPart] = ()) -> ChatMessage:
        """A user turn; ``images`` are data or http(s) URLs, placed before the text, then ``audio``."""
        if not images and not audio:
            return cls(role="user", content=text)
        parts: list[ContentPart] = [ImagePart(url=url) for url in images]
        parts.extend(audio)
        parts.append(TextPart(text=text))
        return cls(role="user", content=parts)

    @classmethod
    def assistant(cls, text: str | None = None, tool_calls: Sequence[LLMToolCall] = ()) -> ChatMessage:
        return cls(role="assistant", content=text, tool_calls=list(tool_calls))

    @classmethod
    def tool(cls, call_id: str, name: str, content: str) -> ChatMessage:
        """The result of tool call ``call_id`` given back to the model."""
        return cls(role="tool", content=content, tool_call_id=call_id, name=name)

    @property
    def text(self) -> str:
        """The text of the message, parts joined, images and audio left out."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content if isinstance(part, TextPart))

    @property
    def images(self) -> list[str]:
        if isinstance(self.content, list):
            return [part.url for part in self.content if isinstance(part, ImagePart)]
        return []

    @property
    def audio(self) -> list[AudioPart]:
        if isinstance(self.content, list):
            return [part for part in self.content if isinstance(part, AudioPart)]
        return []


class ToolDefinition(BaseModel):
    """A tool the model may call; ``parameters`` is the JSON schema of its arguments object."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool = True

    @classmethod
    def from_model(cls, name: str, arguments: type[BaseModel], description: str = "") -> ToolDefinition:
        """A definition whose parameters are ``arguments``' JSON schema."""
        return cls(
            name=name,
            description=description or (arguments.__doc__ or "").strip(),
            parameters=arguments.model_json_schema(),
        )


class ChatRequest(BaseModel):
    """One request to a model: the messages, the tools it may call, the answer's shape, sampling.

    ``tools`` the model may call (``tool_choice``: "auto", "required", "none" or a tool's name;
    ``parallel_tool_calls=False`` allows one call per reply).
    ``output`` asks for a structured answer (pydantic model or JSON schema) that comes back
    validated in ``ChatResponse.parsed``; with ``tools`` as well, the server does not constrain the
    answer (that would stop tool calls) but it is still parsed when it fits. ``settings`` apply to
    this request over the provider's defaults.
    """

    model_config = ConfigDict(frozen=True)

    messages: list[ChatMessage]
    tools: list[ToolDefinition] = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    #: False: at most one tool call per reply (None: the server's default, several allowed).
    parallel_tool_calls: bool | None = None
    output: OutputSpec | None = None
    settings: SamplingSettings | None = None

    @classmethod
    def user(cls, text: str, *, system: str | None = None, **fields: Any) -> ChatRequest:
        """A request of one user message (after a system message when ``system`` is given);
        ``fields`` are the other fields (``tools=``, ``output=``, ``settings=``...)."""
        messages = [ChatMessage.system(system)] if system else []
        return cls(messages=[*messages, ChatMessage.user(text)], **fields)


class ChatResponse(BaseModel):
    content: str | None = None
    tool_calls: list[LLMToolCall] = Field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    parsed: Any = None
    """The structured answer: an instance of the requested model, or a dict for a JSON schema."""

    def message(self) -> ChatMessage:
        """This reply as an assistant message for the conversation history."""
        return ChatMessage.assistant(self.content, self.tool_calls)


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the reply's text."""

    text: str
    kind: Literal["text"] = "text"


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of tool call ``index``: ``id`` and ``name`` come with its first piece."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments_delta: str = ""
    kind: Literal["tool_call"] = "tool_call"


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The last event of a stream: the whole reply, tool calls assembled."""

    response: ChatResponse
    kind: Literal["end"] = "end"


StreamEvent: TypeAlias = TextDelta | ToolCallDelta | StreamEnd
