"""Grounded arguments: a demanded first call's string and number arguments are spans of the
question (fast tier: the schemas, and scripted models named like the CPU model; the vLLM tier: the
CPU model's call holds one of those spans)."""

from __future__ import annotations

from typing import Any

import pytest
from agents_support import cpu_model
from pydantic import BaseModel, Field

from argentic import Agent
from argentic.agents.grounding import ground_schema, ground_tools, spans
from argentic.errors import StepLimitError
from argentic.llm import ScriptedLLM, ToolDefinition, tool_call
from argentic.llm.local import CPU_MODEL_NAME

ITEMS = {"bolts": 4312, "nuts": 977}


def stock_count(item: str = Field(pattern=r"^[A-Za-z][A-Za-z ]{0,29}$")) -> int | str:
    """How many units of an item the warehouse holds."""
    return ITEMS.get(item.strip().lower(), f"no item called {item!r}")


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Count(BaseModel):
    value: int


def tool(name: str, properties: dict[str, Any], required: list[str]) -> ToolDefinition:
    return ToolDefinition(
        name=name, parameters={"type": "object", "properties": properties, "required": required}
    )


def test_spans_are_the_questions_words_and_runs_of_them_without_end_punctuation() -> None:
    found = spans("How many bolts, please?")
    assert found[:4] == ["How", "many", "bolts", "please"]
    assert "many bolts" in found and "How many bolts, please" in found
    assert len(found) == len(set(found))


def test_numbers_come_from_the_question_within_their_bounds() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer", "maximum": 100}},
        "required": ["a", "b"],
    }
    grounded = ground_schema(schema, "What is 1234 + 56?")
    assert grounded is not None
    assert grounded["properties"]["a"]["enum"] == [1234, 56]
    assert grounded["properties"]["b"] == {"type": "integer", "maximum": 100, "enum": [56]}
    assert schema["properties"]["a"] == {"type": "integer"}  # the tool's own schema is left alone


def test_words_that_float_reads_as_numbers_are_not_numbers() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}
    grounded = ground_schema(schema, "Is nan or inf bigger than 2.5 or 1,000?")
    assert grounded is not None and grounded["properties"]["x"]["enum"] == [2.5, 1000.0]


def test_strings_are_spans_their_pattern_accepts_without_the_questions_frame() -> None:
    schema = {
        "type": "object",
        "properties": {"item": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 10}},
        "required": ["item"],
    }
    grounded = ground_schema(schema, "How many bolts does the warehouse hold?")
    assert grounded is not None
    assert grounded["properties"]["item"] == {
        "type": "string",
        "maxLength": 10,
        "enum": ["bolts", "warehouse"],
    }


def test_values_that_are_not_plain_are_left_as_they_are() -> None:
    properties = {
        "mode": {"type": "string", "enum": ["fast", "slow"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "flag": {"type": "boolean"},
    }
    grounded = ground_schema({"type": "object", "properties": properties}, "Tag it fast")
    assert grounded is not None and grounded["properties"] == properties


def test_a_word_of_the_tools_own_name_or_description_is_not_what_it_is_asked_about() -> None:
    lookup = ToolDefinition(
        name="stock_count",
        description="How many units of an item the warehouse holds.",
        parameters={"type": "object", "properties": {"item": {"type": "string"}}, "required": ["item"]},
    )
    (grounded,) = ground_tools([lookup], "How many hinges are in stock?")
    assert grounded.parameters["properties"]["item"]["enum"] == ["hinges"]
    # when only the tool's own words are left, they stay
    (only,) = ground_tools([lookup], "How many in stock?")
    assert only.parameters["properties"]["item"]["enum"] == ["stock"]


def test_a_tool_whose_required_argument_has_no_span_is_not_offered() -> None:
    number = tool("double", {"n": {"type": "integer"}}, ["n"])
    word = tool("lookup", {"item": {"type": "string"}}, ["item"])
    assert [t.name for t in ground_tools([number, word], "How many bolts?")] == ["lookup"]
    # none can be called from the question's words: all are offered, as they are
    assert ground_tools([number], "How many bolts?") == [number]


async def test_the_cpu_models_first_call_is_grounded_and_later_ones_are_not() -> None:
    llm = ScriptedLLM(
        [tool_call("add", {"a": 2, "b": 3}), tool_call("add", {"a": 5, "b": 5}), '{"answer": "10"}'],
        model_name=CPU_MODEL_NAME,
    )
    agent = Agent(llm=llm, tools=[add], followup_tool_choice="required", max_steps=2)
    with pytest.raises(StepLimitError):  # still calling tools after two steps: only the requests matter
        await agent.query("What is 2 + 3?")
    first, second = llm.requests
    assert first.tools[0].parameters["properties"]["a"]["enum"] == [2, 3]
    assert "enum" not in second.tools[0].parameters["properties"]["a"]  # after a result: free


async def test_other_models_calls_are_not_grounded() -> None:
    llm = ScriptedLLM([tool_call("add", {"a": 2, "b": 3}), "5"], model_name="acme/large")
    agent = Agent(llm=llm, tools=[add], tool_choice="required", followup_tool_choice="none")
    assert await agent.query("What is 2 + 3?") == "5"
    assert "enum" not in llm.requests[0].tools[0].parameters["properties"]["a"]


async def test_a_shaped_answer_without_a_number_in_the_free_answer_is_shaped_freely() -> None:
    llm = ScriptedLLM(
        [tool_call("stock_count", {"item": "bolts"}), '{"answer": "many"}', '{"value": 4312}'],
        model_name=CPU_MODEL_NAME,
    )
    agent = Agent(llm=llm, tools=[stock_count])
    assert (await agent.answer("How many bolts does the warehouse hold?", output=Count)).data == Count(
        value=4312
    )
    assert llm.requests[-1].output is Count


@pytest.mark.vllm
async def test_the_cpu_models_call_holds_a_span_of_the_question(vllm_server: Any) -> None:
    question = "How many bolts does the warehouse hold?"
    async with (
        cpu_model(vllm_server) as llm,
        Agent(
            llm=llm, tools=[stock_count], system_prompt="You count stock with the stock_count tool."
        ) as agent,
    ):
        result = await agent.answer(question)
    # Guided and grounded, the call names the tool and its argument is one the grounding allowed.
    assert result.tool_calls, result
    first = result.tool_calls[0]
    (allowed,) = ground_tools(agent.local_tools.definitions(), question)  # as the agent offered it
    assert first.name == "stock_count" and first.ok, first
    assert first.arguments["item"] in allowed.parameters["properties"]["item"]["enum"], first
