"""Model profiles: what a model needs is looked up by its name, and the agent applies what the
user left open (fast tier: scripted models named like the real ones)."""

from __future__ import annotations

import re

import pytest
from agents_support import add
from pydantic import BaseModel

from argentic import Agent, ToolManager, ToolService
from argentic.llm import SamplingSettings, ScriptedLLM, tool_call
from argentic.llm.local import CPU_MODEL_NAME
from argentic.llm.profiles import DEFAULT_PROFILE, ModelProfile, profile_for, register_profile
from argentic.testing.messagers import MakeMessager


class Product(BaseModel):
    value: int


def test_profiles_match_by_name() -> None:
    assert profile_for(CPU_MODEL_NAME).tool_choice == "required"
    assert profile_for("/models/Gemma-3-270m-it").followup_tool_choice == "none"
    assert profile_for("google/gemma-3n-E4B-it").max_images_per_prompt == 1
    assert profile_for("some/other-model") is DEFAULT_PROFILE
    register_profile("acme/*", ModelProfile(tool_choice="required"))
    assert profile_for("ACME/tiny").tool_choice == "required"


@pytest.fixture
async def tools(memory: MakeMessager) -> ToolManager:
    bus = await memory()
    await ToolService(bus, [add], "math").start()
    manager = ToolManager(bus)
    await manager.start()
    await manager.wait_for_tools("add")
    return manager


async def test_the_cpu_models_profile_answers_then_shapes_a_structured_answer(tools: ToolManager) -> None:
    llm = ScriptedLLM(
        [tool_call("add", {"a": 1234, "b": 5678}), '{"answer": "6912"}', '{"value": 6912}'],
        model_name=CPU_MODEL_NAME,
    )
    agent = Agent(llm=llm, tool_manager=tools)
    result = await agent.ask("What is 1234 + 5678?", output=Product)
    assert result.data == Product(value=6912)
    first, answer, shape = llm.requests
    assert first.tool_choice == "required" and first.tools
    # "none": the free answer first, under the answer schema, the result repeated right before it
    assert not answer.tools and isinstance(answer.output, dict) and answer.output["required"] == ["answer"]
    last = answer.messages[-1]
    assert last.role == "user" and "6912" in last.text and "add" in last.text
    # the call's numbers are the question's (grounded arguments)
    properties = first.tools[0].parameters["properties"]
    assert properties["a"]["enum"] == properties["b"]["enum"] == [1234, 5678]
    # then that answer restated and shaped under the user's schema, its number one of the answer's
    assert not shape.tools
    assert shape.output == {
        **Product.model_json_schema(),
        "properties": {"value": {"title": "Value", "type": "integer", "enum": [6912]}},
    }
    assert shape.messages[: len(answer.messages)] == answer.messages
    assert shape.messages[-2].role == "assistant" and shape.messages[-2].text == "6912"
    assert shape.messages[-1].role == "user" and shape.messages[-1].text.startswith("Your answer: 6912.")


async def test_a_shaped_answer_that_does_not_fit_is_asked_for_again(tools: ToolManager) -> None:
    llm = ScriptedLLM(
        [tool_call("add", {"a": 2, "b": 2}), '{"answer": "4"}', '{"value": "four"}', '{"value": 4}'],
        model_name=CPU_MODEL_NAME,
    )
    agent = Agent(llm=llm, tool_manager=tools)
    assert (await agent.ask("What is 2 + 2?", output=Product)).data == Product(value=4)
    assert len(llm.requests) == 4 and llm.requests[2].messages == llm.requests[3].messages


async def test_what_the_user_sets_wins_over_the_profile(tools: ToolManager) -> None:
    llm = ScriptedLLM(["plain"], model_name=CPU_MODEL_NAME)
    agent = Agent(llm=llm, tool_manager=tools, tool_choice="auto")
    assert await agent.query("hi") == "plain"
    assert llm.requests[0].tool_choice == "auto"


async def test_other_models_keep_tool_turns_as_they_are(tools: ToolManager) -> None:
    llm = ScriptedLLM([tool_call("add", {"a": 1, "b": 2}), "3"], model_name="some/instruct-model")
    agent = Agent(llm=llm, tool_manager=tools)
    assert await agent.query("1 + 2?") == "3"
    assert llm.requests[0].tool_choice == "auto" and llm.requests[1].messages[-1].role == "tool"


async def test_the_cpu_profile_asks_one_call_and_a_free_answer_under_a_schema(tools: ToolManager) -> None:
    llm = ScriptedLLM(
        [tool_call("add", {"a": 1234, "b": 5678}), '{"answer": "The sum is 6912"}'],
        model_name=CPU_MODEL_NAME,
    )
    agent = Agent(llm=llm, tool_manager=tools)
    assert await agent.query("What is 1234 + 5678?") == "The sum is 6912"  # unwrapped for the user
    first, answer = llm.requests
    assert first.parallel_tool_calls is False
    assert isinstance(answer.output, dict) and answer.output["required"] == ["answer"]
    text = answer.output["properties"]["answer"]
    assert text["type"] == "string" and re.fullmatch(text["pattern"], "The sum is 6912")
    # the result stands last, right before the instruction
    assert answer.messages[-1].text.endswith("The result is 6912. Answer with it.")


@pytest.mark.parametrize(("max_tokens", "schema"), [(2, False), (23, False), (24, True), (None, True)])
async def test_a_json_answer_is_asked_for_only_when_max_tokens_leaves_room_for_text(
    max_tokens: int | None, schema: bool
) -> None:
    llm = ScriptedLLM(['{"answer": "hi"}' if schema else "hi"], model_name=CPU_MODEL_NAME)
    agent = Agent(llm=llm, settings=SamplingSettings(max_tokens=max_tokens))
    assert await agent.query("Say hi.") == "hi"
    output = llm.requests[0].output
    if schema:
        assert isinstance(output, dict)
        assert output["properties"]["answer"]["maxLength"] >= 8
    else:
        assert output is None


async def test_a_shaped_answer_to_a_schema_given_as_a_dict_is_the_object(tools: ToolManager) -> None:
    # The free answer "4" is valid JSON, yet not the object the schema asks for: it is shaped.
    llm = ScriptedLLM(
        [tool_call("add", {"a": 2, "b": 2}), '{"answer": "4"}', '{"value": 4}'], model_name=CPU_MODEL_NAME
    )
    agent = Agent(llm=llm, tool_manager=tools)
    schema = Product.model_json_schema()
    assert (await agent.ask("What is 2 + 2?", output=schema)).data == {"value": 4}
    assert llm.requests[-1].output == {
        **schema,
        "properties": {"value": {**schema["properties"]["value"], "enum": [4]}},
    }


async def test_the_cpu_models_answer_must_quote_the_tool_results() -> None:
    def multiply(a: int, b: int) -> dict[str, object]:
        """Multiply two integers."""
        return {"expression": f"{a} * {b}", "value": a * b, "note": "exact"}

    llm = ScriptedLLM(
        [tool_call("multiply", {"a": 1234, "b": 5678}), '{"answer": "It is 7006652"}'],
        model_name=CPU_MODEL_NAME,
    )
    agent = Agent(llm=llm, tools=[multiply])
    assert await agent.query("What is 1234 * 5678?") == "It is 7006652"
    field = llm.requests[-1].output["properties"]["answer"]  # type: ignore[index]
    # The number and the short word, in order; "1234 * 5678" has a character the pattern leaves out.
    assert field["pattern"] == "^[A-Za-z ,]{0,30}7006652[A-Za-z ,]{0,30}exact[.]?$"
    assert re.fullmatch(field["pattern"], "It is 7006652, exact.")
    assert not re.fullmatch(field["pattern"], "1234 and 7006652 exact")  # no other number first


async def test_an_answer_quotes_nothing_when_no_result_is_quotable() -> None:
    def formula(name: str) -> str:
        """A formula by its name."""
        return "E = m * c^2"

    llm = ScriptedLLM(
        [tool_call("formula", {"name": "energy"}), '{"answer": "E = m * c^2"}'], model_name=CPU_MODEL_NAME
    )
    agent = Agent(llm=llm, tools=[formula])
    assert await agent.query("Which formula gives energy?") == "E = m * c^2"
    field = llm.requests[-1].output["properties"]["answer"]  # type: ignore[index]
    assert "pattern" not in field and field["maxLength"] >= 8
