"""Two CPU vLLM servers behind one endpoint: prefix-cache hits by affinity and by round-robin, and
what a server killed mid-run costs.

- 15 agents of 5 roles (system prompts of about 400 tokens) ask short questions, each agent its
  questions one after another, all agents at once, in waves: first routed by the pool (affinity
  by prefix), then, with five other roles, round-robin over the two servers. The affinity phase
  asks no new wave once it would pass ``PHASE_BUDGET_S`` (a slow host asks fewer questions), and
  round-robin asks as many waves. ``prefix_hit_*`` is the fraction
  of prompt tokens served from the cache (vLLM's ``prefix_cache_hits``/``prefix_cache_queries``
  counters over both servers, during the phase; ``*_after_first_wave`` leaves out the first wave
  of questions, in which every cache is cold whatever the routing). The goal: affinity >= 0.9,
  above round-robin. The bench's own servers have a small KV cache (``KV_BLOCKS``): room for
  about four roles' prompts, not all five, as a busy server holds part of a big team's.
- Then 32 questions at once (half streamed; 16 tokens each, ``ignore_eos``), and the second server
  is killed with SIGKILL once streamed tokens arrive: ``failover_lost`` (questions without an
  answer), ``failover_duplicated`` (questions answered more than once) and ``stream_gaps`` (streamed
  answers whose reader text is not the reply, or lost what it had before the kill); all should be 0.

The first server is started here, or ``--vllm-url`` names a running one; the second is always this
script's own (it is the one killed). Speed is not the point: the servers share this host's cores.
``--quick``: 2 questions per agent; with ``--vllm-url``, that server stands for both and none is
killed (the failover figures are then null), and the team is 5 agents with shorter prompts
(``QUICK_TEAM``): a check that the bench runs, not a measurement.

usage: uv run python bench/scale.py [--vllm-url URL] [--questions 10] [--failover 32] [--quick]
Last line: {"prefix_hit_affinity": ..., "prefix_hit_round_robin": ..., "failover_lost": 0,
"failover_duplicated": 0, "stream_gaps": 0, ...}
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from argentic.config import LLMServerConfig
from argentic.llm import ChatRequest, SamplingSettings, StreamEnd, TextDelta
from argentic.llm.local_server import VLLMServer, launch_plan
from argentic.llm.openai_provider import OpenAICompatibleProvider
from argentic.netutil import free_port
from argentic.testing.vllm_server import cpu_vllm_server

ROLES = ("planner", "coder", "reviewer", "tester", "writer")
ASK = SamplingSettings(max_tokens=2, temperature=0)
# The cache's unit: vLLM on the CPU defaults to 128 tokens, so a prompt of 500 shares at most 384;
# the bench's own servers use 32 (the CPU backend's smallest fast size), nearer a GPU's 16.
BLOCK_SIZE = 32
# The bench's own servers hold this many blocks: Gemma 3 keeps a block per layer group (its sliding
# window layers and its global ones), so this is about 2,000 tokens of prompt, room for about four of
# the five roles' prompts with the requests in flight, as a busy server's cache holds a part of a
# big team's prompts. One server cannot keep every role warm, so where the requests go decides
# what the cache keeps.
KV_BLOCKS = 448
MAX_MODEL_LEN = 1024
# Seconds the affinity phase may take before it asks no new wave (a slow host asks fewer questions).
PHASE_BUDGET_S = 120.0
LONG = SamplingSettings(max_tokens=16, temperature=0, extra_body={"min_tokens": 16, "ignore_eos": True})


@dataclass(frozen=True)
class Team:
    """Agents of each role, and the rules in each role's system prompt (about 20 tokens a rule)."""

    agents_per_role: int
    rules: int


#: 15 agents, prompts of about 400 tokens.
FULL_TEAM = Team(agents_per_role=3, rules=20)
#: ``--quick`` on the running server: 5 agents, prompts of one block of its cache (128 tokens) and
#: a little more, so a check that the bench runs asks a third of the prompt tokens of a full wave.
QUICK_TEAM = Team(agents_per_role=1, rules=8)


def system_prompt(role: str, salt: str, rules: int = FULL_TEAM.rules) -> str:
    """``rules`` rules of instructions, the same for every agent of a role."""
    text = " ".join(
        f"Rule {i} for the {role}: keep answers short, name the file and line, say what to check next."
        for i in range(rules)
    )
    return f"[{salt}] You are the {role} of a software team. {text}"


async def cache_counters(provider: OpenAICompatibleProvider) -> tuple[float, float]:
    """Prefix-cache hits and queries (tokens) summed over the pool's servers."""
    hits = queries = 0.0
    for samples in (await provider.metrics()).values():
        for name, value in samples.items():
            base = name.split("{", 1)[0]
            if base == "vllm:prefix_cache_hits_total":
                hits += value
            elif base == "vllm:prefix_cache_queries_total":
                queries += value
    return hits, queries


async def agents_phase(
    send: Any,
    provider: OpenAICompatibleProvider,
    salt: str,
    questions: int,
    team: Team,
    budget_s: float | None = None,
) -> tuple[float, float, int]:
    """Every agent asks up to ``questions`` short questions in turn, all agents at once, one wave
    of questions after another (no new wave once ``budget_s`` would be passed, so that a slow host
    finishes): the hit fraction after the first wave (every agent's first question, which finds
    every cache cold whatever the routing), over the whole phase, and the waves asked."""
    start = await cache_counters(provider)

    async def ask(role: str, number: int, q: int) -> None:
        request = ChatRequest.user(
            f"Agent {number}, question {q}: ready?",
            system=system_prompt(role, salt, team.rules),
            settings=ASK,
        )
        await send(request)

    async def wave(q: int) -> None:
        await asyncio.gather(*(ask(role, n, q) for role in ROLES for n in range(team.agents_per_role)))

    started = time.monotonic()
    await wave(0)
    warm = await cache_counters(provider)
    waves = 1
    while waves < questions:
        spent = time.monotonic() - started
        if budget_s is not None and spent + spent / waves > budget_s:
            break
        await wave(waves)
        waves += 1
    end = await cache_counters(provider)

    def fraction(a: tuple[float, float], b: tuple[float, float]) -> float:
        return (b[0] - a[0]) / max(1.0, b[1] - a[1])

    return fraction(warm, end), fraction(start, end), waves


async def failover_phase(
    provider: OpenAICompatibleProvider, victim: VLLMServer, count: int
) -> dict[str, int]:
    """``count`` questions at once, half streamed; ``victim`` is killed once streamed tokens come."""
    received: dict[int, str] = {}
    before_kill: dict[int, str] = {}
    answers: dict[int, list[str | None]] = {}
    tokens_came = asyncio.Event()

    async def question(index: int) -> None:
        request = ChatRequest.user(
            f"Question {index}: describe the number {index}.",
            system=system_prompt(ROLES[index % len(ROLES)], "failover"),
            settings=LONG,
        )
        answers[index] = []
        if index % 2 == 0:
            async for event in provider.stream(request):
                if isinstance(event, TextDelta):
                    received[index] = received.get(index, "") + event.text
                    tokens_came.set()
                elif isinstance(event, StreamEnd):
                    answers[index].append(event.response.content)
        else:
            answers[index].append((await provider.chat(request)).content)

    tasks = [asyncio.ensure_future(question(i)) for i in range(count)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(tokens_came.wait(), 600)
    before_kill.update(received)
    if victim.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(victim.pid, signal.SIGKILL)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await victim.astop()  # reaps it
    lost = sum(1 for i, r in enumerate(results) if isinstance(r, BaseException) or not answers.get(i))
    duplicated = sum(1 for a in answers.values() if len(a) > 1)
    gaps = sum(
        1
        for i in range(0, count, 2)
        if answers.get(i)
        and (answers[i][0] != received.get(i) or not received.get(i, "").startswith(before_kill.get(i, "")))
    )
    return {"failover_lost": lost, "failover_duplicated": duplicated, "stream_gaps": gaps}


async def bench(first_url: str | None, questions: int, failover: int, *, one: bool = False) -> dict[str, Any]:
    """``one``: the running server at ``first_url`` stands for both (a check that the bench runs,
    in seconds: routing and counters, no server started, none killed)."""
    started = time.perf_counter()
    team = QUICK_TEAM if one else FULL_TEAM
    servers = []
    ours_only = first_url is None
    if one and first_url is None:
        raise ValueError("one server stands for both only when it is running (--vllm-url)")
    for _ in range(0 if one else 1 if first_url else 2):  # the last one is ours to kill
        config = LLMServerConfig(
            port=free_port(),
            startup_timeout_s=600,
            max_model_len=MAX_MODEL_LEN,
            extra_args=["--block-size", str(BLOCK_SIZE), "--num-gpu-blocks-override", str(KV_BLOCKS)],
        )
        servers.append(VLLMServer(await asyncio.to_thread(launch_plan, config), startup_timeout_s=600))
    second = servers[-1] if servers else None
    async with contextlib.AsyncExitStack() as stack:
        for server in servers:
            stack.push_async_callback(server.aclose)
        await asyncio.gather(*(server.astart() for server in servers))  # loading at once saves minutes
        first_url = first_url or servers[0].base_url
        urls = [first_url, second.base_url if second is not None else first_url]
        options: dict[str, Any] = {"timeout_s": 120, "max_retries": 3, "health_interval_s": 1.0}
        pooled = OpenAICompatibleProvider(base_url=urls[0], base_urls=sorted(set(urls)), **options)
        singles = [OpenAICompatibleProvider(base_url=url, **options) for url in urls]
        turn = iter(range(10**9))

        async def round_robin(request: ChatRequest) -> None:
            await singles[next(turn) % 2].chat(request)

        async with pooled:
            affinity, affinity_all, asked = await agents_phase(
                pooled.chat, pooled, "affinity", questions, team, PHASE_BUDGET_S
            )
            spread = [s["requests"] for s in pooled.pool.status()]
            # Round-robin asks as many waves as affinity did, so the two phases compare.
            round_robin_hits, round_robin_all, _ = await agents_phase(
                round_robin, pooled, "round-robin", asked, team
            )
            outcome: dict[str, Any] = (
                await failover_phase(pooled, second, failover)
                if second is not None
                else {"failover_lost": None, "failover_duplicated": None, "stream_gaps": None}
            )
        for single in singles:
            await single.close()
    return {
        "prefix_hit_affinity": round(affinity_all, 3),
        "prefix_hit_round_robin": round(round_robin_all, 3),
        **outcome,
        "prefix_hit_affinity_after_first_wave": round(affinity, 3),
        "prefix_hit_round_robin_after_first_wave": round(round_robin_hits, 3),
        "block_size": BLOCK_SIZE if ours_only else "mixed",
        "kv_blocks_per_server": KV_BLOCKS if ours_only else "mixed",
        "agents": len(ROLES) * team.agents_per_role,
        "questions_per_agent": asked,
        "failover_questions": failover,
        "affinity_requests_per_server": spread,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--vllm-url",
        default=os.environ.get("ARGENTIC_TEST_VLLM_URL"),
        help="the first server, already running (default: started here); the second is always started",
    )
    parser.add_argument("--questions", type=int, default=10, help="questions per agent")
    parser.add_argument("--failover", type=int, default=32, help="questions asked while a server dies")
    parser.add_argument("--quick", action="store_true", help="2 questions per agent; see above")
    args = parser.parse_args()
    if args.quick:
        args.questions, args.failover = 2, 8
    if args.vllm_url:
        with cpu_vllm_server(base_url=args.vllm_url) as first:  # checks that it answers
            result = asyncio.run(bench(first.base_url, args.questions, args.failover, one=args.quick))
    else:
        result = asyncio.run(bench(None, args.questions, args.failover))
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
