"""Demanded tool calls under guided decoding: the schema they are written under, and how a reply
written under it (whole, or cut off at max_tokens) becomes calls."""

from __future__ import annotations

import json

import pytest

from argentic.errors import LLMError
from argentic.llm import ChatRequest, ToolDefinition
from argentic.llm.wire import SAFE_INTEGER, guided_calls, guided_calls_schema

ADD = ToolDefinition(
    name="add",
    parameters={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer", "minimum": 0}},
        "required": ["a", "b"],
    },
)
LOOKUP = ToolDefinition(
    name="lookup",
    parameters={"type": "object", "properties": {"key": {"type": "string", "maxLength": 8}}},
)


def test_required_calls_are_a_list_of_known_tools_with_closed_bounded_arguments() -> None:
    schema = guided_calls_schema(ChatRequest.user("?", tools=[ADD, LOOKUP], tool_choice="required"))
    assert schema["type"] == "array" and schema["minItems"] == 1 and "maxItems" not in schema
    add, lookup = schema["items"]["anyOf"]
    assert add["properties"]["name"] == {"type": "string", "enum": ["add"]}
    assert lookup["properties"]["name"] == {"type": "string", "enum": ["lookup"]}
    arguments = add["properties"]["arguments"]
    assert arguments["additionalProperties"] is False
    # an integer without bounds gets JSON's safe range (its digits cannot run on); a bound stays
    assert arguments["properties"]["a"] == {
        "type": "integer",
        "minimum": -SAFE_INTEGER,
        "maximum": SAFE_INTEGER,
    }
    assert arguments["properties"]["b"] == {"type": "integer", "minimum": 0, "maximum": SAFE_INTEGER}
    assert ADD.parameters["properties"]["a"] == {"type": "integer"}  # the tool's own schema is untouched


def test_one_call_when_parallel_calls_are_off_or_a_tool_is_named() -> None:
    single = ChatRequest.user("?", tools=[ADD, LOOKUP], tool_choice="required", parallel_tool_calls=False)
    assert [v["properties"]["name"]["enum"] for v in guided_calls_schema(single)["anyOf"]] == [
        ["add"],
        ["lookup"],
    ]
    named = guided_calls_schema(ChatRequest.user("?", tools=[ADD, LOOKUP], tool_choice="lookup"))
    assert named["type"] == "object" and named["properties"]["name"]["enum"] == ["lookup"]
    with pytest.raises(LLMError, match="not among the tools"):
        guided_calls_schema(ChatRequest.user("?", tools=[ADD], tool_choice="missing"))


def test_a_guided_reply_becomes_calls() -> None:
    calls = guided_calls(
        '[{"name":"add","arguments":{"a":1,"b":2}},{"name":"lookup","arguments":{"key":"x"}}]'
    )
    assert [(c.name, c.arguments) for c in calls] == [("add", {"a": 1, "b": 2}), ("lookup", {"key": "x"})]
    assert len({c.id for c in calls}) == 2 and json.loads(calls[0].raw_arguments) == {"a": 1, "b": 2}


def test_a_reply_cut_off_at_max_tokens_keeps_only_its_whole_calls() -> None:
    calls = guided_calls('[{"name":"add","arguments":{"a":1,"b":2}},{"name":"lookup","argum')
    assert [(c.name, c.arguments) for c in calls] == [("add", {"a": 1, "b": 2})]
    assert guided_calls('[{"name":"add","arguments":{"a":1') == []
    assert guided_calls(None) == [] and guided_calls("") == []
    (one,) = guided_calls('{"name":"add","arguments":{"a":1,"b":2}}')  # one call: the object alone
    assert one.arguments == {"a": 1, "b": 2}
