"""An agent's error reply reaches the AgentClient as its code's class, on a real mosquitto: a
caller can ``except DeadlineError``, ``except TaskCanceledError``, ``except LLMUnavailableError``,
and ``except AgentReplyError`` (with ``.code`` and the agent's words) keeps working."""

from __future__ import annotations

import asyncio

import pytest
from agents_support import add
from team_support import config, model, team

from argentic import Agent, AgentClient, ToolManager, ToolService
from argentic.errors import (
    AgentReplyError,
    DeadlineError,
    InternalError,
    LLMUnavailableError,
    StepLimitError,
    TaskCanceledError,
    ToolTimeoutError,
)
from argentic.llm import ScriptedLLM, tool_call
from argentic.protocol import TaskStatus
from argentic.testing.messagers import MakeMessager

UNREACHABLE = "cannot reach the model server at http://127.0.0.1:9/v1: start it (argentic serve)"


async def test_an_unreachable_model_raises_llm_unavailable(mqtt: MakeMessager) -> None:
    llm = ScriptedLLM()
    async with Agent(llm=llm, messager=await mqtt(), role="calc"):
        client = AgentClient(await mqtt(), "calc", timeout_s=30)
        llm.add(LLMUnavailableError(UNREACHABLE))
        with pytest.raises(LLMUnavailableError) as caught:
            await client.ask("2 + 2?")
        assert isinstance(caught.value, AgentReplyError)
        assert caught.value.code == "llm_unavailable" and caught.value.reason == UNREACHABLE
        # The streamed run raises the same, from wait() and from .answer.
        llm.add(LLMUnavailableError(UNREACHABLE))
        async with client.stream("again") as run:
            async for _ in run:
                pass
        with pytest.raises(LLMUnavailableError):
            await run.answer()
        with pytest.raises(LLMUnavailableError):
            await run.query()


async def test_a_step_limit_and_a_bug_raise_their_classes(mqtt: MakeMessager) -> None:
    bus = await mqtt()
    llm = ScriptedLLM()
    async with (
        ToolService(bus, [add], "math"),
        ToolManager(bus) as tools,
        Agent(llm=llm, messager=bus, tool_manager=tools, role="calc", max_steps=2),
    ):
        await tools.wait_for_tools("add")
        client = AgentClient(await mqtt(), "calc", timeout_s=30)
        llm.add(*[tool_call("add", {"a": i, "b": 1}) for i in range(2)])
        with pytest.raises(StepLimitError) as limit:
            await client.ask("loop")
        assert limit.value.code == "step_limit" and llm.remaining == 0
        llm.add(KeyError("oops"))
        with pytest.raises(InternalError) as bug:
            await client.ask("crash")
        assert bug.value.code == "internal" and bug.value.reason == "KeyError: 'oops'"


async def test_a_passed_deadline_raises_deadline_error(mqtt: MakeMessager, namespace: str) -> None:
    async def never(_text: str, _results: list[str]) -> str:
        await asyncio.sleep(3600)
        return "late"

    async with team(config(namespace, {"slow": {}}), await mqtt(), {"slow": model(never)}):
        client = AgentClient(await mqtt(), "slow", timeout_s=30)
        with pytest.raises(DeadlineError) as caught:
            await client.ask("take your time", deadline_s=1.0)
    assert isinstance(caught.value, AgentReplyError) and isinstance(caught.value, TimeoutError)
    assert caught.value.code == "deadline" and "deadline" in caught.value.reason


async def test_a_cancel_raises_task_canceled_error(mqtt: MakeMessager, namespace: str) -> None:
    working = asyncio.Event()

    async def hangs(_text: str, _results: list[str]) -> str:
        working.set()
        await asyncio.sleep(3600)
        return "late"

    async with team(config(namespace, {"slow": {}}), await mqtt(), {"slow": model(hangs)}):
        client = AgentClient(await mqtt(), "slow", timeout_s=30)
        async with client.stream("work") as run:
            async for event in run:
                if isinstance(event, TaskStatus) and event.state == "working":
                    await asyncio.wait_for(working.wait(), 10)
                    await run.cancel("not needed any more")
        with pytest.raises(TaskCanceledError) as caught:
            await run.answer()
    assert isinstance(caught.value, AgentReplyError)
    assert caught.value.code == "canceled" and "not needed any more" in caught.value.reason


async def test_tools_not_announced_in_time_raise_tool_timeout(mqtt: MakeMessager) -> None:
    async with ToolManager(await mqtt()) as tools:
        with pytest.raises(ToolTimeoutError, match="nothing_here not announced") as caught:
            await tools.wait_for_tools("nothing_here", timeout=0.2)
    assert isinstance(caught.value, TimeoutError)  # what callers caught before
