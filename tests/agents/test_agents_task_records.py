"""Tasks on record: each MQTT question's task (state, asker, role, answer or error) is kept in the
store, and any client asks for it by id (``task_get``), from another replica, after reconnecting,
or from ``argentic ask --task``."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from agents_support import REPO

from argentic import Agent, AgentClient
from argentic.errors import LLMError, TaskNotFoundError
from argentic.llm import FunctionLLM, ScriptedLLM
from argentic.storage import ConversationRecords, MemoryStore, open_store
from argentic.testing.messagers import MakeMessager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.processes import command_env


async def test_a_finished_task_is_on_record_for_any_client_and_replica(mqtt: MakeMessager) -> None:
    store = MemoryStore()
    async with Agent(ScriptedLLM(["forty-two"]), await mqtt(), role="helper", store=store):
        asker = AgentClient(await mqtt(), "helper", timeout_s=20)
        answer = await asker.answer("the answer?")
    # The replica that answered is gone; another one, on the same store, answers for the record,
    # to a client that was not the asker (a process started later, say).
    async with Agent(ScriptedLLM([]), await mqtt(), role="helper", store=store):
        record = await AgentClient(await mqtt(), "helper", timeout_s=20).task(answer.question_id)
    assert record.status.state == "completed" and record.status.role == "helper"
    assert record.status.owner == asker.messager.inbox
    assert record.answer is not None and record.answer.text == "forty-two"
    assert record.answer.conversation_id == answer.conversation_id


async def test_a_failed_task_is_on_record_with_its_error(mqtt: MakeMessager) -> None:
    store = MemoryStore()
    async with Agent(
        ScriptedLLM([LLMError("the model fell over")]), await mqtt(), role="helper", store=store
    ):
        client = AgentClient(await mqtt(), "helper", timeout_s=20)
        run = client.stream("fail, please")
        async with run:
            async for _ in run:
                pass
        with pytest.raises(LLMError):
            await run.answer()
        record = await client.task(run.question.id)
    assert record.status.state == "failed" and record.answer is None
    assert record.status.error is not None and "fell over" in record.status.error.message


async def test_an_unknown_task_and_an_agent_without_a_store_say_not_found(mqtt: MakeMessager) -> None:
    async with Agent(ScriptedLLM([]), await mqtt(), role="kept", store=MemoryStore()):
        with pytest.raises(TaskNotFoundError, match="no task 'nope' on record at kept"):
            await AgentClient(await mqtt(), "kept", timeout_s=10).task("nope")
    async with Agent(ScriptedLLM(["hi"]), await mqtt(), role="forgetful"):
        client = AgentClient(await mqtt(), "forgetful", timeout_s=10)
        answer = await client.answer("hello")
        with pytest.raises(TaskNotFoundError, match="keeps no records"):
            await client.task(answer.question_id)


async def test_argentic_ask_looks_a_task_up(
    mqtt: MakeMessager, mosquitto: MosquittoBroker, namespace: str
) -> None:
    env = command_env(mosquitto.port, namespace)

    async def ask(*args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "argentic.cli.main", "ask", "--role", "helper", *args,
            cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None, err
        return process.returncode, out.decode()

    async with Agent(FunctionLLM(lambda _: "done it"), await mqtt(), role="helper", store=MemoryStore()):
        answer = await AgentClient(await mqtt(), "helper", timeout_s=20).answer("do it")
        code, out = await ask("--task", answer.question_id)
        assert code == 0 and out.strip() == "done it"
        code, out = await ask("--task", answer.question_id, "--json")
        assert code == 0 and json.loads(out)["status"]["state"] == "completed"
        code, _ = await ask("--task", "never-asked")
        assert code == 1


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_answered_questions_and_conversations_survive_kill_9_of_every_agent_process(
    backend: str,
    mosquitto: MosquittoBroker,
    namespace: str,
    mqtt: MakeMessager,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'store.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("redis_server").url
    )
    env = {
        **command_env(mosquitto.port, namespace),
        "ARGENTIC_LLM__PROVIDER": "scripted",
        "ARGENTIC_AGENT__ROLE": "keeper",
        "ARGENTIC_STORAGE__URL": url,
    }

    async def agent_process() -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "argentic.cli.main", "agent",
            cwd=REPO, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        async with asyncio.timeout(60):  # serving once it says it is online
            while not await client.online(timeout=1.0):
                assert process.returncode is None, "argentic agent exited"
        return process

    client = AgentClient(await mqtt(), "keeper", timeout_s=30)
    first = await agent_process()
    answer = await client.answer("remember me")
    first.kill()  # SIGKILL: nothing is flushed or closed
    await first.wait()
    second = await agent_process()  # a new process on the same store
    try:
        record = await client.task(answer.question_id)
        # The conversation goes on in the new process, with its whole history.
        later = await client.answer("and me", conversation_id=answer.conversation_id)
    finally:
        second.kill()
        await asyncio.wait_for(second.wait(), 60)
    assert record.status.state == "completed"
    assert record.answer is not None and record.answer.text == answer.text
    assert record.answer.conversation_id == answer.conversation_id
    assert later.conversation_id == answer.conversation_id
    async with open_store(url) as store:  # what any process reads after both were killed
        history = await ConversationRecords(store).load(f"{client.messager.inbox}\x00{later.conversation_id}")
    assert [(m.role, m.text) for m in history] == [
        ("user", "remember me"),
        ("assistant", answer.text),
        ("user", "and me"),
        ("assistant", later.text),
    ]
