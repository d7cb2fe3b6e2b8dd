"""Observability overhead: concurrent questions through an agent with metrics and tracing on,
against off, in one run on one mosquitto started here. Each question takes the tool loop: a model
call that calls ``multiply`` (a tool service over MQTT), the tool, a model call that answers.

"On" records every metric, serves ``/metrics`` (scraped once a round) and makes every span through
the OpenTelemetry SDK (a batch processor to an exporter that counts them) with the trace context
sent in each request; "off" records and traces nothing. Rounds alternate off and on; the medians
of their wall times give the ratio on / off.

- ``overhead_ratio`` (goal <= 1.05): ``bench/agent.py``'s questions on the CPU vLLM server (a
  required tool call, then the answer), ``--llm-questions`` at once;
- ``overhead_ratio_scripted``: the same loop with a scripted model that costs nothing, so the
  ratio is observability against the framework's own work alone (the worst case; no goal).

    uv run python bench/observe.py [--questions 400] [--concurrency 32] [--rounds 5]
        [--llm-questions 32] [--llm-rounds 3] [--vllm-url URL] [--skip-llm] [--quick]

Without ``--vllm-url`` (or ``$ARGENTIC_TEST_VLLM_URL``) the CPU server is started (and stopped).
``--quick`` asks a few questions in one round of each, with no warm-up: a check that it runs.
The last line printed is JSON with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import urllib.request
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from argentic.agents import Agent, AgentClient
from argentic.llm import ChatRequest, FunctionLLM, LLMFactory, LLMProvider, SamplingSettings, tool_call
from argentic.llm.types import LLMToolCall
from argentic.messaging import Messager
from argentic.observability import MetricsServer, metrics, tracing
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.vllm_server import cpu_vllm_server
from argentic.tools import ToolManager, ToolService, tool

#: Output tokens of each model call on the CPU model, as bench/agent.py.
MAX_TOKENS = 48


@tool
async def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def think(request: ChatRequest) -> str | LLMToolCall:
    results = [m for m in request.messages if m.role == "tool"]
    return results[-1].text if results else tool_call("multiply", {"a": 6, "b": 7})


class CountingExporter(SpanExporter):
    """Takes spans and keeps only their number: the SDK's work without an exporter's I/O."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


async def ask_all(
    client: AgentClient, questions: Sequence[str], concurrency: int, expect: str | None
) -> float:
    """Seconds to answer ``questions``, ``concurrency`` at a time (an error reply raises)."""
    slots = asyncio.Semaphore(concurrency)

    async def one(question: str) -> None:
        async with slots:
            answer = await client.answer(question, timeout=900)
            assert expect is None or answer.text == expect, answer.text

    started = time.perf_counter()
    await asyncio.gather(*(one(q) for q in questions))
    return time.perf_counter() - started


async def on_against_off(
    broker: MosquittoBroker,
    llm: LLMProvider,
    agent_options: dict[str, Any],
    questions: Sequence[str],
    concurrency: int,
    rounds: int,
    expect: str | None,
    warm_ups: int = 1,
) -> tuple[list[float], list[float]]:
    """Wall times of ``rounds`` passes with observability off and on, alternating."""
    times: dict[str, list[float]] = {"off": [], "on": []}

    def bus() -> Messager:
        return Messager(broker.host, broker.port, namespace="bench-observe", persistent=False)

    async with (
        MetricsServer(port=0) as probes,
        bus() as service_bus,
        ToolService(service_bus, [multiply], "math"),
        bus() as agent_bus,
        ToolManager(agent_bus) as tools,
        bus() as client_bus,
        Agent(llm=llm, messager=agent_bus, tool_manager=tools, role="bench", max_tasks=256, **agent_options),
    ):
        await tools.wait_for_tools("multiply")
        client = AgentClient(client_bus, "bench")
        metrics.set_enabled(True)
        tracing.set_enabled(True)
        for _ in range(warm_ups):  # the model server's first passes at a new load are slower
            await ask_all(client, questions[:concurrency], concurrency, expect)
        assert probes.port is not None
        for number in range(rounds):
            for mode in ("off", "on"):
                metrics.set_enabled(mode == "on")
                tracing.set_enabled(mode == "on")
                times[mode].append(await ask_all(client, questions, concurrency, expect))
                if mode == "on":
                    page = await asyncio.to_thread(scrape, probes.port)
                    assert 'argentic_questions_total{outcome="ok",role="bench"}' in page
            print(
                f"round {number + 1}: off {times['off'][-1]:.2f} s, on {times['on'][-1]:.2f} s",
                file=sys.stderr,
                flush=True,
            )
    return times["off"], times["on"]


def ratio(off: list[float], on: list[float]) -> float:
    return round(statistics.median(on) / statistics.median(off), 3)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    exporter = CountingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    figures: dict[str, Any] = {}
    with MosquittoBroker(persistence=False) as broker:
        print("scripted model", file=sys.stderr, flush=True)
        off, on = await on_against_off(
            broker,
            FunctionLLM(think, model_name="scripted"),
            {},
            [f"6 x 7, take {i}" for i in range(args.questions)],
            args.concurrency,
            args.rounds,
            expect="42",
        )
        figures.update(
            scripted_off_questions_per_s=round(args.questions / statistics.median(off), 1),
            scripted_on_questions_per_s=round(args.questions / statistics.median(on), 1),
            overhead_ratio_scripted=ratio(off, on),
        )
        print(json.dumps(figures), file=sys.stderr, flush=True)
        if not args.skip_llm:
            with cpu_vllm_server(base_url=args.vllm_url) as server:
                llm = LLMFactory.create(
                    {"provider": "vllm", "vllm_base_url": server.base_url, "vllm_model_name": server.model,
                     "max_concurrency": args.llm_questions, "timeout_s": 900}
                )  # fmt: skip
                async with llm:
                    print(f"CPU vLLM model, {args.llm_questions} at once", file=sys.stderr, flush=True)
                    off, on = await on_against_off(
                        broker,
                        llm,
                        {
                            "system_prompt": "Answer with the multiply tool.",
                            "tool_choice": "required",
                            "followup_tool_choice": "none",
                            "settings": SamplingSettings(max_tokens=MAX_TOKENS, temperature=0),
                        },
                        [f"What is {17 + i} * {23 + 2 * i}?" for i in range(args.llm_questions)],
                        args.llm_questions,
                        args.llm_rounds,
                        expect=None,  # what the model writes is not this benchmark's business
                        warm_ups=0 if args.quick else 2,
                    )
                figures.update(
                    off_questions_per_min=round(args.llm_questions / statistics.median(off) * 60, 1),
                    on_questions_per_min=round(args.llm_questions / statistics.median(on) * 60, 1),
                    overhead_ratio=ratio(off, on),
                )
    provider.shutdown()  # exports what the batch still holds
    figures["spans_exported"] = exporter.spans
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=400, help="questions a round, scripted model")
    parser.add_argument("--concurrency", type=int, default=32, help="questions asked at once, scripted model")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds of each mode, scripted model")
    parser.add_argument("--llm-questions", type=int, default=32, help="questions a round (all at once), vLLM")
    parser.add_argument("--llm-rounds", type=int, default=4, help="measured rounds of each mode, vLLM")
    parser.add_argument("--vllm-url", default=os.environ.get("ARGENTIC_TEST_VLLM_URL"))
    parser.add_argument("--skip-llm", action="store_true", help="only the scripted model")
    parser.add_argument("--quick", action="store_true", help="a check that it runs: tiny sizes, one round")
    args = parser.parse_args()
    if args.quick:
        parser.set_defaults(questions=16, concurrency=4, rounds=1, llm_questions=2, llm_rounds=1)
        args = parser.parse_args()
    result = asyncio.run(main(args))
    print(json.dumps(result))
