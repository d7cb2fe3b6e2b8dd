"""The older names of the API keep working as thin shims: each warns with a DeprecationWarning
that points at the caller's line and gives the same object or value as the newer name, which
warns about nothing."""

from __future__ import annotations

import warnings

import pytest

from argentic import Agent, AgentClient
from argentic.agents import tasks
from argentic.agents.agent import AgentResult
from argentic.agents.delegation import Directory
from argentic.agents.tasks import AgentTask, TaskBoard, running_task
from argentic.agents.visual_agent import VisualAgent
from argentic.errors import ArgumentError, UsageError
from argentic.llm import ScriptedLLM
from argentic.messaging import Messager
from argentic.protocol import Answer
from argentic.storage import Claim, Lease, Once, open_store
from argentic.testing.messagers import MakeMessager
from argentic.video import TestPatternSource


def deprecations(caught: list[warnings.WarningMessage]) -> list[str]:
    """The deprecations among ``caught`` that point at this file (a library's own do not count)."""
    mine = [w for w in caught if w.filename == __file__]
    return [str(w.message) for w in mine if issubclass(w.category, DeprecationWarning)]


def test_task_and_current_task_are_older_names_of_agent_task_and_running_task() -> None:
    with pytest.warns(DeprecationWarning, match=r"tasks\.Task is deprecated: use AgentTask") as seen:
        assert tasks.Task is AgentTask
    assert seen[0].filename == __file__
    with pytest.warns(DeprecationWarning, match=r"tasks\.current_task is deprecated: use running_task"):
        from argentic.agents.tasks import current_task
    assert current_task is running_task
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = tasks.no_such_name


async def test_of_is_the_older_spelling_of_shared(memory: MakeMessager) -> None:
    messager = await memory()
    with pytest.warns(DeprecationWarning, match=r"TaskBoard\.of\(messager\) is deprecated") as seen:
        assert TaskBoard.of(messager) is messager.shared(TaskBoard)
    assert seen[0].filename == __file__
    with pytest.warns(DeprecationWarning, match=r"Directory\.of\(messager\) is deprecated"):
        assert Directory.of(messager) is messager.shared(Directory)


async def test_the_older_names_of_a_run_and_of_online(memory: MakeMessager) -> None:
    llm = ScriptedLLM(["one"])
    async with Agent(llm=llm, messager=await memory(), role="older"):
        client = AgentClient(await memory(), "older", timeout_s=30)
        with pytest.warns(
            DeprecationWarning, match=r"online\(wait_s=\.\.\.\) is deprecated: pass timeout="
        ) as seen:
            assert await client.online(wait_s=5)
        assert seen[0].filename == __file__
        async with client.stream("one?") as run:
            _ = [event async for event in run]
        with pytest.warns(DeprecationWarning, match=r"AgentRun\.wait\(\) is deprecated") as seen:
            whole = await run.wait()
        assert seen[0].filename == __file__
        assert isinstance(whole, Answer) and whole == await run.answer()
        with pytest.warns(DeprecationWarning, match=r"AgentRun\.result\(\) is deprecated"):
            assert await run.result() == "one"
        # `answer` was a property: a field read off it is still the arrived answer's.
        with pytest.warns(DeprecationWarning, match=r"run\.answer\.text is deprecated") as seen:
            assert run.answer.text == "one"
        assert seen[0].filename == __file__
        with pytest.warns(DeprecationWarning, match=r"run\.answer\.question_id is deprecated"):
            assert run.answer.question_id == whole.question_id == run.question.id
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert (await run.answer()).text == "one" and await run.query() == "one"
            assert await client.online(timeout=5)
        assert not deprecations(caught), "the newer names warn about nothing"
        with pytest.warns(DeprecationWarning), pytest.raises(ArgumentError, match="not both"):
            await client.online(timeout=1, wait_s=2)
    early = AgentClient(Messager(), "older").stream("too early?")
    with pytest.warns(DeprecationWarning), pytest.raises(UsageError, match="async with"):
        _ = early.answer.text


async def test_ask_with_video_is_the_older_name_of_answer_with_video() -> None:
    source = TestPatternSource(160, 120, fps=15)
    await source.start()
    try:
        agent = VisualAgent(llm=ScriptedLLM(["older", "newer"]), source=source)
        with pytest.warns(
            DeprecationWarning, match=r"ask_with_video\(\) is deprecated: use answer_with_video"
        ) as seen:
            result = await agent.ask_with_video("What do you see?", conversation_id="c1")
        assert seen[0].filename == __file__
        assert isinstance(result, AgentResult) and result.text == "older" and result.conversation_id == "c1"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            newer = await agent.answer_with_video("And now?", conversation_id="c1")
        assert not deprecations(caught)
        assert isinstance(newer, AgentResult) and newer.text == "newer"
    finally:
        await source.stop()


async def test_a_per_call_wait_is_timeout_and_wait_s_its_older_name() -> None:
    async with open_store("memory://") as store:
        holder = Lease(store, "lease:k", ttl_s=30)
        assert await holder.acquire()
        other = Lease(store, "lease:k", ttl_s=30)
        with pytest.warns(DeprecationWarning, match=r"Lease\.acquire\(wait_s=\.\.\.\) is deprecated") as seen:
            assert not await other.acquire(wait_s=0.05)
        assert seen[0].filename == __file__
        assert not await other.acquire(timeout=0.05)
        await holder.release()

        once = Once(store)
        with pytest.warns(DeprecationWarning, match=r"Once\.take\(wait_s=\.\.\.\) is deprecated"):
            claim = await once.take("q1", wait_s=0.05)
        assert isinstance(claim, Claim)
        assert await once.take("q1", timeout=0.05) is None  # the claim holds it
        with pytest.warns(DeprecationWarning), pytest.raises(ArgumentError, match="not both"):
            await once.take("q1", timeout=1, wait_s=2)
        await claim.release()
