"""Throughput of argentic's vLLM provider against the raw ``openai`` async client, on one local server.

Each round sends 32 concurrent chat requests of exactly 32 output tokens (``ignore_eos``) through one
client; each round runs both clients back to back, the one going first alternating, so that load from
elsewhere hits both alike. Rates are medians over rounds; ``ratio`` is the median of the per-round
ratios. The server is the CPU vLLM (started here, or ``--vllm-url``, default
``$ARGENTIC_TEST_VLLM_URL``, for a running one). ``--quick`` sends 2 rounds of 2 requests of 2
tokens: a check that it runs.

usage: uv run python bench/llm.py [--vllm-url URL] [--rounds N] [--concurrency 32] [--tokens 32] [--quick]
Last line: {"provider_tok_s": ..., "raw_tok_s": ..., "ratio": ...}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import openai

from argentic.llm import ChatRequest, LLMFactory, SamplingSettings
from argentic.llm.openai_provider import OpenAICompatibleProvider
from argentic.testing.vllm_server import cpu_vllm_server

PROMPT = "Write a short list of fruits."


async def _round(send: Callable[[int], Awaitable[int]], concurrency: int) -> float:
    started = time.perf_counter()
    tokens = await asyncio.gather(*(send(i) for i in range(concurrency)))
    return sum(tokens) / (time.perf_counter() - started)


async def bench(
    base_url: str, model: str | None, rounds: int, concurrency: int, tokens: int, pause: float = 1.0
) -> dict[str, float]:
    provider = LLMFactory.create({"provider": "vllm", "vllm_base_url": base_url, "vllm_model_name": model})
    assert isinstance(provider, OpenAICompatibleProvider)
    model = await provider.resolve_model()
    raw = openai.AsyncOpenAI(base_url=provider.base_url, api_key="EMPTY", max_retries=0)
    extra = {"ignore_eos": True, "min_tokens": tokens}
    settings = SamplingSettings(max_tokens=tokens, temperature=0.8, extra_body=extra)

    async def via_provider(i: int) -> int:
        reply = await provider.chat(ChatRequest.user(f"{PROMPT} ({i})", settings=settings))
        return reply.usage.completion_tokens

    async def via_raw(i: int) -> int:
        reply = await raw.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"{PROMPT} ({i})"}],
            max_tokens=tokens,
            temperature=0.8,
            extra_body=extra,
        )
        return reply.usage.completion_tokens if reply.usage else 0

    await _round(via_provider, concurrency)  # warm-up: connections, caches
    await _round(via_raw, concurrency)
    figures: dict[str, list[float]] = {"provider": [], "raw": []}
    for index in range(rounds):
        order = [("provider", via_provider), ("raw", via_raw)]
        # A B B A A B ...: each client goes first as often as the other.
        for name, send in order if index % 2 == 0 else order[::-1]:
            await asyncio.sleep(pause)  # let the server finish the previous round's bookkeeping
            rate = await _round(send, concurrency)
            figures[name].append(rate)
            print(f"round {index + 1} {name:8s} {rate:7.1f} tok/s", file=sys.stderr, flush=True)
    await provider.close()
    await raw.close()
    provider_rate = statistics.median(figures["provider"])
    raw_rate = statistics.median(figures["raw"])
    # Each round runs both clients back to back, so they share whatever else loads the machine:
    # the median of the per-round ratios is steadier than the ratio of the medians.
    ratios = [p / r for p, r in zip(figures["provider"], figures["raw"], strict=True)]
    print(
        f"ratio of medians {provider_rate / raw_rate:.3f}; per round {[round(x, 3) for x in ratios]}",
        file=sys.stderr,
    )
    return {
        "provider_tok_s": round(provider_rate, 1),
        "raw_tok_s": round(raw_rate, 1),
        "ratio": round(statistics.median(ratios), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--vllm-url",
        default=os.environ.get("ARGENTIC_TEST_VLLM_URL"),
        help="a running vLLM server (default: $ARGENTIC_TEST_VLLM_URL, else start the CPU one)",
    )
    parser.add_argument("--model", help="served model name (default: discovered)")
    parser.add_argument("--rounds", type=int, default=8, help="even, so both clients lead equally")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="a check that it runs: a few short requests")
    args = parser.parse_args()
    if args.quick:
        parser.set_defaults(rounds=2, concurrency=2, tokens=2)
        args = parser.parse_args()
    with cpu_vllm_server(base_url=args.vllm_url) as running:
        result = asyncio.run(bench(running.base_url, args.model, args.rounds, args.concurrency, args.tokens))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
