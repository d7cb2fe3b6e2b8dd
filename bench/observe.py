"""Observability overhead: concurrent questions through an agent (a scripted model that calls a
tool, then answers; the tool in a tool service over MQTT) with metrics and tracing on, against off,
in one run on one mosquitto started here.

"On" records every metric, serves ``/metrics`` (scraped once a round) and makes every span through
the OpenTelemetry SDK (a batch processor to an exporter that counts them) with the trace context
sent in each request; "off" records and traces nothing. Rounds alternate off and on; the medians
of their wall times give ``overhead_ratio`` = on / off (goal <= 1.05).

    uv run python bench/observe.py [--questions 400] [--concurrency 32] [--rounds 5] [--quick]

``--quick`` asks 16 questions, 4 at a time, in one round of each: a check that it runs.
The last line printed is JSON with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import urllib.request
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from argentic.agents import Agent, AgentClient
from argentic.llm import ChatRequest, FunctionLLM, tool_call
from argentic.llm.types import LLMToolCall
from argentic.messaging import Messager
from argentic.observability import MetricsServer, metrics, tracing
from argentic.testing.mosquitto import MosquittoBroker
from argentic.tools import ToolManager, ToolService, tool


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


async def ask_all(client: AgentClient, questions: int, concurrency: int) -> float:
    """Seconds to answer ``questions``, ``concurrency`` at a time."""
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with slots:
            answer = await client.ask(f"6 x 7, take {i}", timeout=60)
            assert answer == "42", answer

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(questions)))
    return time.perf_counter() - started


async def main(args: argparse.Namespace) -> dict[str, Any]:
    exporter = CountingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    times: dict[str, list[float]] = {"off": [], "on": []}
    with MosquittoBroker(persistence=False) as broker:

        def bus() -> Messager:
            return Messager(broker.host, broker.port, namespace="bench-observe", persistent=False)

        async with (
            MetricsServer(port=0) as probes,
            bus() as service_bus,
            ToolService(service_bus, [multiply], "math"),
            bus() as agent_bus,
            ToolManager(agent_bus) as tools,
            bus() as client_bus,
        ):
            await tools.wait_for_tools("multiply")
            llm = FunctionLLM(think, model_name="scripted")
            async with Agent(llm=llm, messager=agent_bus, tool_manager=tools, role="bench", max_tasks=256):
                client = AgentClient(client_bus, "bench")
                await ask_all(client, args.concurrency, args.concurrency)  # warm-up
                assert probes.port is not None
                for _ in range(args.rounds):
                    for mode in ("off", "on"):
                        metrics.set_enabled(mode == "on")
                        tracing.set_enabled(mode == "on")
                        times[mode].append(await ask_all(client, args.questions, args.concurrency))
                        if mode == "on":
                            page = await asyncio.to_thread(scrape, probes.port)
                            assert 'argentic_questions_total{outcome="ok",role="bench"}' in page
    provider.shutdown()  # exports what the batch still holds
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    return {
        "questions": args.questions,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "off_questions_per_s": round(args.questions / off, 1),
        "on_questions_per_s": round(args.questions / on, 1),
        "spans_exported": exporter.spans,
        "overhead_ratio": round(on / off, 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=400, help="questions a round")
    parser.add_argument("--concurrency", type=int, default=32, help="questions asked at once")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds of each mode")
    parser.add_argument("--quick", action="store_true", help="a check that it runs: tiny sizes, one round")
    args = parser.parse_args()
    if args.quick:
        parser.set_defaults(questions=16, concurrency=4, rounds=1)
        args = parser.parse_args()
    result = asyncio.run(main(args))
    print(json.dumps(result))
