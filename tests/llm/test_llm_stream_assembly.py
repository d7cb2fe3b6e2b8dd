"""Streamed chunks (as vLLM sends them) assembled into events and one reply."""

from __future__ import annotations

from typing import Any

from openai.types.chat import ChatCompletionChunk

from argentic.llm import ChatRequest, TextDelta, ToolCallDelta, ToolDefinition
from argentic.llm.wire import StreamAssembler

TOOLS = [
    ToolDefinition(name="add", parameters={"type": "object", "properties": {"a": {"type": "integer"}}}),
    ToolDefinition(name="mul", parameters={"type": "object", "properties": {"a": {"type": "integer"}}}),
]
REQUEST = ChatRequest.user("?", tools=TOOLS)


def chunk(
    delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None
) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if delta or finish else [],
            "usage": usage,
        }
    )


def piece(index: int, arguments: str, *, id: str | None = None, name: str | None = None) -> dict[str, Any]:
    function: dict[str, Any] = {"arguments": arguments}
    if name:
        function["name"] = name
    call: dict[str, Any] = {"index": index, "function": function}
    if id:
        call.update(id=id, type="function")
    return {"tool_calls": [call]}


def test_two_interleaved_tool_calls_keep_their_ids() -> None:
    assembler = StreamAssembler()
    events = []
    for c in [
        chunk({"role": "assistant", "content": ""}),
        chunk(piece(0, "", id="call_a", name="add")),
        chunk(piece(1, '{"a"', id="call_b", name="mul")),
        chunk(piece(0, '{"a": ')),
        chunk(piece(1, ": 3}")),
        chunk(piece(0, "2}")),
        chunk({}, finish="tool_calls"),
        chunk({}, usage={"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}),
    ]:
        events += assembler.feed(c)
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [(d.index, d.id, d.name) for d in deltas if d.id] == [(0, "call_a", "add"), (1, "call_b", "mul")]
    reply = assembler.response(REQUEST, constrained=False)
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == [
        ("call_a", "add", {"a": 2}),
        ("call_b", "mul", {"a": 3}),
    ]
    assert reply.finish_reason == "tool_calls" and reply.usage.total_tokens == 12 and reply.content is None


def test_a_server_that_sends_no_ids_gets_one_per_call() -> None:
    assembler = StreamAssembler()
    first = assembler.feed(chunk(piece(0, '{"a": 1}', name="add")))
    assert isinstance(first[0], ToolCallDelta) and first[0].id
    reply = assembler.response(REQUEST.model_copy(update={"tool_choice": "required"}), constrained=False)
    assert reply.tool_calls[0].id == first[0].id


def test_tool_calls_streamed_as_text_are_recovered_at_the_end() -> None:
    assembler = StreamAssembler()
    events = []
    for text in ["<tool_", 'call>{"name": "mul", ', '"arguments": {"a": 4}}', "</tool_call>"]:
        events += assembler.feed(chunk({"content": text}))
    events += assembler.feed(chunk({}, finish="stop"))
    assert all(isinstance(e, TextDelta) for e in events)
    reply = assembler.response(REQUEST, constrained=False)
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("mul", {"a": 4})]
    assert reply.finish_reason == "tool_calls" and reply.content is None


def test_a_tool_call_cut_off_at_max_tokens_is_no_call() -> None:
    assembler = StreamAssembler()
    for c in [
        chunk(piece(0, "", id="call_a", name="add")),
        chunk(piece(0, '{"a": 12, "')),
        chunk({}, finish="length"),
    ]:
        assembler.feed(c)
    reply = assembler.response(REQUEST, constrained=False)
    assert reply.tool_calls == [] and reply.finish_reason == "length"
