"""What streaming through an agent over MQTT adds to reading the model's stream directly.

The same streamed request (the same messages, ``--tokens`` output tokens forced with
``ignore_eos``, temperature 0) goes to the CPU vLLM server two ways, alternating, in one run:

- **direct**: the raw ``openai`` client reads the server's SSE stream;
- **agent**: an ``AgentClient.stream(tokens=True)`` asks an agent over mosquitto; the agent streams
  from the same server and publishes each piece as a ``token`` event.

Added latency per token: the agent's provider notes when each piece arrives from the server, the
client when the matching ``token`` event arrives over MQTT (one process, one clock); the
difference is what the agent, the messager and the broker add (p50 and p99 over every token of
every round; goal p50 < 2 ms, p99 < 10 ms). Time to first token: each way's median from sending to
the first piece, as a ratio agent / direct (goal <= 1.1).

usage: uv run python bench/stream.py [--vllm-url URL] [--rounds 6] [--tokens 24] [--quick]
Last line: {"added_p50_ms": ..., "added_p99_ms": ..., "first_token_ratio": ...}
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator

import openai

from argentic.agents import Agent, AgentClient
from argentic.llm import ChatRequest, SamplingSettings, StreamEvent, TextDelta
from argentic.llm.openai_provider import OpenAICompatibleProvider
from argentic.messaging import Messager
from argentic.protocol import Token
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.vllm_server import cpu_vllm_server

SYSTEM = "You write lists."
PROMPT = "List the colours of the rainbow, one per line."


class TimedProvider(OpenAICompatibleProvider):
    """The vLLM provider, noting when each piece of streamed text arrives from the server."""

    arrivals: list[float]

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.arrivals = []
        async for event in super().stream(request):
            if isinstance(event, TextDelta) and event.text:
                self.arrivals.append(time.perf_counter())
            yield event


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def direct(raw: openai.AsyncOpenAI, model: str, tokens: int) -> float:
    """Seconds from sending to the first piece of text, reading the SSE stream to its end."""
    started = time.perf_counter()
    first = 0.0
    stream = await raw.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
        max_tokens=tokens,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True, "min_tokens": tokens},
    )
    async for chunk in stream:
        if not first and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
    return first


async def through_agent(client: AgentClient, llm: TimedProvider) -> tuple[float, list[float]]:
    """Seconds to the first token event, and each token's added latency (seconds)."""
    started = time.perf_counter()
    received: dict[int, float] = {}
    async with client.stream(PROMPT, tokens=True) as run:
        async for event in run:
            if isinstance(event, Token):
                received[event.index] = time.perf_counter()
        await run.answer()
    arrivals = llm.arrivals
    added = [received[i] - arrivals[i] for i in range(len(arrivals)) if i in received]
    if not received:
        raise SystemExit("no token events came: is the agent streaming?")
    return min(received.values()) - started, added


async def bench(base_url: str, rounds: int, tokens: int) -> dict[str, float]:
    settings = SamplingSettings(
        max_tokens=tokens, temperature=0, extra_body={"ignore_eos": True, "min_tokens": tokens}
    )
    with MosquittoBroker(persistence=False) as broker:
        async with (
            TimedProvider(base_url=base_url, timeout_s=600) as llm,
            Messager(broker.host, broker.port, namespace="bench", persistent=False) as agent_bus,
            Messager(broker.host, broker.port, namespace="bench", persistent=False) as client_bus,
            Agent(
                llm=llm, messager=agent_bus, role="streamer", system_prompt=SYSTEM, sampling=settings
            ) as agent,
        ):
            # The same request both ways: plain streamed text. (The CPU model's profile would ask
            # for its answer under a JSON schema, which forced tokens cannot close.)
            agent.policy = dataclasses.replace(await agent.apply_profile(), json_answer=False)
            model = await llm.resolve_model()
            raw = openai.AsyncOpenAI(base_url=llm.base_url, api_key="EMPTY", max_retries=0)
            client = AgentClient(client_bus, "streamer", timeout_s=600)
            await direct(raw, model, tokens)  # warm-up: connections, the prompt's cache
            await through_agent(client, llm)
            firsts: dict[str, list[float]] = {"direct": [], "agent": []}
            added: list[float] = []
            for number in range(rounds):
                # A B B A ...: each way goes first as often as the other.
                for way in ("direct", "agent") if number % 2 == 0 else ("agent", "direct"):
                    if way == "direct":
                        firsts["direct"].append(await direct(raw, model, tokens))
                    else:
                        first, more = await through_agent(client, llm)
                        firsts["agent"].append(first)
                        added.extend(more)
                print(
                    f"round {number + 1}: first token direct {firsts['direct'][-1] * 1000:.0f} ms, "
                    f"agent {firsts['agent'][-1] * 1000:.0f} ms",
                    file=sys.stderr,
                    flush=True,
                )
            await raw.close()
    direct_first = statistics.median(firsts["direct"])
    agent_first = statistics.median(firsts["agent"])
    print(
        f"{len(added)} tokens timed; first token medians {direct_first:.3f} s, {agent_first:.3f} s",
        file=sys.stderr,
    )
    return {
        "added_p50_ms": round(percentile(added, 0.5) * 1000, 3),
        "added_p99_ms": round(percentile(added, 0.99) * 1000, 3),
        "first_token_ratio": round(agent_first / direct_first, 3),
        "tokens_timed": len(added),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--vllm-url",
        default=os.environ.get("ARGENTIC_TEST_VLLM_URL"),
        help="a running vLLM server (default: $ARGENTIC_TEST_VLLM_URL, else start the CPU one)",
    )
    parser.add_argument("--rounds", type=int, default=6, help="even, so both ways lead equally")
    parser.add_argument("--tokens", type=int, default=24, help="output tokens of each request")
    parser.add_argument("--quick", action="store_true", help="a check that it runs: one short round")
    args = parser.parse_args()
    if args.quick:
        parser.set_defaults(rounds=1, tokens=4)
        args = parser.parse_args()
    with cpu_vllm_server(base_url=args.vllm_url) as running:
        result = asyncio.run(bench(running.base_url, args.rounds, args.tokens))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
