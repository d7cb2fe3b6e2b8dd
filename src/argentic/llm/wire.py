"""argentic's LLM types to and from the OpenAI chat-completions wire format (as vLLM speaks it)."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeAlias

from argentic.errors import LLMError, LLMOutputError
from argentic.llm.markup import extract_tool_calls, json_values, new_call_id
from argentic.llm.output import output_name, output_schema, parse_output
from argentic.llm.types import (
    AudioPart,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ContentPart,
    ImagePart,
    LLMToolCall,
    OutputSpec,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolChoice,
    ToolDefinition,
)
from argentic.protocol import Usage

log = logging.getLogger(__name__)

#: How a reply's demanded calls were written under guided decoding: a JSON list, tagged as the
#: model's template writes them, or (None) not guided.
Guided: TypeAlias = Literal["json", "tagged"] | None


def part_to_wire(part: ContentPart) -> dict[str, Any]:
    if isinstance(part, ImagePart):
        return {"type": "image_url", "image_url": {"url": part.url}}
    if isinstance(part, AudioPart):
        # OpenAI's input_audio part, which vLLM's server and renderer read for audio models
        return {"type": "input_audio", "input_audio": {"data": part.data, "format": part.format}}
    return {"type": "text", "text": part.text}


def message_to_wire(message: ChatMessage) -> dict[str, Any]:
    wire: dict[str, Any] = {"role": message.role}
    content = message.content
    if isinstance(content, list):
        wire["content"] = [part_to_wire(part) for part in content]
    else:
        wire["content"] = content if content is not None or message.role != "tool" else ""
    if message.tool_calls:
        wire["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
            for c in message.tool_calls
        ]
    if message.role == "tool":
        wire["tool_call_id"] = message.tool_call_id or ""
    return wire


def count_images(messages: Sequence[ChatMessage]) -> int:
    return max((len(m.images) for m in messages if m.role == "user"), default=0)


def count_audio(messages: Sequence[ChatMessage]) -> int:
    return max((len(m.audio) for m in messages if m.role == "user"), default=0)


def check_media_limits(
    messages: Sequence[ChatMessage], max_images: int | None, max_audio: int | None
) -> str | None:
    """Why ``messages`` exceed the per-prompt limits (vLLM's ``--limit-mm-per-prompt``), or None."""
    images, audio = count_images(messages), count_audio(messages)
    if max_images is not None and images > max_images:
        return f"{images} images in one prompt, but the server takes at most {max_images}"
    if max_audio is not None and audio > max_audio:
        return f"{audio} audio clips in one prompt, but the server takes at most {max_audio}"
    return None


def text_only_refusal(detail: str, where: str) -> str | None:
    """What to tell the user when vLLM refused images or audio because the model takes text only
    (``detail`` is vLLM's message), or None for another refusal."""
    if "not a multimodal model" not in detail.lower():
        return None
    return (
        f"the model {where} takes text only, and this request has images or audio ({detail}). "
        "Serve a model that takes them (google/gemma-3n-E4B-it takes both) or ask without them."
    )


def _edited(schema: dict[str, Any], edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """A copy of ``schema`` with ``edit`` applied to each of its (nested) schema objects."""
    result = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            edit(node)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(result)
    return result


def _close(node: dict[str, Any]) -> None:
    if node.get("type") == "object" and "properties" in node:
        node.setdefault("additionalProperties", False)


def closed_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` whose objects forbid unknown keys (what strict tool schemas want)."""
    return _edited(schema, _close)


def _all_required(schema: dict[str, Any]) -> bool:
    properties = schema.get("properties", {})
    return isinstance(properties, dict) and set(properties) <= set(schema.get("required", []))


def tool_to_wire(tool: ToolDefinition, *, vllm: bool) -> dict[str, Any]:
    parameters = closed_schema(tool.parameters) if tool.strict else tool.parameters
    # OpenAI's strict mode also demands every property be required; vLLM's does not.
    strict = tool.strict and (vllm or _all_required(parameters))
    function: dict[str, Any] = {"name": tool.name, "parameters": parameters}
    if tool.description:
        function["description"] = tool.description
    if strict:
        function["strict"] = True
    return {"type": "function", "function": function}


def tool_choice_to_wire(choice: ToolChoice, tools: Sequence[ToolDefinition]) -> str | dict[str, Any]:
    if choice in ("auto", "required", "none"):
        return choice
    if choice not in {t.name for t in tools}:
        raise LLMError(
            f"tool_choice names {choice!r}, which is not among the tools given: {[t.name for t in tools]}"
        )
    return {"type": "function", "function": {"name": choice}}


def forces_call(request: ChatRequest) -> bool:
    """Whether ``request`` demands a tool call ("required" or a named tool)."""
    return bool(request.tools) and request.tool_choice not in ("auto", "none")


#: JSON's safe integer range (IEEE doubles): the bound a guided call gives an unbounded integer,
#: so that its digits cannot run to max_tokens.
SAFE_INTEGER = 2**53 - 1


def _bound_integer(node: dict[str, Any]) -> None:
    if node.get("type") == "integer":
        if "minimum" not in node and "exclusiveMinimum" not in node:
            node["minimum"] = -SAFE_INTEGER
        if "maximum" not in node and "exclusiveMaximum" not in node:
            node["maximum"] = SAFE_INTEGER


def bounded_integers(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` whose integers without bounds keep to JSON's safe integer range."""
    return _edited(schema, _bound_integer)


def guided_calls_schema(request: ChatRequest) -> dict[str, Any]:
    """The JSON schema of the calls ``request`` demands: a list of ``{"name", "arguments"}`` objects,
    or one such object when one call is allowed (:func:`single_call`), each tool's arguments closed
    to its schema and its integers bounded.

    Generated under this schema (vLLM's structured outputs, no free whitespace) a call cannot run on
    into invented text, and with bounded strings it ends well within ``max_tokens``."""
    named = request.tool_choice not in ("auto", "none", "required")
    tools = [t for t in request.tools if not named or t.name == request.tool_choice]
    if not tools:
        tool_choice_to_wire(request.tool_choice, request.tools)  # raises, naming the tools
    variants = [
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": [t.name]},
                "arguments": bounded_integers(closed_schema(t.parameters)),
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    if single_call(request):
        return variants[0] if len(variants) == 1 else {"anyOf": variants}
    return {"type": "array", "minItems": 1, "items": {"anyOf": variants}}


#: At most this many whitespace characters in a row inside a tagged call's JSON (room for the
#: spaces of ``json.dumps``, none for a run that fills max_tokens).
TAGGED_CALL_WHITESPACE = 1


def tagged_calls_tag(request: ChatRequest, tags: tuple[str, str]) -> dict[str, Any]:
    """A structural tag (vLLM's structured outputs, xgrammar's format) for the calls ``request``
    demands, written ``<open>{"name": "...", "arguments": {...}}<close>`` as a Hermes-style template
    teaches: the model writes a call as it learned to, its arguments under their bounded schema."""
    opening, closing = tags
    named = request.tool_choice not in ("auto", "none", "required")
    tools = [t for t in request.tools if not named or t.name == request.tool_choice]
    return {
        "type": "structural_tag",
        "format": {
            "type": "tags_with_separator",
            "tags": [
                {
                    "type": "tag",
                    "begin": f'{opening}{{"name": {json.dumps(t.name)}, "arguments": ',
                    "content": {
                        "type": "json_schema",
                        "json_schema": bounded_integers(closed_schema(t.parameters)),
                        "max_whitespace_cnt": TAGGED_CALL_WHITESPACE,
                    },
                    "end": f"}}{closing}",
                }
                for t in tools
            ],
            "separator": "",
            "at_least_one": True,
            "stop_after_first": single_call(request),
        },
    }


def single_call(request: ChatRequest) -> bool:
    """Whether ``request`` allows one call only (a named tool is one call of it)."""
    return request.tool_choice not in ("auto", "none", "required") or request.parallel_tool_calls is False


def guided_calls(text: str | None) -> list[LLMToolCall]:
    """The calls of a reply written under :func:`guided_calls_schema`: the whole ones only (a reply
    cut off at max_tokens keeps the calls it finished)."""
    if not text:
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = json_values(text.strip().removeprefix("["))
    items = value if isinstance(value, list) else [value]
    return [
        LLMToolCall(
            id=new_call_id(),
            name=item["name"],
            arguments=item["arguments"],
            raw_arguments=json.dumps(item["arguments"], ensure_ascii=False),
        )
        for item in items
        if isinstance(item, dict)
        and isinstance(item.get("name"), str)
        and isinstance(item.get("arguments"), dict)
    ]


def response_format_for(output: OutputSpec) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": output_name(output), "schema": output_schema(output), "strict": True},
    }


def _arguments(raw: str | None, name: str) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        log.warning("tool call %s: arguments are not JSON: %.200r", name, raw)
        return {}
    if not isinstance(value, dict):
        log.warning("tool call %s: arguments are not a JSON object: %.200r", name, raw)
        return {}
    return value


def _whole_object(raw: str) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except json.JSONDecodeError:
        return False


def tool_call(call_id: str | None, name: str, raw_arguments: str | None) -> LLMToolCall:
    return LLMToolCall(
        id=call_id or new_call_id(),
        name=name,
        arguments=_arguments(raw_arguments, name),
        raw_arguments=raw_arguments or "{}",
    )


def usage_from(wire: Any) -> Usage:
    if wire is None:
        return Usage()
    prompt = int(getattr(wire, "prompt_tokens", 0) or 0)
    completion = int(getattr(wire, "completion_tokens", 0) or 0)
    total = int(getattr(wire, "total_tokens", 0) or 0) or prompt + completion
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


def finish_response(
    request: ChatRequest,
    *,
    content: str | None,
    calls: list[LLMToolCall],
    finish_reason: str | None,
    usage: Usage,
    model: str,
    constrained: bool,
    guided: Guided = None,
) -> ChatResponse:
    """The reply to ``request``, after the fallbacks: tool calls written as text, and the
    structured answer parsed.

    ``constrained`` says the server enforced ``request.output`` (a parse failure is then an error;
    without it, as alongside tools, the answer is parsed only when it fits). ``guided`` says the
    content is the demanded calls, written under :func:`guided_calls_schema` ("json") or
    :func:`tagged_calls_tag` ("tagged").
    """
    tools, tool_choice, output = request.tools, request.tool_choice, request.output
    if guided is not None:
        names = [t.name for t in tools]
        calls = guided_calls(content) if guided == "json" else extract_tool_calls(content, names)[0]
        content = None
        if calls and finish_reason == "stop":
            finish_reason = "tool_calls"
    if finish_reason == "length":  # a call cut off at max_tokens is not one to run
        calls = [c for c in calls if _whole_object(c.raw_arguments)]
    if not calls and tools and tool_choice != "none":
        calls, content = extract_tool_calls(content, [t.name for t in tools])
        if calls and finish_reason == "stop":
            finish_reason = "tool_calls"
    content = content or None  # servers send "" beside tool calls
    parsed: Any = None
    if output is not None and not calls:
        if constrained:
            try:
                parsed = parse_output(content, output)
            except LLMOutputError as exc:
                if finish_reason == "length":
                    raise LLMOutputError(
                        f"the structured answer was cut off at max_tokens ({usage.completion_tokens} "
                        "tokens): raise max_tokens or bound the schema's strings (maxLength) and numbers"
                    ) from exc
                raise
        elif content:
            try:
                parsed = parse_output(content, output)
            except LLMOutputError:
                parsed = None
    return ChatResponse(
        content=content,
        tool_calls=calls,
        finish_reason=finish_reason,
        usage=usage,
        model=model,
        parsed=parsed,
    )


def response_from_completion(
    completion: Any, request: ChatRequest, *, constrained: bool, guided: Guided = None
) -> ChatResponse:
    """The whole reply to ``request`` from a non-streamed chat completion."""
    if not completion.choices:
        raise LLMOutputError(f"the server returned no choices (model {completion.model})")
    choice = completion.choices[0]
    message = choice.message
    calls = [
        tool_call(c.id, c.function.name, c.function.arguments)
        for c in (message.tool_calls or [])
        if getattr(c, "function", None) is not None
    ]
    return finish_response(
        request,
        content=message.content,
        calls=calls,
        finish_reason=choice.finish_reason,
        usage=usage_from(completion.usage),
        model=completion.model or "",
        constrained=constrained,
        guided=guided,
    )


class StreamAssembler:
    """Turns streamed chunks into events and, at the end, the whole reply.

    Tool calls arrive in pieces keyed by ``index``: the id and name with the first piece, then
    fragments of the arguments. A server that leaves out the id gets one made up, once per call.
    """

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage = Usage()
        self.model = ""

    def feed(self, chunk: Any) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        if chunk.model:
            self.model = chunk.model
        if getattr(chunk, "usage", None) is not None:
            self.usage = usage_from(chunk.usage)
        for choice in chunk.choices or ():
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta is not None and delta.content:
                self.text.append(delta.content)
                events.append(TextDelta(delta.content))
            for piece in (delta.tool_calls if delta is not None else None) or ():
                index = piece.index if piece.index is not None else len(self.calls)
                function = piece.function
                name = function.name if function is not None else None
                arguments = (function.arguments if function is not None else None) or ""
                call = self.calls.get(index)
                if call is None:
                    call = self.calls[index] = {
                        "id": piece.id or new_call_id(),
                        "name": name or "",
                        "arguments": [],
                    }
                    events.append(
                        ToolCallDelta(index=index, id=call["id"], name=name, arguments_delta=arguments)
                    )
                else:
                    if name and not call["name"]:
                        call["name"] = name
                    events.append(ToolCallDelta(index=index, name=name, arguments_delta=arguments))
                call["arguments"].append(arguments)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        return events

    def response(self, request: ChatRequest, *, constrained: bool, guided: Guided = None) -> ChatResponse:
        """The whole reply to ``request`` once the stream has ended."""
        calls = [
            tool_call(c["id"], c["name"], "".join(c["arguments"]))
            for _, c in sorted(self.calls.items())
            if c["name"]
        ]
        return finish_response(
            request,
            content="".join(self.text) or None,
            calls=calls,
            finish_reason=self.finish_reason,
            usage=self.usage,
            model=self.model,
            constrained=constrained,
            guided=guided,
        )
