"""Agent benchmark, on one mosquitto started here.

1. One tool call through the agent's tool path (agent -> tool service -> agent, no LLM) against a
   raw aiomqtt request/response with the same payloads: ``tool_rtt_p50_ms``, ``raw_rtt_p50_ms``,
   ``tool_overhead_ratio`` (goal <= 1.5).
2. 64 concurrent questions through an agent over MQTT against the real vLLM server, with the tool
   loop (a required tool call, the tool, the answer), against the same LLM calls made directly with
   the openai client: ``agent_tasks_per_min``, ``direct_tasks_per_min``, ``concurrency_ratio``
   (goal >= 0.9). The agent's requests are recorded and replayed verbatim on the direct side. A
   warm-up pass runs first, so both measured passes find the same prompts in vLLM's prefix cache.
   The sides alternate for up to ``--rounds`` rounds (fewer when they would pass ``--budget-s``);
   the ratio is of their total times; ``best_pass_ratio`` compares each side's fastest pass and
   ``round_ratios`` shows how far single rounds spread.

    uv run python bench/agent.py [--calls 1000] [--tasks 64] [--rounds 4] [--quick]
                                 [--vllm-url http://127.0.0.1:8000/v1]

Without ``--vllm-url`` (or ``$ARGENTIC_TEST_VLLM_URL``) the CPU server is started (and stopped).
``--quick`` makes 50 tool calls and asks 1 question in one round: a check that it runs.
The last line printed is JSON with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import aiomqtt
import openai
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from argentic.agents import Agent, AgentClient
from argentic.agents.loop import EventSink
from argentic.llm import (
    ChatRequest,
    ChatResponse,
    LLMFactory,
    SamplingSettings,
)
from argentic.llm.openai_provider import OpenAICompatibleProvider
from argentic.messaging import Messager
from argentic.protocol import ToolCall, ToolResult
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.vllm_server import cpu_vllm_server
from argentic.tools import ToolManager, ToolService, tool

NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
MAX_TOKENS = 48


@tool
async def echo(text: str) -> str:
    """Return the text."""
    return text


@tool
async def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def p50(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000


# --- 1. tool round trip ------------------------------------------------------------------------


async def tool_rtt(broker: MosquittoBroker, calls: int) -> list[float]:
    """Sequential tool calls through Agent.call_tool (the path the tool loop takes)."""
    async with (
        Messager(broker.host, broker.port, namespace="bench", persistent=False) as service_bus,
        Messager(broker.host, broker.port, namespace="bench", persistent=False) as agent_bus,
    ):
        service = ToolService(service_bus, [echo], "bench-tools")
        await service.start()
        tools = ToolManager(agent_bus)
        await tools.async_init()
        await tools.wait_for_tools("echo")
        agent = Agent(llm=LLMFactory.create({"provider": "scripted"}), messager=agent_bus, tool_manager=tools)
        samples = []
        for i in range(calls + 50):
            started = time.perf_counter()
            result = await agent.call_tool("echo", {"text": "ping"})
            if i >= 50:  # warm-up
                samples.append(time.perf_counter() - started)
            assert result.ok, result
        await service.stop()
        return samples


async def raw_rtt(broker: MosquittoBroker, calls: int) -> list[float]:
    """The same exchange with bare aiomqtt clients: MQTT 5 response topic + correlation data, QoS 1."""
    request = ToolCall(tool="echo", arguments={"text": "ping"}, reply_to="bench/raw/resp").to_json()
    response = ToolResult(call_id="x", tool="echo", ok=True, result="ping").to_json()
    v5 = aiomqtt.ProtocolVersion.V5
    async with (
        aiomqtt.Client(broker.host, broker.port, protocol=v5, socket_options=[NODELAY]) as responder,
        aiomqtt.Client(broker.host, broker.port, protocol=v5, socket_options=[NODELAY]) as requester,
    ):
        await responder.subscribe("bench/raw/req", qos=1)
        await requester.subscribe("bench/raw/resp", qos=1)

        async def respond() -> None:
            async for message in responder.messages:
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.CorrelationData = message.properties.CorrelationData  # type: ignore[union-attr]
                json.loads(message.payload)
                await responder.publish("bench/raw/resp", response, qos=1, properties=props)

        task = asyncio.create_task(respond())
        replies = requester.messages.__aiter__()
        samples = []
        for i in range(calls + 50):
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = "bench/raw/resp"
            props.CorrelationData = str(i).encode()
            started = time.perf_counter()
            await requester.publish("bench/raw/req", request, qos=1, properties=props)
            reply = await asyncio.wait_for(replies.__anext__(), 10)
            json.loads(reply.payload)
            if i >= 50:
                samples.append(time.perf_counter() - started)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return samples


# --- 2. concurrent questions -------------------------------------------------------------------


Recorded = dict[str, list[ChatRequest]]


class RecordingAgent(Agent):
    """Keeps every LLM request it makes, per question, to replay them directly."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: Recorded = {}

    async def call_llm(self, request: ChatRequest, events: EventSink) -> ChatResponse:
        key = next(m.text for m in request.messages if m.role == "user")
        self.recorded.setdefault(key, []).append(request)
        return await super().call_llm(request, events)


Pass = tuple[float, int, float]  # seconds, completion tokens, CPU seconds of this process


async def agent_pass(client: AgentClient, questions: list[str]) -> Pass:
    """Seconds for all questions, the completion tokens they took (an error reply raises), and the
    CPU seconds this process spent (agent, tool service and asker: everything argentic runs)."""
    cpu, started = time.process_time(), time.perf_counter()
    answers = await asyncio.gather(*(client.answer(q, timeout=900) for q in questions))
    elapsed = time.perf_counter() - started
    return elapsed, sum(a.usage.completion_tokens for a in answers), time.process_time() - cpu


async def direct_pass(llm: OpenAICompatibleProvider, model: str, recorded: Recorded) -> Pass:
    """Seconds for all tasks (each its calls in order, as the bodies the agent's provider sent),
    the completion tokens they took, and the CPU seconds this process spent."""
    client = openai.AsyncOpenAI(base_url=llm.base_url, api_key="none", max_retries=0, timeout=900)
    tokens = 0

    async def task(calls: list[ChatRequest]) -> None:
        nonlocal tokens
        for request in calls:
            completion = await client.chat.completions.create(**llm.wire_body(request, model))
            tokens += completion.usage.completion_tokens if completion.usage else 0

    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(task(calls) for calls in recorded.values()))
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed, tokens, time.process_time() - cpu


async def concurrency(
    broker: MosquittoBroker, base_url: str, model: str, tasks: int, rounds: int, budget_s: float
) -> dict[str, Any]:
    questions = [f"What is {17 + i} * {23 + 2 * i}?" for i in range(tasks)]
    llm = LLMFactory.create(
        {
            "provider": "vllm",
            "vllm_base_url": base_url,
            "vllm_model_name": model,
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
            "max_concurrency": tasks,
            "timeout_s": 900,
        }
    )
    assert isinstance(llm, OpenAICompatibleProvider)  # the vllm provider: its bodies are replayed
    async with (
        Messager(broker.host, broker.port, namespace="bench", persistent=False) as service_bus,
        Messager(broker.host, broker.port, namespace="bench", persistent=False) as agent_bus,
        Messager(broker.host, broker.port, namespace="bench", persistent=False) as client,
    ):
        service = ToolService(service_bus, [multiply], "bench-math")
        await service.start()
        tools = ToolManager(agent_bus)
        await tools.async_init()
        await tools.wait_for_tools("multiply")
        agent = RecordingAgent(
            llm=llm,
            messager=agent_bus,
            tool_manager=tools,
            role="bench",
            system_prompt="Answer with the multiply tool.",
            tool_choice="required",
            followup_tool_choice="none",
            settings=SamplingSettings(max_tokens=MAX_TOKENS, temperature=0),
        )
        await agent.async_init()
        print(f"warm-up: {tasks} questions through the agent", file=sys.stderr, flush=True)
        await agent_pass(AgentClient(client, "bench"), questions)
        recorded = {question: list(calls) for question, calls in agent.recorded.items()}
        # Alternate the sides and compare their total times: a pass's time varies by up to a third
        # from one to the next on both sides alike (vLLM's CPU threads), so neither one pair nor
        # each side's luckiest pass decides. Rounds stop early when another would overrun the
        # time budget (a slow host).
        agent_runs: list[Pass] = []
        direct_runs: list[Pass] = []
        began = time.perf_counter()
        for number in range(rounds):
            spent = time.perf_counter() - began
            if number and spent + spent / number > budget_s:
                break
            agent.recorded.clear()
            agent_runs.append(await agent_pass(AgentClient(client, "bench"), questions))
            direct_runs.append(await direct_pass(llm, model, recorded))
            print(
                f"round {number + 1}: agent {agent_runs[-1]}, direct {direct_runs[-1]} (s, tokens, CPU s)",
                file=sys.stderr,
                flush=True,
            )
        calls = sum(len(c) for c in recorded.values())
        agent_s, direct_s = sum(run[0] for run in agent_runs), sum(run[0] for run in direct_runs)
        passes = len(agent_runs)
        await agent.stop()
        await service.stop()
    await llm.close()
    return {
        "agent_tasks_per_min": round(tasks * passes / agent_s * 60, 1),
        "direct_tasks_per_min": round(tasks * passes / direct_s * 60, 1),
        "concurrency_ratio": round(direct_s / agent_s, 3),
        "best_pass_ratio": round(min(direct_runs)[0] / min(agent_runs)[0], 3),
        "round_ratios": [round(d[0] / a[0], 3) for a, d in zip(agent_runs, direct_runs, strict=True)],
        "llm_calls_per_task": round(calls / tasks, 2),
        # On 2 cores every CPU second this process spends is taken from the model server.
        "agent_cpu_ms_per_task": round(sum(run[2] for run in agent_runs) / (tasks * passes) * 1000, 2),
        "direct_cpu_ms_per_task": round(sum(run[2] for run in direct_runs) / (tasks * passes) * 1000, 2),
        "agent_completion_tokens": agent_runs[-1][1],
        "direct_completion_tokens": direct_runs[-1][1],
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with MosquittoBroker(persistence=False) as broker:
        tool = await tool_rtt(broker, args.calls)
        raw = await raw_rtt(broker, args.calls)
        figures.update(
            tool_rtt_p50_ms=round(p50(tool), 3),
            raw_rtt_p50_ms=round(p50(raw), 3),
            tool_overhead_ratio=round(p50(tool) / p50(raw), 3),
            tool_rtt_p99_ms=round(statistics.quantiles(tool, n=100)[98] * 1000, 3),
        )
        print(json.dumps(figures), file=sys.stderr, flush=True)
        if not args.skip_llm:
            with cpu_vllm_server(base_url=args.vllm_url) as server:
                url, model = server.base_url, server.model
                figures.update(await concurrency(broker, url, model, args.tasks, args.rounds, args.budget_s))
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4, help="measured passes of each side, at most")
    parser.add_argument(
        "--budget-s", type=float, default=300, help="no new round once the rounds would take longer"
    )
    parser.add_argument("--vllm-url", default=os.environ.get("ARGENTIC_TEST_VLLM_URL"))
    parser.add_argument("--skip-llm", action="store_true", help="only the tool round trip")
    parser.add_argument("--quick", action="store_true", help="a check that it runs: tiny sizes, one round")
    args = parser.parse_args()
    if args.quick:
        parser.set_defaults(calls=50, tasks=1, rounds=1)
        args = parser.parse_args()
    result = asyncio.run(main(args))
    print(json.dumps(result))
