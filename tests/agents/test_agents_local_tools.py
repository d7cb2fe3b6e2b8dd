"""Local tools: ``Agent(tools=[fn])`` calls plain functions in its own process, without a broker
hop, through the path a tool service takes (same results, same errors); remote tools stay on the
broker. Scripted models for the rules, mosquitto for the MQTT face, the CPU vLLM server for a real
model's guided call."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from agents_support import add, cpu_model, explode, hang

from argentic import Agent, AgentClient
from argentic.errors import ArgumentError
from argentic.llm.scripted import ScriptedLLM, tool_call
from argentic.testing.messagers import MakeMessager
from argentic.tools import LocalTools, ToolManager, ToolService, tool

calls_on: list[str] = []


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    calls_on.append(threading.current_thread().name)
    return a * b


async def test_a_plain_function_is_a_local_tool_called_in_process() -> None:
    llm = ScriptedLLM([tool_call("multiply", {"a": 6, "b": 7}), "42"])
    async with Agent(llm=llm, tools=[multiply]) as agent:
        result = await agent.ask("What is 6 * 7?")
    assert [(c.name, c.ok, c.result) for c in result.tool_calls] == [("multiply", True, 42)]
    # The model was offered the function with its signature as the schema.
    offered = llm.requests[0].tools or []
    assert [t.name for t in offered] == ["multiply"]
    assert offered[0].parameters["required"] == ["a", "b"]
    assert offered[0].description == "Multiply two integers."
    # A sync function runs off the event loop.
    assert calls_on and calls_on[-1] != threading.main_thread().name


async def test_local_failures_are_results_the_model_reads() -> None:
    llm = ScriptedLLM(
        [
            [
                tool_call("add", {"a": "x", "b": 1}, id="c1"),
                tool_call("explode", {"reason": "kaput"}, id="c2"),
                tool_call("hang", {}, id="c3"),
                tool_call("nope", {}, id="c4"),
            ],
            "done",
        ]
    )
    async with Agent(llm=llm, tools=[add, explode, hang], max_repeated_calls=4) as agent:
        result = await agent.ask("try them")
    errors = {c.name: c.error or "" for c in result.tool_calls}
    assert all(not c.ok for c in result.tool_calls)
    assert "invalid arguments for add" in errors["add"]
    assert "kaput" in errors["explode"]
    assert "did not finish within 0.3 s" in errors["hang"]
    assert "no tool 'nope'" in errors["nope"]
    # The model's second request carries the four results back.
    assert sum(m.role == "tool" for m in llm.requests[1].messages) == 4


def test_two_local_tools_may_not_share_a_name() -> None:
    @tool(name="add")
    def other(a: int) -> int:
        """Another add."""
        return a

    with pytest.raises(ArgumentError, match="two local tools are named 'add'"):
        LocalTools([add, other])
    with pytest.raises(TypeError, match="annotation"):
        LocalTools([lambda x: x])  # a function needs typed parameters to become a tool


async def test_local_tools_come_first_and_remote_tools_stay_on_the_broker(mqtt: MakeMessager) -> None:
    @tool(name="add")
    def remote_add(a: int, b: int) -> int:
        """Add two integers (remotely)."""
        return -1

    @tool
    def subtract(a: int, b: int) -> int:
        """Subtract b from a."""
        return a - b

    service_bus, agent_bus, client_bus = await mqtt(), await mqtt(), await mqtt()
    llm = ScriptedLLM(
        [
            [tool_call("add", {"a": 2, "b": 3}, id="c1"), tool_call("subtract", {"a": 9, "b": 4}, id="c2")],
            "5 and 5",
        ]
    )
    async with (
        ToolService(service_bus, [remote_add, subtract], "remote-math"),
        ToolManager(agent_bus) as tools,
        Agent(llm=llm, messager=agent_bus, tool_manager=tools, tools=[add], role="mixed"),
    ):
        await tools.wait_for_tools("add", "subtract")
        answer = await AgentClient(client_bus, "mixed", timeout_s=20).answer("2 + 3 and 9 - 4?")
    results = {c.name: c.result for c in answer.tool_calls}
    assert results == {"add": 5, "subtract": 5}  # add ran here (the remote one returns -1)
    assert [t.name for t in llm.requests[0].tools or []] == ["add", "subtract"]  # offered once each


async def test_many_local_calls_at_once_are_bounded() -> None:
    running = 0
    most = 0

    async def busy(n: int) -> int:
        """Hold a slot a moment."""
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1
        return n

    local = LocalTools([busy], max_concurrent_calls=3)
    results = await asyncio.gather(*(local.call("busy", {"n": i}) for i in range(12)))
    assert [r.result for r in results] == list(range(12)) and all(r.ok for r in results)
    assert most == 3


@pytest.mark.vllm
async def test_the_cpu_model_calls_a_local_tool_that_validates(vllm_server: Any) -> None:
    async with (
        cpu_model(vllm_server) as llm,
        Agent(llm=llm, tools=[add], system_prompt="You add numbers with the add tool.") as agent,
    ):
        result = await agent.ask("What is 1234 + 5678?")
    # The CPU model's profile makes the first call guided: it names a tool and its arguments
    # validate, so the function ran here and returned their sum.
    assert result.tool_calls, result
    first = result.tool_calls[0]
    assert first.name == "add" and first.ok, first
    assert first.result == first.arguments["a"] + first.arguments["b"]
