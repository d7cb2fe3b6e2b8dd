"""Ask-back is an agent option: a plain ``Agent`` or a ``VisualAgent`` with ``ask_back=True`` puts
its task in ``input-required`` and goes on with its asker's ``task_input``, on a real mosquitto with
scripted models; without the option the model is not offered the tool."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from team_support import asks_back, model

from argentic.agents.agent import Agent
from argentic.agents.client import AgentClient
from argentic.agents.delegation import Directory
from argentic.agents.visual_agent import VisualAgent
from argentic.config import AgentConfig, AgentOptions
from argentic.llm import FunctionLLM
from argentic.protocol import TaskStatus
from argentic.testing.messagers import MakeMessager
from argentic.video import TestPatternSource


@pytest.fixture
async def pattern() -> AsyncIterator[TestPatternSource]:
    source = TestPatternSource(64, 48, fps=30)
    await source.start()
    await source.wait_for_frame(10)
    yield source
    await source.stop()


async def answer_asking_back(client: AgentClient, text: str, given: str) -> tuple[str, list[str], list[str]]:
    """Ask ``text``, answering each input request with ``given``: (answer, states, what was asked)."""
    states: list[str] = []
    asked: list[str] = []
    async with client.stream(text, timeout=30) as run:
        async for event in run:
            if isinstance(event, TaskStatus):
                states.append(event.state)
                if event.state == "input-required":
                    asked.append(event.text or "")
                    await run.give_input(event, given)
        answer = await run.answer()
    return answer.text, states, asked


async def test_a_plain_agent_with_ask_back_asks_its_asker_and_uses_the_input(mqtt: MakeMessager) -> None:
    llm = model(asks_back("which file?"))
    async with Agent(llm, await mqtt(), role="solo", ask_back=True):
        client = AgentClient(await mqtt(), "solo")
        text, states, asked = await answer_asking_back(client, "review my change", "main.py")
        presence = await client.messager.shared(Directory).presence("solo", timeout=10)
    assert text == 'reviewed "main.py"'
    assert asked == ["which file?"]
    assert states == ["submitted", "working", "input-required", "working", "completed"]
    assert presence is not None and presence.card is not None and presence.card.asks_back
    assert "ask_back" in [tool.name for tool in llm.requests[0].tools]


async def test_a_visual_agent_with_ask_back_asks_its_asker_and_uses_the_input(
    mqtt: MakeMessager, pattern: TestPatternSource
) -> None:
    llm = model(asks_back("which corner?"))
    options = AgentOptions(ask_back=True)
    async with VisualAgent(llm, await mqtt(), source=pattern, role="eyes", options=options) as agent:
        client = AgentClient(await mqtt(), "eyes")
        text, states, asked = await answer_asking_back(client, "what is in the corner?", "top left")
    assert text == 'reviewed "top left"'
    assert asked == ["which corner?"]
    assert states == ["submitted", "working", "input-required", "working", "completed"]
    assert agent.card is not None and agent.card.asks_back
    assert llm.requests[0].messages[-1].images  # the question went with a frame


async def test_without_ask_back_the_tool_is_not_offered(mqtt: MakeMessager) -> None:
    llm = FunctionLLM(lambda request: "no questions")
    async with Agent.from_config(AgentConfig(role="quiet"), llm=llm, messager=await mqtt()) as agent:
        answer = await AgentClient(await mqtt(), "quiet").query("review my change", timeout=30)
    assert answer == "no questions"
    assert agent.delegation is None and agent.card is not None and not agent.card.asks_back
    assert "ask_back" not in [tool.name for tool in llm.requests[0].tools]


async def test_the_agent_section_enables_ask_back(mqtt: MakeMessager) -> None:
    llm = model(asks_back("which file?"))
    section = AgentConfig(role="helper", ask_back=True, delegate_timeout_s=20)
    async with Agent.from_config(section, llm=llm, messager=await mqtt()) as agent:
        text, _, _ = await answer_asking_back(AgentClient(await mqtt(), "helper"), "review it", "a.py")
    assert text == 'reviewed "a.py"'
    assert agent.delegation is not None and agent.delegation.timeout_s == 20
