"""Resume instead of redo: a replica killed (SIGKILL) after a tool's result and before its answer
leaves its finished steps in the store; the question, sent again to a live replica, continues from
there, and the tool is not run a second time."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from agents_support import REPO

from argentic import Agent, AgentClient, ToolManager, ToolService, tool
from argentic.llm import ChatRequest, FunctionLLM, LLMToolCall
from argentic.llm.scripted import tool_call
from argentic.protocol import Progress
from argentic.storage import ConversationRecords, open_store
from argentic.testing.messagers import MakeMessager
from argentic.testing.mosquitto import MosquittoBroker

SCRIPT = Path(__file__).with_name("resume_replica_process.py")


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_a_question_resumes_after_its_replica_dies_without_rerunning_a_tool(
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
    runs: list[int] = []

    @tool
    def count() -> int:
        """Counts its calls (a side effect that must happen once)."""
        runs.append(len(runs) + 1)
        return 7006652

    live_requests: list[ChatRequest] = []

    def answer_from_results(request: ChatRequest) -> str | LLMToolCall:
        live_requests.append(request)
        last = request.messages[-1]
        return f"counted {last.text}" if last.role == "tool" else tool_call("count", {})

    doomed = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), str(mosquitto.port), namespace, "counter", url,
        cwd=SCRIPT.parent,
        env={"PYTHONPATH": f"{REPO / 'src'}:{SCRIPT.parent}", "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert doomed.stdout is not None
        assert await asyncio.wait_for(doomed.stdout.readline(), 30) == b"READY\n"
        async with ToolService(await mqtt(), [count], "counting"):
            client = AgentClient(await mqtt(), "counter", timeout_s=60)
            async with client.stream("count, once") as run:
                seen = await asyncio.wait_for(doomed.stdout.readline(), 30)
                assert seen == b"RESULT_SEEN\n" and runs == [1]
                async with (
                    open_store(url) as store,
                    ToolManager(await mqtt()) as tools,
                    Agent(
                        FunctionLLM(answer_from_results),
                        await mqtt(),
                        tools,
                        "counter",
                        store=ConversationRecords(store, lease_ttl_s=1.5),
                    ),
                ):
                    doomed.kill()  # between the tool's result and the answer
                    events = [event async for event in run]
                    answer = await run.answer()
    finally:
        if doomed.returncode is None:
            doomed.kill()
        await asyncio.wait_for(doomed.wait(), 10)
    assert runs == [1]  # the tool ran once, in the dead replica's step
    assert answer.text == "counted 7006652"
    assert [c.name for c in answer.tool_calls] == ["count"] and answer.tool_calls[0].result == 7006652
    # The live replica's first model request already held the tool's result: it resumed.
    assert live_requests and live_requests[0].messages[-1].role == "tool"
    assert not [e for e in events if isinstance(e, Progress) and e.stage == "tool_call"][1:]
