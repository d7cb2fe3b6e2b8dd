"""A broker restart in the middle of a task loses nothing: the question, the tool call, the tool's
result and the answer all get through once mosquitto is back (persistent sessions, the outbox)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated

import pytest
from pydantic import Field

from argentic.agents import Agent
from argentic.llm import ScriptedLLM, tool_call
from argentic.messaging import Messager
from argentic.protocol import Answer, Question
from argentic.testing.messagers import MakeMessager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.waiting import wait_until
from argentic.tools import ToolManager, ToolService, tool

started = asyncio.Event()
release = asyncio.Event()


@tool
async def measure(length: Annotated[int, Field(ge=0, le=1000)]) -> int:
    """Double a length, slowly: the broker restarts while this runs."""
    started.set()
    await asyncio.wait_for(release.wait(), 60)
    return length * 2


@pytest.fixture
def buses(private_mqtt: MakeMessager, namespace: str) -> Callable[[str], Awaitable[Messager]]:
    def make(name: str) -> Awaitable[Messager]:
        # Stable client ids: their sessions (and what is queued for them) outlive the restart.
        return private_mqtt(
            client_id=f"{namespace}-{name}", reconnect_initial_delay_s=0.05, reconnect_max_delay_s=0.5
        )

    return make


async def test_a_task_survives_a_broker_restart_mid_tool_call(
    buses: Callable[[str], Awaitable[Messager]], private_mosquitto: MosquittoBroker
) -> None:
    started.clear()
    release.clear()
    service = ToolService(await buses("tools"), [measure], "restart-tools", call_timeout_s=60)
    await service.start()
    agent_bus = await buses("agent")
    manager = ToolManager(agent_bus, default_timeout_s=60)
    await manager.async_init()
    await manager.wait_for_tools("measure")
    llm = ScriptedLLM([tool_call("measure", {"length": 21}), "done", "still here"])
    agent = Agent(llm=llm, messager=agent_bus, tool_manager=manager, role="surveyor", tool_timeout_s=60)
    await agent.async_init()
    client = await buses("client")
    topic = client.topics.agent_questions("surveyor")

    asking = asyncio.create_task(
        client.request(topic, Question(text="Double 21."), response_model=Answer, timeout=90)
    )
    await asyncio.wait_for(started.wait(), 30)  # the tool runs: the task is in the middle
    await asyncio.to_thread(private_mosquitto.restart)  # SIGTERM: mosquitto saves its sessions
    release.set()  # the result is published while the clients are still reconnecting

    answer = await asyncio.wait_for(asking, 90)
    assert isinstance(answer, Answer)
    assert [(c.name, c.ok, c.result) for c in answer.tool_calls] == [("measure", True, 42)]
    assert answer.text == "done"

    # and everyone keeps serving after the restart
    again = await client.request(topic, Question(text="Still there?"), response_model=Answer, timeout=30)
    assert isinstance(again, Answer) and again.text == "still here"
    await agent.stop()
    await service.stop()


async def test_a_tool_result_outlives_a_long_broker_restart(
    buses: Callable[[str], Awaitable[Messager]], private_mosquitto: MosquittoBroker
) -> None:
    """mosquitto sends every client's will when it stops: the tool service is reported gone while
    the broker is down for longer than the withdrawal grace, yet its result is still coming."""
    started.clear()
    release.clear()
    service = ToolService(await buses("tools"), [measure], "long-restart", call_timeout_s=60)
    await service.start()
    manager = ToolManager(await buses("caller"), default_timeout_s=60)
    await manager.async_init()
    await manager.wait_for_tools("measure")

    calling = asyncio.create_task(manager.call("measure", {"length": 5}))
    await asyncio.wait_for(started.wait(), 30)
    await asyncio.to_thread(private_mosquitto.restart, down_for=4.0)
    release.set()

    result = await asyncio.wait_for(calling, 60)
    assert result.ok and result.result == 10, result.error
    # and the tools are known again once the service is back, without waiting for it to announce
    await wait_until(lambda: "measure" in manager.tools, limit_s=10)
    again = await manager.call("measure", {"length": 1}, timeout=20)
    assert again.ok and again.result == 2
    await service.stop()
