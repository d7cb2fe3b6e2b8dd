"""Two real CPU vLLM servers behind one endpoint: requests spread and stick by prefix; one server
killed with SIGKILL in the middle of concurrent questions (some streamed) loses none, and a stream
goes on from what its reader already has; the server, started again, takes work again.

The first server is the session's ``vllm_server``, the second its ``spare_vllm_server``, which may be
killed."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest

from argentic.config import LLMServerConfig
from argentic.llm import ChatRequest, SamplingSettings, StreamEnd, TextDelta
from argentic.llm.local_server import VLLMServer, launch_plan
from argentic.llm.openai_provider import OpenAICompatibleProvider
from argentic.testing.waiting import wait_until

pytestmark = pytest.mark.vllm

# Every answer runs its 16 tokens (no early end), so a stream is still going when its server dies.
LONG = SamplingSettings(max_tokens=16, temperature=0, extra_body={"min_tokens": 16, "ignore_eos": True})
SHORT = SamplingSettings(max_tokens=2, temperature=0)


async def start(port: int) -> VLLMServer:
    config = LLMServerConfig(port=port, startup_timeout_s=300)
    plan = await asyncio.to_thread(launch_plan, config)
    return await VLLMServer(plan, startup_timeout_s=300).astart()


@pytest.fixture
async def second(spare_vllm_server: VLLMServer) -> AsyncIterator[list[VLLMServer]]:
    """The session's spare server, which this test kills (a list: the test replaces it then)."""
    held = [spare_vllm_server]
    yield held
    for server in held:
        await server.aclose()


def ask(role: int, question: str, settings: SamplingSettings = SHORT) -> ChatRequest:
    system = f"You are agent role number {role}. Answer in one short line."
    return ChatRequest.user(question, system=system, settings=settings)


async def test_two_servers_spread_stick_fail_over_and_take_work_again(
    vllm_server: Any, second: list[VLLMServer]
) -> None:
    spare = second[0]
    urls = [vllm_server.base_url, spare.base_url]
    llm = OpenAICompatibleProvider(
        base_url=urls[0],
        base_urls=urls,
        timeout_s=60,
        max_retries=3,
        retry_delay_s=0.2,
        health_interval_s=0.5,
        affinity_overflow=64,  # here: stickiness only
    )
    async with llm:
        pool = llm.pool

        def served() -> list[int]:
            return [s["requests"] for s in pool.status()]

        # Both servers up and warm first: a cold server's first request on a busy host may
        # outlast a check and be failed over, which would count as a request to both.
        await wait_until(lambda: all(s["up"] for s in pool.status()), limit_s=120, what="both servers up")
        for url in urls:
            async with OpenAICompatibleProvider(base_url=url, timeout_s=300) as single:
                assert (await single.chat(ask(99, "Name a colour."))).finish_reason
        # The model's name is read once, from whichever server: not during the count below.
        assert await llm.resolve_model()

        # Spread and stick: each role's requests go to one server, the roles to both.
        where: dict[int, set[int]] = {}
        for _ in range(2):
            for role in range(8):
                before = served()
                assert (await llm.chat(ask(role, "Name a colour."))).finish_reason
                after = served()
                where.setdefault(role, set()).update(i for i in range(2) if after[i] > before[i])
        assert all(len(servers) == 1 for servers in where.values()), where
        assert {next(iter(s)) for s in where.values()} == {0, 1}
        spare_roles = [role for role, servers in where.items() if servers == {1}]

        # Eight questions at once, half streamed, most on the server that is killed mid-answer.
        before_kill: dict[int, str] = {}
        received: dict[int, str] = {}
        ends: dict[int, list[str | None]] = {}

        async def streamed(index: int, request: ChatRequest) -> str | None:
            text = ""
            ends[index] = []
            async for event in llm.stream(request):
                if isinstance(event, TextDelta):
                    text += event.text
                    received[index] = text
                elif isinstance(event, StreamEnd):
                    ends[index].append(event.response.content)
            return text

        async def whole(request: ChatRequest) -> str | None:
            return (await llm.chat(request)).content

        roles = [spare_roles[i % len(spare_roles)] for i in range(6)] + [
            r for r in where if r not in spare_roles
        ][:2]
        calls = [
            streamed(i, ask(role, f"Tell me about the number {i}.", LONG))
            if i % 2 == 0
            else whole(ask(role, f"Tell me about the number {i}.", LONG))
            for i, role in enumerate(roles)
        ]
        tasks = [asyncio.ensure_future(call) for call in calls]
        on_spare = (0, 2, 4)  # streams of the spare's roles
        await wait_until(lambda: any(received.get(i) for i in on_spare), 300, "streamed tokens")
        before_kill.update(received)
        assert spare.pid is not None
        os.killpg(spare.pid, signal.SIGKILL)
        answers = await asyncio.gather(*tasks)

        assert all(answers), answers  # every question answered
        for index, end in ends.items():
            assert len(end) == 1  # once
            assert end[0] == answers[index] == received[index]  # the reader saw exactly the answer
            assert received[index].startswith(before_kill.get(index, ""))  # with no gap and no repeat
        assert not pool.status()[1]["up"] and pool.status()[1]["failures"] >= 1
        # at least one stream was cut off on the killed server and went on elsewhere
        assert any(before_kill.get(i) and received[i] != before_kill[i] for i in on_spare), (
            before_kill,
            received,
        )

        # Started again on its port, it is probed back and its roles return to it.
        await spare.astop()  # reaps the killed process
        second.append(await start(spare.port))
        await wait_until(lambda: pool.status()[1]["up"], 60, "the restarted server back in the pool")
        before = served()[1]
        for role in spare_roles:
            assert (await llm.chat(ask(role, "Name a colour."))).finish_reason
        assert served()[1] - before == len(spare_roles)
