"""Team benchmark, on one mosquitto and one vLLM server.

1. 15 agents (5 roles x 3 replicas, one process, one shared messager) answer 4 questions each,
   all sent at once over MQTT: ``tasks_per_min``; against the same LLM requests (each role's
   system prompt and the question, same sampling) sent directly with the openai client, all at
   once: ``ceiling_tasks_per_min``; ``ratio`` = the first over the second (goal >= 0.9). A warm-up
   pass runs first so both sides find the prompts in vLLM's prefix cache; then the sides take turns
   going first and each keeps its best pass (other load on the machine comes and goes).
2. The memory of one idle agent: ``agent_kib`` (Python allocations of 200 started agents, traced,
   divided by 200; goal < 200).
3. 1,000 agents (100 roles x 10 replicas) started in one process on one broker connection:
   ``start_1000_s`` (goal < 10) and the process's resident memory they added, ``start_1000_rss_mib``.

    uv run python bench/team.py [--rounds 6] [--tokens 16] [--vllm-url http://127.0.0.1:8000/v1] [--quick]

Without ``--vllm-url`` (or ``$ARGENTIC_TEST_VLLM_URL``) the CPU server is started (and stopped).
Few tokens per answer keep it under 10 minutes on a slow CPU host. ``--quick`` (one replica per
role, one question each, 2 tokens, one round, 10 and 20 idle agents) checks that it runs; the
``start_1000_*`` figures are then of ``started_agents`` agents. The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import sys
import time
import tracemalloc
from typing import Any

import openai

from argentic.agents.team import Team
from argentic.config import ArgenticConfig
from argentic.llm import LLMFactory, LLMProvider
from argentic.messaging import Messager
from argentic.protocol import Answer, ErrorReply, Question
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.vllm_server import cpu_vllm_server

ROLES = {
    "architect": "You design software. Answer in one short sentence.",
    "developer": "You write Python. Answer in one short sentence.",
    "reviewer": "You review code. Answer in one short sentence.",
    "tester": "You test software. Answer in one short sentence.",
    "writer": "You write documentation. Answer in one short sentence.",
}
TOPICS = ["a login page", "a cache", "a CSV parser", "a rate limiter", "a retry loop", "a queue"]


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def rss_kib() -> int:
    """The process's resident memory now (Linux), in KiB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def team_config(roles: dict[str, str], replicas: int, namespace: str) -> ArgenticConfig:
    return ArgenticConfig.model_validate(
        {
            "messaging": {"namespace": namespace},
            "roles": {
                name: {
                    "description": f"the {name}",
                    "system_prompt": prompt,
                    "tools": [],
                    "replicas": replicas,
                }
                for name, prompt in roles.items()
            },
        }
    )


def questions(replicas: int, per_agent: int) -> list[tuple[str, str]]:
    """(role, question): ``replicas x per_agent`` for each role, about ``per_agent`` for each replica."""
    count = replicas * per_agent
    return [
        (role, f"Name one risk of {TOPICS[i % len(TOPICS)]} ({i}).") for role in ROLES for i in range(count)
    ]


# --- 1. throughput ---------------------------------------------------------------------------------


async def team_pass(client: Messager, asked: list[tuple[str, str]]) -> tuple[float, int]:
    """Seconds for every question through the team, and the completion tokens the answers took."""
    started = time.perf_counter()
    replies = await asyncio.gather(
        *(
            client.request(
                client.topics.agent_questions(role), Question(text=text), response_model=Answer, timeout=900
            )
            for role, text in asked
        )
    )
    elapsed = time.perf_counter() - started
    failed = [r for r in replies if isinstance(r, ErrorReply)]
    if failed:
        raise RuntimeError(f"{len(failed)} questions failed, e.g. {failed[0].error}")
    answers = [r for r in replies if isinstance(r, Answer)]
    return elapsed, sum(a.usage.completion_tokens for a in answers)


async def direct_pass(
    base_url: str, model: str, asked: list[tuple[str, str]], tokens: int
) -> tuple[float, int]:
    """The same requests with the openai client: the server's ceiling."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=900)

    async def one(role: str, text: str) -> int:
        completion = await client.chat.completions.create(
            model=model,
            messages=[{"role": "system", "content": ROLES[role]}, {"role": "user", "content": text}],
            max_tokens=tokens,
            temperature=0,
        )
        return completion.usage.completion_tokens if completion.usage else 0

    started = time.perf_counter()
    counts = await asyncio.gather(*(one(role, text) for role, text in asked))
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed, sum(counts)


async def throughput(
    broker: MosquittoBroker, base_url: str, model: str, args: argparse.Namespace
) -> dict[str, Any]:
    rounds, tokens, replicas = args.rounds, args.tokens, args.replicas
    asked = questions(replicas, args.questions)
    llm = LLMFactory.create(
        {
            "provider": "vllm",
            "vllm_base_url": base_url,
            "vllm_model_name": model,
            "max_tokens": tokens,
            "temperature": 0,
            "max_concurrency": len(asked),
            "timeout_s": 900,
        }
    )
    config = team_config(ROLES, replicas, "bench-team")
    async with (
        Messager(
            broker.host, broker.port, namespace="bench-team", persistent=False, max_concurrent_handlers=256
        ) as bus,
        Messager(broker.host, broker.port, namespace="bench-team", persistent=False) as client,
        Team(config, messager=bus, llm=llm) as team,
    ):
        assert len(team.agents) == len(ROLES) * replicas
        log(f"warm-up: {len(asked)} questions to {len(team.agents)} agents")
        await team_pass(client, asked)
        await direct_pass(base_url, model, asked, tokens)
        team_runs: list[tuple[float, int]] = []
        direct_runs: list[tuple[float, int]] = []
        for number in range(rounds):
            # T D D T T D ...: each side goes first as often as the other, so drift hits both alike.
            if number % 2 == 0:
                team_runs.append(await team_pass(client, asked))
            direct_runs.append(await direct_pass(base_url, model, asked, tokens))
            if number % 2 == 1:
                team_runs.append(await team_pass(client, asked))
            log(f"round {number + 1}: team {team_runs[-1]}, direct {direct_runs[-1]} (seconds, tokens)")
    await llm.close()
    team_s, team_tokens = min(team_runs)
    direct_s, direct_tokens = min(direct_runs)
    return {
        "agents": len(ROLES) * replicas,
        "tasks_per_min": round(len(asked) / team_s * 60, 1),
        "ceiling_tasks_per_min": round(len(asked) / direct_s * 60, 1),
        "ratio": round(direct_s / team_s, 3),
        "team_completion_tokens": team_tokens,
        "direct_completion_tokens": direct_tokens,
    }


# --- 2 and 3. idle agents ----------------------------------------------------------------------------


async def start_agents(
    broker: MosquittoBroker, llm: LLMProvider, roles: int, replicas: int, *, traced: bool
) -> dict[str, float]:
    """Start ``roles x replicas`` idle agents on one messager; their memory and start time."""
    names = {f"role{i:03d}": "You answer briefly." for i in range(roles)}
    config = team_config(names, replicas, f"bench-idle-{roles}")
    async with Messager(
        broker.host, broker.port, namespace=config.messaging.namespace, persistent=False
    ) as bus:
        team = Team(config, messager=bus, llm=llm)
        gc.collect()
        rss_before = rss_kib()
        if traced:
            tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0] if traced else 0
        started = time.perf_counter()
        await team.start()
        elapsed = time.perf_counter() - started
        await asyncio.sleep(0.5)  # let the presences settle
        gc.collect()
        allocated = tracemalloc.get_traced_memory()[0] - before if traced else 0
        if traced:
            tracemalloc.stop()
        rss_after = rss_kib()
        count = len(team.agents)
        await team.stop()
    return {
        "count": count,
        "start_s": elapsed,
        "kib_per_agent": allocated / 1024 / count,
        "rss_mib": (rss_after - rss_before) / 1024,
    }


async def idle(broker: MosquittoBroker, traced_agents: int, started_agents: int) -> dict[str, Any]:
    """``traced_agents`` (5 replicas a role) traced for memory, then ``started_agents`` (10 a role) timed."""
    llm = LLMFactory.create(
        {"provider": "vllm", "vllm_base_url": "http://127.0.0.1:9/v1", "vllm_model_name": "m"}
    )
    memory = await start_agents(broker, llm, max(1, traced_agents // 5), 5, traced=True)
    log(f"{memory['count']} idle agents: {memory['kib_per_agent']:.1f} KiB each (traced)")
    thousand = await start_agents(broker, llm, max(1, started_agents // 10), 10, traced=False)
    count, seconds, added = thousand["count"], thousand["start_s"], thousand["rss_mib"]
    log(f"{count} agents started in {seconds:.2f}s, +{added:.1f} MiB RSS")
    await llm.close()
    return {
        "agent_kib": round(memory["kib_per_agent"], 1),
        "start_1000_s": round(thousand["start_s"], 2),
        "start_1000_rss_mib": round(thousand["rss_mib"], 1),
        "started_agents": count,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with MosquittoBroker(persistence=False) as broker:
        idle_figures = await idle(broker, args.traced_agents, args.started_agents)
        if not args.skip_llm:
            with cpu_vllm_server(base_url=args.vllm_url) as server:
                url, model = server.base_url, server.model
                figures.update(await throughput(broker, url, model, args))
        figures.update(idle_figures)
    figures["max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="measured passes of each side (even)")
    parser.add_argument("--tokens", type=int, default=16, help="max_tokens of every answer")
    parser.add_argument("--vllm-url", default=os.environ.get("ARGENTIC_TEST_VLLM_URL"))
    parser.add_argument("--replicas", type=int, default=3, help="replicas of each of the 5 roles")
    parser.add_argument("--questions", type=int, default=4, help="questions per agent in each pass")
    parser.add_argument("--traced-agents", type=int, default=200, help="idle agents traced for memory")
    parser.add_argument("--started-agents", type=int, default=1000, help="idle agents started at once")
    parser.add_argument("--skip-llm", action="store_true", help="only the idle agents")
    parser.add_argument("--quick", action="store_true", help="a check that it runs: tiny sizes, one round")
    args = parser.parse_args()
    if args.quick:
        parser.set_defaults(rounds=1, tokens=2, replicas=1, questions=1, traced_agents=10, started_agents=20)
        args = parser.parse_args()
    result = asyncio.run(main(args))
    print(json.dumps(result))
