"""The A2A gateway in front of a team on mosquitto, driven by the a2a-sdk's own client."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest
from a2a.helpers import get_message_text
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    TaskState,
    TaskStatusUpdateEvent,
)
from a2a.utils.errors import (
    InvalidParamsError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from gateway_support import a2a_client, card_of, request, task_id_of
from google.protobuf.json_format import MessageToDict
from team_support import answers, asks, asks_back, config, member_process, model, team

from argentic import Agent
from argentic.gateway import Gateway
from argentic.llm import FunctionLLM, ScriptedLLM
from argentic.storage import MemoryStore
from argentic.testing.messagers import MakeMessager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.waiting import wait_until


async def test_a_delegation_tree_streams_as_status_and_artifact_updates(
    mqtt: MakeMessager, namespace: str
) -> None:
    cfg = config(
        namespace,
        {
            "architect": {"description": "designs", "delegates": ["developer"]},
            "developer": {"description": "writes the code"},
        },
    )
    models = {
        "architect": model(asks("ask_developer", "write add()", then="plan")),
        "developer": model(answers("code")),
    }
    async with team(cfg, await mqtt(), models), Gateway(await mqtt()) as gateway:
        await wait_until(lambda: gateway.roster.online("developer") is not None, what="the team online")
        async with a2a_client(gateway, "architect") as client:
            pass
            card = await card_of(gateway, "architect")
            streamed = [r async for r in client.send_message(request("build a calculator"))]
    assert card.name == "architect" and card.description == "designs"
    assert "asks:developer" in [s.id for s in card.skills]
    statuses = [r.status_update for r in streamed if r.HasField("status_update")]
    own = [s.status.state for s in statuses if _argentic(s).get("role") == "architect"]
    assert own[0] == TaskState.TASK_STATE_SUBMITTED and TaskState.TASK_STATE_WORKING in own
    assert statuses[-1].status.state == TaskState.TASK_STATE_COMPLETED
    # The sub-task's statuses arrive too, on the same A2A task.
    sub = [_argentic(s) for s in statuses if _argentic(s).get("role") == "developer"]
    assert [s["state"] for s in sub] == ["submitted", "working", "completed"]
    assert {s["asked_by"] for s in sub} == {"architect"}
    assert len({task_id_of(r) for r in streamed}) == 1
    artifacts = [r.artifact_update.artifact for r in streamed if r.HasField("artifact_update")]
    answer = next(a for a in artifacts if a.name == "answer")
    assert answer.parts[0].text == 'plan: "code: write add()"'
    # The answer's tokens streamed as chunks of one artifact.
    tokens = "".join(a.parts[0].text for a in artifacts if a.name == "tokens")
    assert tokens == answer.parts[0].text


async def test_message_send_then_tasks_get(mqtt: MakeMessager, namespace: str) -> None:
    cfg = config(namespace, {"echo": {}})
    async with team(cfg, await mqtt(), {"echo": model(answers("echo"))}), Gateway(await mqtt()) as gateway:
        await wait_until(lambda: gateway.roster.online("echo") is not None, what="the role online")
        async with a2a_client(gateway, "echo", streaming=False) as client:
            replies = [r async for r in client.send_message(request("hello"))]
            task = replies[-1].task
            got = await client.get_task(GetTaskRequest(id=task.id))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert [a.parts[0].text for a in task.artifacts if a.name == "answer"] == ["echo: hello"]
    assert got.status.state == TaskState.TASK_STATE_COMPLETED


async def test_cancel_through_a2a_cancels_the_argentic_task(mqtt: MakeMessager, namespace: str) -> None:
    working = asyncio.Event()
    stopped: list[str] = []

    async def hangs(text: str, _results: list[str]) -> str:
        working.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stopped.append(text)
            raise
        return "late"

    cfg = config(namespace, {"slow": {}})
    async with team(cfg, await mqtt(), {"slow": model(hangs)}), Gateway(await mqtt()) as gateway:
        await wait_until(lambda: gateway.roster.online("slow") is not None, what="the role online")
        async with a2a_client(gateway, "slow") as client:
            stream = client.send_message(request("think forever"))
            first = await anext(stream)
            task_id = task_id_of(first)
            await asyncio.wait_for(working.wait(), 10)
            canceled = await client.cancel_task(CancelTaskRequest(id=task_id))
            await stream.aclose()
        await wait_until(lambda: stopped == ["think forever"], what="the model call to stop")
    assert canceled.status.state == TaskState.TASK_STATE_CANCELED


async def test_an_ask_back_is_answered_by_a_follow_up_message(mqtt: MakeMessager, namespace: str) -> None:
    cfg = config(namespace, {"reviewer": {"ask_back": True}})
    async with (
        team(cfg, await mqtt(), {"reviewer": model(asks_back("which file?"))}),
        Gateway(await mqtt()) as gateway,
    ):
        await wait_until(lambda: gateway.roster.online("reviewer") is not None, what="the role online")
        async with a2a_client(gateway, "reviewer") as client:
            first = [r async for r in client.send_message(request("review my change"))]
            asked = first[-1].status_update
            task_id, context_id = asked.task_id, asked.context_id
            then = [r async for r in client.send_message(request("main.py", task_id, context_id))]
    assert asked.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    assert get_message_text(asked.status.message) == "which file?"
    last = then[-1]
    assert _state(last) == TaskState.TASK_STATE_COMPLETED
    assert {task_id_of(r) for r in then} == {task_id}
    answers_ = [r.artifact_update.artifact for r in then if r.HasField("artifact_update")]
    assert [a.parts[0].text for a in answers_ if a.name == "answer"] == ['reviewed "main.py"']


async def test_a_blocking_send_returns_at_an_ask_back_and_its_answer_ends_the_task(
    mqtt: MakeMessager, namespace: str
) -> None:
    cfg = config(namespace, {"reviewer": {"ask_back": True}})
    async with (
        team(cfg, await mqtt(), {"reviewer": model(asks_back("which file?"))}),
        Gateway(await mqtt()) as gateway,
    ):
        await wait_until(lambda: gateway.roster.online("reviewer") is not None, what="the role online")
        async with a2a_client(gateway, "reviewer", streaming=False) as client:
            asked = [r async for r in client.send_message(request("review my change"))][-1].task
            done = [r async for r in client.send_message(request("main.py", asked.id, asked.context_id))]
    assert asked.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    assert get_message_text(asked.status.message) == "which file?"
    finished = done[-1].task
    assert finished.id == asked.id and finished.status.state == TaskState.TASK_STATE_COMPLETED
    assert [a.parts[0].text for a in finished.artifacts if a.name == "answer"] == ['reviewed "main.py"']
    # The history: the question, the ask-back, the input, in that order.
    assert [get_message_text(m) for m in finished.history][:3] == [
        "review my change",
        "which file?",
        "main.py",
    ]


async def test_a_role_gone_offline_fails_the_task_clearly(mqtt: MakeMessager, namespace: str) -> None:
    cfg = config(namespace, {"once": {}})
    async with Gateway(await mqtt()) as gateway:
        async with team(cfg, await mqtt(), {"once": model(answers("once"))}):
            await wait_until(lambda: gateway.roster.online("once") is not None, what="the role online")
            card = await card_of(gateway, "once")
        await wait_until(lambda: gateway.roster.online("once") is None, what="the role offline")
        async with a2a_client(gateway, "once") as client:
            replies = [r async for r in client.send_message(request("still there?"))]
    assert card.name == "once"
    assert _state(replies[-1]) == TaskState.TASK_STATE_FAILED
    assert "no agent of role 'once' is online" in get_message_text(replies[-1].status_update.status.message)


def _state(response: StreamResponse) -> int:
    if response.HasField("task"):
        return response.task.status.state
    return response.status_update.status.state


def _argentic(update: TaskStatusUpdateEvent) -> dict[str, Any]:
    """The argentic task status an A2A status update carries (of the task, or of a sub-task)."""
    meta = MessageToDict(update.metadata)
    return dict(meta.get("argentic", {}))


async def test_a_role_killed_mid_task_fails_the_a2a_task(
    mqtt: MakeMessager, mosquitto: MosquittoBroker, namespace: str
) -> None:
    member = member_process(mosquitto.port, namespace, "lone")
    try:
        assert member.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(member.stdout.readline), 30)
        assert line.strip() == b"READY"
        async with Gateway(await mqtt()) as gateway:
            await wait_until(lambda: gateway.roster.online("lone") is not None, what="the role online")
            async with a2a_client(gateway, "lone") as client:
                streamed: list[StreamResponse] = []
                async for response in client.send_message(request("are you there?")):
                    streamed.append(response)
                    if response.HasField("status_update") and _argentic(response.status_update).get(
                        "state"
                    ) == ("working"):
                        os.kill(member.pid, signal.SIGKILL)
    finally:
        if member.poll() is None:
            member.kill()
        member.wait(10)
    assert _state(streamed[-1]) == TaskState.TASK_STATE_FAILED
    assert "the lone role went offline" in get_message_text(streamed[-1].status_update.status.message)


async def test_tasks_get_reads_the_roles_record_when_it_keeps_a_store(mqtt: MakeMessager) -> None:
    async with Agent(ScriptedLLM(["forty-two"]), await mqtt(), role="kept", store=MemoryStore()):
        async with Gateway(await mqtt()) as first:
            await wait_until(lambda: first.roster.online("kept") is not None, what="the role online")
            async with a2a_client(first, "kept", streaming=False) as client:
                replies = [r async for r in client.send_message(request("the answer?"))]
        task_id = replies[-1].task.id
        # Another gateway, which saw nothing of the task, answers from the role's record.
        async with Gateway(await mqtt()) as second:
            await wait_until(lambda: second.roster.online("kept") is not None, what="the role online")
            async with a2a_client(second, "kept", streaming=False) as client:
                got = await client.get_task(GetTaskRequest(id=task_id))
    assert got.id == task_id and got.status.state == TaskState.TASK_STATE_COMPLETED
    assert [a.parts[0].text for a in got.artifacts if a.name == "answer"] == ["forty-two"]


async def test_a_busy_refusal_is_a2a_rejected(mqtt: MakeMessager) -> None:
    release = asyncio.Event()

    async def slow(_request: object) -> str:
        await asyncio.wait_for(release.wait(), 30)
        return "done"

    async with (
        Agent(FunctionLLM(slow), await mqtt(), role="solo", max_tasks=1, max_waiting_tasks=0),
        Gateway(await mqtt()) as gateway,
    ):
        await wait_until(lambda: gateway.roster.online("solo") is not None, what="the role online")
        async with a2a_client(gateway, "solo") as client:
            first = client.send_message(request("one"))
            async for response in first:  # until the agent works on the first task
                if response.HasField("status_update") and _argentic(response.status_update).get("state") == (
                    "working"
                ):
                    break
            refused = [r async for r in client.send_message(request("two"))]
            release.set()
            done = [r async for r in first]
    assert _state(refused[-1]) == TaskState.TASK_STATE_REJECTED
    assert get_message_text(refused[-1].status_update.status.message).startswith("busy")
    assert _state(done[-1]) == TaskState.TASK_STATE_COMPLETED


async def test_a_task_sent_at_once_is_resubscribed_listed_and_kept(mqtt: MakeMessager) -> None:
    release = asyncio.Event()

    async def waits(_request: object) -> str:
        await asyncio.wait_for(release.wait(), 30)
        return "finished"

    async with (
        Agent(FunctionLLM(waits), await mqtt(), role="slowly"),
        Gateway(await mqtt()) as gateway,
    ):
        await wait_until(lambda: gateway.roster.online("slowly") is not None, what="the role online")
        async with (
            a2a_client(gateway, "slowly", streaming=False) as sender,
            a2a_client(gateway, "slowly") as watcher,
        ):
            at_once = request("take your time", context_id="ctx-1")
            at_once.configuration.return_immediately = True
            sent = [r async for r in sender.send_message(at_once)]
            task_id = sent[-1].task.id
            watched = watcher.subscribe(SubscribeToTaskRequest(id=task_id))
            first = await anext(watched)
            release.set()
            rest = [r async for r in watched]
            listed = await sender.list_tasks(ListTasksRequest(context_id="ctx-1", include_artifacts=True))
            other = await sender.list_tasks(ListTasksRequest(context_id="ctx-2"))
            with pytest.raises(TaskNotCancelableError):
                await sender.cancel_task(CancelTaskRequest(id=task_id))
            with pytest.raises(UnsupportedOperationError):
                [r async for r in sender.send_message(request("more?", task_id, "ctx-1"))]
            with pytest.raises(TaskNotFoundError):
                [r async for r in sender.send_message(request("who?", "no-such-task"))]
    assert sent[-1].task.status.state == TaskState.TASK_STATE_SUBMITTED
    assert first.task.id == task_id
    assert _state(rest[-1]) == TaskState.TASK_STATE_COMPLETED
    answers_ = [r.artifact_update.artifact for r in rest if r.HasField("artifact_update")]
    assert [a.parts[0].text for a in answers_ if a.name == "answer"] == ["finished"]
    assert [t.id for t in listed.tasks] == [task_id]
    assert listed.tasks[0].status.state == TaskState.TASK_STATE_COMPLETED
    # The answer's tokens, kept as one artifact chunk by chunk, and the answer.
    kept = {a.name: "".join(p.text for p in a.parts) for a in listed.tasks[0].artifacts}
    assert kept == {"tokens": "finished", "answer": "finished"}
    assert list(other.tasks) == []


async def test_tasks_list_pages_through_the_tasks_newest_first(mqtt: MakeMessager) -> None:
    async with (
        Agent(ScriptedLLM(["one", "two", "three"]), await mqtt(), role="lister"),
        Gateway(await mqtt()) as gateway,
    ):
        await wait_until(lambda: gateway.roster.online("lister") is not None, what="the role online")
        async with a2a_client(gateway, "lister", streaming=False) as client:
            sent = []
            for text in ("a", "b", "c"):
                sent.append([r async for r in client.send_message(request(text))][-1].task.id)
            first = await client.list_tasks(ListTasksRequest(page_size=2))
            rest = await client.list_tasks(ListTasksRequest(page_size=2, page_token=first.next_page_token))
            with pytest.raises(InvalidParamsError):
                await client.list_tasks(ListTasksRequest(page_size=0))
    assert [t.id for t in first.tasks] == [sent[2], sent[1]] and first.total_size == 3
    assert [t.id for t in rest.tasks] == [sent[0]] and rest.next_page_token == ""
    assert all(t.status.state == TaskState.TASK_STATE_COMPLETED for t in [*first.tasks, *rest.tasks])
