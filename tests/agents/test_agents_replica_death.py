"""A replica killed with SIGKILL while holding requests: its persistent session keeps drawing its
share of the shared subscription, yet every request is answered (by the live replica, which
receives it again under the same id) and none twice."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from agents_support import REPO, add

from argentic.agents import Agent
from argentic.llm import ChatRequest, FunctionLLM
from argentic.protocol import Answer, Question, parse_message
from argentic.testing.messagers import MakeMessager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.tools import ToolManager, ToolService

SCRIPT = str(Path(__file__).with_name("replica_process.py"))


def start_replica(mosquitto: MosquittoBroker, namespace: str) -> subprocess.Popen[str]:
    """The replica process (always the same client id), once it serves."""
    process = subprocess.Popen(
        [sys.executable, SCRIPT, str(mosquitto.port), namespace, f"{namespace}-doomed", "pair", "pair"],
        cwd=Path(SCRIPT).parent,
        env={"PYTHONPATH": f"{REPO / 'src'}:{Path(SCRIPT).parent}", "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "READY"
    return process


@pytest.fixture
def doomed(mosquitto: MosquittoBroker, namespace: str) -> Iterator[subprocess.Popen[str]]:
    process = start_replica(mosquitto, namespace)
    try:
        yield process
    finally:
        process.kill()
        process.wait(10)


async def test_no_question_is_lost_when_a_replica_dies(
    mqtt: MakeMessager, namespace: str, doomed: subprocess.Popen[str]
) -> None:
    asked: list[str] = []

    def answer(request: ChatRequest) -> str:
        asked.append(request.messages[-1].text)
        return "live"

    bus = await mqtt(client_id=f"{namespace}-live", persistent=True)
    async with Agent(llm=FunctionLLM(answer), messager=bus, role="pair"):
        client = await mqtt()
        topic = client.topics.agent_questions("pair")
        questions = [Question(text=f"q{i}") for i in range(10)]
        asking = [
            asyncio.ensure_future(client.request(topic, q, response_model=Answer, timeout=30))
            for q in questions
        ]
        await asyncio.sleep(1.0)  # the doomed replica holds its share
        doomed.kill()
        answers = await asyncio.gather(*asking)
    assert all(isinstance(a, Answer) and a.text == "live" for a in answers)
    assert sorted(asked) == sorted(q.text for q in questions)  # each answered once


async def test_no_tool_call_is_lost_when_a_replica_dies(
    mqtt: MakeMessager, namespace: str, doomed: subprocess.Popen[str]
) -> None:
    live = ToolService(await mqtt(client_id=f"{namespace}-tools", persistent=True), [add], "pair")
    async with live, ToolManager(await mqtt()) as manager:
        await manager.wait_for_tools("add")
        doomed.kill()
        results = await asyncio.gather(
            *(manager.call("add", {"a": i, "b": 1}, timeout=15) for i in range(10))
        )
    assert [r.result for r in results] == [i + 1 for i in range(10)]
    assert live.calls_served == 10


async def test_a_replica_started_again_does_not_answer_what_others_did(
    mqtt: MakeMessager, namespace: str, mosquitto: MosquittoBroker, doomed: subprocess.Popen[str]
) -> None:
    """Its resumed session still holds the calls handed to it while it was dead; their callers sent
    them again and another replica answered: the new run leaves them alone."""
    live = ToolService(await mqtt(client_id=f"{namespace}-tools", persistent=True), [add], "pair")
    caller = await mqtt()
    replies: dict[str, set[str]] = {}
    async with (
        aiomqtt.Client(mosquitto.host, mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5) as spy,
        live,
        ToolManager(caller) as manager,
    ):
        await spy.subscribe(caller.inbox, qos=1)

        async def watch() -> None:
            async for message in spy.messages:
                reply = parse_message(bytes(message.payload))  # type: ignore[arg-type]
                replies.setdefault(reply.correlation_id or "", set()).add(reply.id)

        watching = asyncio.create_task(watch())
        await manager.wait_for_tools("add")
        doomed.kill()
        doomed.wait(10)
        first = await asyncio.gather(*(manager.call("add", {"a": i, "b": 1}, timeout=15) for i in range(10)))
        assert [r.result for r in first] == [i + 1 for i in range(10)]
        again = await asyncio.to_thread(start_replica, mosquitto, namespace)
        try:
            second = await asyncio.gather(
                *(manager.call("add", {"a": i, "b": 2}, timeout=15) for i in range(10))
            )
            assert [r.result for r in second] == [i + 2 for i in range(10)]
        finally:
            again.kill()
            again.wait(10)
        watching.cancel()
    assert all(len(ids) == 1 for ids in replies.values()), replies
