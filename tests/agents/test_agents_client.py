"""AgentClient on a real mosquitto (and the in-memory broker): answers as text or a model, events as
an async iterator, error replies and timeouts as exceptions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from agents_support import add
from pydantic import BaseModel

from argentic import Agent, AgentClient, ToolManager, ToolService, describe_event
from argentic.errors import AgentReplyError, RequestTimeoutError
from argentic.llm import ScriptedLLM, tool_call
from argentic.protocol import Progress, TaskStatus, Token
from argentic.testing.messagers import MakeMessager


class Sum(BaseModel):
    value: int


@pytest.fixture(params=["mosquitto", "memory"])
async def setup(
    request: pytest.FixtureRequest, mqtt: MakeMessager, memory: MakeMessager
) -> AsyncIterator[tuple[AgentClient, ScriptedLLM]]:
    make = mqtt if request.param == "mosquitto" else memory
    bus = await make()
    llm = ScriptedLLM()
    async with (
        ToolService(bus, [add], "math"),
        ToolManager(bus) as tools,
        Agent(llm=llm, messager=bus, tool_manager=tools, role="calc"),
    ):
        await tools.wait_for_tools("add")
        yield AgentClient(await make(), "calc", timeout_s=30), llm


async def test_ask_gives_text_or_a_validated_model(setup: tuple[AgentClient, ScriptedLLM]) -> None:
    client, llm = setup
    llm.add("four", "four again")
    assert await client.query("2 + 2?") == "four"
    assert await client.ask("2 + 2?") == "four again"  # the older name
    llm.add(tool_call("add", {"a": 2, "b": 2}), '{"value": 4}')
    result = await client.query("2 + 2?", output=Sum)
    # data comes back only when the question carried the model's schema
    assert isinstance(result, Sum) and result.value == 4


async def test_stream_yields_the_events_then_the_answer(setup: tuple[AgentClient, ScriptedLLM]) -> None:
    client, llm = setup
    llm.add(tool_call("add", {"a": 20, "b": 22}), "42")
    async with client.stream("20 + 22?", tokens=True) as run:
        events = [event async for event in run]
    stages = [e.stage for e in events if isinstance(e, Progress)]
    assert stages[:3] == ["llm_call", "tool_call", "tool_result"], stages
    assert [e.state for e in events if isinstance(e, TaskStatus)][:2] == ["submitted", "working"]
    assert "".join(e.text for e in events if isinstance(e, Token)) == "42"
    answer = await run.answer()
    assert answer.text == "42" and [c.result for c in answer.tool_calls] == [42]
    assert await run.query() == "42"
    call = next(e for e in events if isinstance(e, Progress) and e.stage == "tool_call")
    assert describe_event(call) == 'tool_call add {"a": 20, "b": 22}'


async def test_an_error_reply_raises_with_its_code(setup: tuple[AgentClient, ScriptedLLM]) -> None:
    client, llm = setup
    llm.add(*[tool_call("add", {"a": i, "b": 1}) for i in range(20)])
    with pytest.raises(AgentReplyError) as caught:
        await client.ask("loop forever")
    assert caught.value.code == "step_limit"
    async with client.stream("again") as run:
        async for _ in run:
            pass
    with pytest.raises(AgentReplyError):
        await run.answer()


async def test_no_agent_times_out(mqtt: MakeMessager) -> None:
    client = AgentClient(await mqtt(), "nobody", timeout_s=0.5)
    assert not await client.online(timeout=0.2)
    with pytest.raises(RequestTimeoutError):
        await client.ask("anyone?")
