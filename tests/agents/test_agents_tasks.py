"""Every agent's questions are tasks with an owner, on a real mosquitto with scripted models:
cancel, deadline and states for a plain Agent and a VisualAgent; only the asker cancels or gives
input; forged statuses are not believed; a chain of roles does not deadlock when handlers are few."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from team_support import answers, asks, asks_back, config, model, team

from argentic.agents.agent import Agent
from argentic.agents.client import AgentClient
from argentic.agents.delegation import Directory
from argentic.agents.tasks import TaskBoard
from argentic.agents.visual_agent import VisualAgent
from argentic.errors import AgentReplyError
from argentic.llm import FunctionLLM
from argentic.messaging import Messager
from argentic.protocol import Answer, Cancel, ErrorReply, Question, TaskInput, TaskStatus
from argentic.testing.messagers import MakeMessager
from argentic.testing.waiting import wait_until
from argentic.video import TestPatternSource


def hanging(started: asyncio.Event, stopped: list[str]) -> FunctionLLM:
    """A model that never answers until cancelled (noting what it was asked)."""

    async def reply(request: object) -> str:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stopped.append("stopped")
            raise
        return "late"

    return FunctionLLM(reply)


@contextlib.asynccontextmanager
async def serving(kind: str, llm: FunctionLLM, messager: Messager) -> AsyncIterator[Agent]:
    """An agent of role ``solo`` serving on ``messager``: a plain one, or a visual one watching a
    test pattern (whose questions carry a frame)."""
    if kind == "plain":
        async with Agent(llm, messager, role="solo") as agent:
            yield agent
        return
    source = TestPatternSource(64, 48, fps=30)
    await source.start()
    try:
        await source.wait_for_frame(10)
        async with VisualAgent(llm, messager, source=source, role="solo") as visual:
            yield visual
    finally:
        await source.stop()


@pytest.mark.parametrize("kind", ["plain", "visual"])
async def test_an_agent_publishes_task_states_and_honours_its_askers_cancel(
    kind: str, mqtt: MakeMessager
) -> None:
    started, stopped = asyncio.Event(), []
    async with serving(kind, hanging(started, stopped), await mqtt()):
        client = AgentClient(await mqtt(), "solo")
        seen: list[TaskStatus] = []
        async with client.stream("think", timeout=30) as run:
            async for event in run:
                if isinstance(event, TaskStatus):
                    seen.append(event)
                    if event.state == "working":
                        await asyncio.wait_for(started.wait(), 10)
                        await run.cancel("not needed")
        with pytest.raises(AgentReplyError) as caught:
            await run.answer()
        await wait_until(lambda: stopped == ["stopped"], what="the model call to stop")
    assert caught.value.code == "canceled" and "not needed" in caught.value.reason
    assert [s.state for s in seen] == ["submitted", "working", "canceled"]
    assert all(s.owner == client.messager.inbox and s.role == "solo" for s in seen)


@pytest.mark.parametrize("kind", ["plain", "visual"])
async def test_an_agent_honours_the_deadline(kind: str, mqtt: MakeMessager) -> None:
    started, stopped = asyncio.Event(), []
    async with serving(kind, hanging(started, stopped), await mqtt()):
        client = AgentClient(await mqtt(), "solo")
        began = time.monotonic()
        with pytest.raises(AgentReplyError) as caught:
            await client.ask("think", deadline_s=1.0, timeout=30)
        waited = time.monotonic() - began
        await wait_until(lambda: stopped == ["stopped"], what="the model call to stop")
    assert caught.value.code == "deadline"
    assert waited < 20  # the deadline ended it, not the client's timeout


async def test_an_asker_that_stops_waiting_cancels_the_task(mqtt: MakeMessager) -> None:
    started, stopped = asyncio.Event(), []
    async with Agent(hanging(started, stopped), await mqtt(), role="solo"):
        client = AgentClient(await mqtt(), "solo")
        asking = asyncio.ensure_future(client.ask("think", timeout=60))
        await asyncio.wait_for(started.wait(), 10)
        asking.cancel()  # what Ctrl-C does to `argentic ask`
        with pytest.raises(asyncio.CancelledError):
            await asking
        await wait_until(lambda: stopped == ["stopped"], what="the agent to stop working on it")


async def test_only_the_asker_may_cancel(mqtt: MakeMessager) -> None:
    release = asyncio.Event()

    async def slow(request: object) -> str:
        await asyncio.wait_for(release.wait(), 30)
        return "finished"

    async with Agent(FunctionLLM(slow), await mqtt(), role="solo"):
        asker, intruder = AgentClient(await mqtt(), "solo"), await mqtt()
        async with asker.stream("work", timeout=30) as run:
            async for event in run:
                if isinstance(event, TaskStatus) and event.state == "working":
                    break
            # Another client names the same question: it is refused, and the task goes on.
            refusal = await intruder.request(
                intruder.topics.agent_cancel("solo"),
                Cancel(question_id=run.question.id, reason="mine now"),
                response_model=Answer,
                timeout=10,
            )
            release.set()
            answer = await run.answer()
    assert isinstance(refusal, ErrorReply) and refusal.error.code == "forbidden"
    assert answer.text == "finished"


async def test_two_askers_with_one_question_id_keep_their_own_tasks(mqtt: MakeMessager) -> None:
    gate: dict[str, asyncio.Event] = {"first": asyncio.Event(), "second": asyncio.Event()}

    async def waits(request: object) -> str:
        text = request.messages[-1].text  # type: ignore[attr-defined]
        await asyncio.wait_for(gate[text].wait(), 30)
        return f"answer to {text}"

    async with Agent(FunctionLLM(waits), await mqtt(), role="solo"):
        first, second = AgentClient(await mqtt(), "solo"), AgentClient(await mqtt(), "solo")
        q1 = Question(id="same-id", text="first")
        q2 = Question(id="same-id", text="second")
        seen: dict[str, list[TaskStatus]] = {"first": [], "second": []}

        async def follow(client: AgentClient, question: Question, name: str) -> object:
            async with client.stream(question, timeout=30) as run:
                async for event in run:
                    if isinstance(event, TaskStatus):
                        seen[name].append(event)
                        if name == "first" and event.state == "working":
                            await client.cancel(question.id, "first asker gives up")
            try:
                return await run.answer()
            except AgentReplyError as exc:
                return exc

        second_run = asyncio.ensure_future(follow(second, q2, "second"))
        await wait_until(lambda: any(s.state == "working" for s in seen["second"]), what="second working")
        first_outcome = await follow(first, q1, "first")
        gate["second"].set()
        second_outcome = await second_run
    assert isinstance(first_outcome, AgentReplyError) and first_outcome.code == "canceled"
    assert isinstance(second_outcome, Answer) and second_outcome.text == "answer to second"
    assert [s.state for s in seen["second"]] == ["submitted", "working", "completed"]
    assert all(s.owner == second.messager.inbox for s in seen["second"])
    assert all(s.owner == first.messager.inbox for s in seen["first"])


async def test_only_the_asker_gives_input_and_forged_statuses_are_not_believed(
    mqtt: MakeMessager, namespace: str
) -> None:
    reviewer = asks_back("which file?")
    cfg = config(namespace, {"reviewer": {"ask_back": True}})
    async with team(cfg, await mqtt(), {"reviewer": model(reviewer)}):
        client = AgentClient(await mqtt(), "reviewer")
        forger = await mqtt()
        forger_inbox = f"{namespace}/clients/forger/inbox"
        believed: list[TaskStatus] = []
        asked_back = 0
        async with (
            forger.messages(forger_inbox, model=ErrorReply) as refusals,
            client.stream("review it", timeout=30) as run,
        ):
            events_topic = forger.topics.agent_events("reviewer", run.question.id)
            async for event in run:
                if not isinstance(event, TaskStatus):
                    continue
                believed.append(event)
                if event.state == "working" and len(believed) == 2:
                    # A forged completion and a forged input request, from another client.
                    for state in ("completed", "input-required"):
                        forged = TaskStatus(
                            question_id=run.question.id,
                            state=state,  # type: ignore[arg-type]
                            role="reviewer",
                            client_id=forger.client_id,
                            owner=client.messager.inbox,
                            text="forged",
                            reply_to=forger_inbox,
                        )
                        await forger.publish(events_topic, forged)
                if event.state == "input-required":
                    asked_back += 1
                    if asked_back == 1:
                        # Another client answers first: refused, and the asker is asked again.
                        evil = TaskInput(
                            question_id=event.question_id,
                            text="evil.py",
                            reply_to=forger_inbox,
                            correlation_id=event.correlation_id,
                        )
                        await forger.publish(event.reply_to, evil)  # type: ignore[arg-type]
                        async with asyncio.timeout(10):
                            refusal = await anext(aiter(refusals))
                    else:
                        await run.give_input(event, "main.py")
            answer = await run.answer()
    assert answer.text == 'reviewed "main.py"'
    assert refusal.error.code == "forbidden"
    assert asked_back == 2
    assert all(s.client_id != forger.client_id for s in believed)
    assert believed[-1].state == "completed" and believed[-1].text == answer.text


async def test_a_chain_of_roles_with_few_handlers_answers_every_root(
    mqtt: MakeMessager, namespace: str
) -> None:
    cfg = config(
        namespace,
        {"lead": {"delegates": ["developer"]}, "developer": {"delegates": ["reviewer"]}, "reviewer": {}},
    )
    models = {
        "lead": model(asks("ask_developer", "build it", then="lead")),
        "developer": model(asks("ask_reviewer", "check it", then="developer")),
        "reviewer": model(answers("ok")),
    }
    roots = 30
    # 4 handlers for 30 roots x 3 roles: a waiting parent must not hold one.
    async with team(cfg, await mqtt(max_concurrent_handlers=4), models):
        client = AgentClient(await mqtt(), "lead")
        answers_ = await asyncio.gather(*(client.answer(f"task {i}", timeout=120) for i in range(roots)))
    assert len(answers_) == roots
    # Each root's answer carries its developer's, which carries the reviewer's.
    assert {a.text for a in answers_} == {'lead: "developer: \\"ok: check it\\""'}
    assert all(a.tool_calls and all(c.ok for c in a.tool_calls) for a in answers_)


async def test_an_agent_holding_all_the_tasks_it_may_refuses_more(mqtt: MakeMessager) -> None:
    release = asyncio.Event()

    async def slow(request: object) -> str:
        await asyncio.wait_for(release.wait(), 30)
        return "done"

    async with Agent(FunctionLLM(slow), await mqtt(), role="solo", max_tasks=1, max_waiting_tasks=1):
        client = AgentClient(await mqtt(), "solo")
        first = asyncio.ensure_future(client.answer("one", timeout=30))
        second = asyncio.ensure_future(client.answer("two", timeout=30))
        await asyncio.sleep(0.5)
        with pytest.raises(AgentReplyError) as refused:
            await client.answer("three", timeout=30)
        release.set()
        done = await asyncio.gather(first, second)
    assert refused.value.code == "busy"
    assert [a.text for a in done] == ["done", "done"]


async def test_what_a_messager_shares_it_closes(mqtt: MakeMessager, namespace: str) -> None:
    messager = await mqtt()
    directory = messager.shared(Directory)
    board = messager.shared(TaskBoard)
    assert messager.shared(Directory) is directory
    await board.serve("solo")
    assert await directory.presence("nobody", timeout=0.1) is None
    assert directory._subscriptions and board._roles
    await messager.disconnect()
    assert not directory._subscriptions and not board._roles
    assert messager.shared(Directory) is not directory  # a new connection starts afresh
