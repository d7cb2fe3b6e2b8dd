"""Conversations on the shared store: what keeping them in SQLite or Redis costs against memory,
and whether replicas see whole histories.

``--conversations`` (64) conversations of ``--turns`` (5) turns each go at once, over mosquitto,
to agents of one role with a scripted model that answers with the number of user turns it was
shown; each conversation is followed by a new one until the run's ``--seconds`` (3) are up (one
pass of 320 turns lasts half a second, and such passes spread by half). Each backend (memory,
SQLite, Redis) runs with one agent, then with two replicas of the role (two agents on two
clients, sharing the questions through the broker and the store), the backends alternating,
``--rounds`` times each; a backend's figure is over all its rounds (their total turns over their
total time). With one agent, memory runs before and again after the stores in each round, so each
store's run sits between two memory runs; memory's figure is over both, and ``round_ratios_*``
shows each round's ratio to the mean of that round's two memory runs.

- ``tasks_per_min_memory``: turns per minute on memory with one agent;
- ``ratio_sqlite``, ``ratio_redis``: each backend's turns per minute over memory's (goal >= 0.9);
- ``ratio_memory_again``: memory's second runs over its first: identical runs, so how far it is
  from 1 is how far the ratios above can be off by chance on this host;
- ``turn_store_p99_ms``: per turn, the time in the store (the question's claim taken with the
  conversation's lease and its history read; the answer written with the history, both let
  go), p99 over SQLite and Redis turns;
- ``history_errors``: turns whose history was not the whole conversation, over every run (goal 0);
- ``rerun_tool_calls``: on SQLite and on Redis, ``--takeovers`` (16) questions go to a replica in a
  process of its own that calls a tool for each and is killed (SIGKILL) once every result is in,
  before any answer; a live replica takes them over. Tools run a second time (goal 0), with
  ``takeover_answered`` of ``takeover_questions`` answered.
  The two memory replicas share one ``MemoryStore`` (they are in one process); replicas in two
  processes need SQLite or Redis, which is what those runs stand for.

usage: uv run python bench/store.py [--conversations 64] [--turns 5] [--rounds 6] [--seconds 3]
       [--takeovers 16] [--takeover-timeout 60] [--quick]
Last line: {"tasks_per_min_memory": ..., "ratio_sqlite": ..., "ratio_redis": ..., ...}
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from argentic import Agent, AgentClient, ToolManager, ToolService, tool
from argentic.llm import ChatRequest, FunctionLLM, LLMToolCall
from argentic.llm.scripted import tool_call
from argentic.messaging import Messager
from argentic.storage import Add, ConversationRecords, Step, Store, open_store
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.redis_server import RedisServer
from argentic.testing.stores import KINDS, store_pair


class TimedStore(Store):
    """A store that notes the time each question's turn spends in it: the batches of each task
    that takes a question's claim (an agent answers each question in a task of its own, which
    takes the claim with the conversation's lease and writes the answer with the history)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.url = store.url
        self._turns: dict[asyncio.Task[Any] | None, float] = {}  # by task (kept: ids are reused)

    async def start(self) -> None:
        pass  # the store it wraps is opened and closed by its owner

    async def stop(self) -> None:
        pass

    async def batch(self, *steps: Step) -> list[Any]:
        started = time.perf_counter()
        try:
            return await self.store.batch(*steps)
        finally:
            task = asyncio.current_task()
            if task in self._turns or any(isinstance(s, Add) and s.key.startswith("claim:") for s in steps):
                self._turns[task] = self._turns.get(task, 0.0) + time.perf_counter() - started

    @property
    def spent(self) -> list[float]:
        """Each turn's seconds in the store."""
        return list(self._turns.values())


def counting(request: ChatRequest) -> str:
    return str(sum(m.role == "user" for m in request.messages))


async def conversation(client: AgentClient, turns: int) -> int:
    """One conversation; how many of its turns saw less (or more) than the whole history."""
    errors = 0
    cid: str | None = None
    for turn in range(1, turns + 1):
        answer = await client.answer(f"turn {turn}", conversation_id=cid)
        cid = answer.conversation_id
        errors += answer.text != str(turn)
    return errors


async def one_run(
    broker: MosquittoBroker, kind: str, replicas: int, args: argparse.Namespace, folder: Path, redis_url: str
) -> tuple[int, float, int, list[float]]:
    """Turns, seconds, history errors, and each turn's store seconds."""
    namespace = f"bench{uuid.uuid4().hex[:6]}"

    def messager() -> Messager:
        return Messager(broker.host, broker.port, namespace=namespace, persistent=False)

    async with store_pair(kind, folder, redis_url) as stores, contextlib.AsyncExitStack() as stack:
        timed = [TimedStore(store) for store in stores[:replicas]]
        for record in (ConversationRecords(store) for store in timed):
            bus = await stack.enter_async_context(messager())
            agent = Agent(
                FunctionLLM(counting), bus, role="bench", store=record, max_tasks=args.conversations
            )
            await stack.enter_async_context(agent)
        client_bus = await stack.enter_async_context(messager())
        client = AgentClient(client_bus, "bench", timeout_s=120)
        started = time.perf_counter()
        until = started + args.seconds

        async def keep_talking() -> tuple[int, int]:
            """Conversations one after another until the run's time is up: turns, history errors."""
            turns = errors = 0
            while True:
                errors += await conversation(client, args.turns)
                turns += args.turns
                if time.perf_counter() >= until:
                    return turns, errors

        outcomes = await asyncio.gather(*(keep_talking() for _ in range(args.conversations)))
        elapsed = time.perf_counter() - started
    spent = [s for store in timed for s in store.spent]
    return sum(t for t, _ in outcomes), elapsed, sum(e for _, e in outcomes), spent


# --- a replica killed between its tool calls and its answers ------------------------------------

#: Seconds a dead replica's claims and leases outlive it in the takeover runs.
TAKEOVER_LEASE_S = 2.0


async def call_then_hang(request: ChatRequest) -> str | LLMToolCall:
    """The doomed replica's model: a tool call, then, with the result read, no answer ever."""
    if request.messages[-1].role != "tool":
        return tool_call("record", {})
    print("RESULT_SEEN", flush=True)
    await asyncio.sleep(3600)
    return "never"


async def doomed_replica(port: int, namespace: str, url: str, questions: int) -> None:
    """The replica the takeover run kills (run as ``store.py --doomed PORT NAMESPACE URL N``)."""
    async with (
        Messager("127.0.0.1", port, namespace=namespace, persistent=False) as bus,
        open_store(url) as store,
        ToolManager(bus) as tools,
        Agent(
            FunctionLLM(call_then_hang),
            bus,
            tools,
            "takeover",
            store=ConversationRecords(store, lease_ttl_s=TAKEOVER_LEASE_S),
            max_tasks=questions,
        ),
    ):
        print("READY", flush=True)
        await asyncio.sleep(3600)


async def takeover_run(
    broker: MosquittoBroker, url: str, questions: int, timeout_s: float
) -> tuple[int, int]:
    """``questions`` questions whose replica is killed (SIGKILL) once each has its tool's result;
    a live replica takes them over (the asker, waiting up to ``timeout_s``, sends each again after
    a third of it). Tool runs beyond one per question, and questions answered."""
    namespace = f"bench{uuid.uuid4().hex[:6]}"
    runs: list[int] = []

    @tool
    def record() -> int:
        """A side effect that must happen once per question."""
        runs.append(1)
        return len(runs)

    def answer(request: ChatRequest) -> str | LLMToolCall:
        last = request.messages[-1]
        return f"recorded {last.text}" if last.role == "tool" else tool_call("record", {})

    def messager() -> Messager:
        return Messager(broker.host, broker.port, namespace=namespace, persistent=False)

    doomed = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--doomed", str(broker.port), namespace, url, str(questions),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert doomed.stdout is not None
    try:
        async with contextlib.AsyncExitStack() as stack:
            if await asyncio.wait_for(doomed.stdout.readline(), 60) != b"READY\n":
                raise RuntimeError("the doomed replica did not start")
            await stack.enter_async_context(
                ToolService(await stack.enter_async_context(messager()), [record])
            )
            client = AgentClient(await stack.enter_async_context(messager()), "takeover", timeout_s=timeout_s)
            asking = [asyncio.ensure_future(client.answer(f"record {i}")) for i in range(questions)]
            for _ in range(questions):
                await asyncio.wait_for(doomed.stdout.readline(), 60)
            store = await stack.enter_async_context(open_store(url))
            tools = await stack.enter_async_context(ToolManager(await stack.enter_async_context(messager())))
            records = ConversationRecords(store, lease_ttl_s=TAKEOVER_LEASE_S)
            live = Agent(
                FunctionLLM(answer),
                await stack.enter_async_context(messager()),
                tools,
                "takeover",
                store=records,
                max_tasks=questions,
            )
            await stack.enter_async_context(live)
            doomed.kill()
            answers = await asyncio.gather(*asking, return_exceptions=True)
    finally:
        if doomed.returncode is None:
            doomed.kill()
        await doomed.wait()
    answered = sum(not isinstance(a, BaseException) for a in answers)
    return len(runs) - questions, answered


#: The label of memory's second run in a round with one agent.
AGAIN = "memory again"


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    kinds = list(KINDS)
    runs: dict[tuple[str, int], list[tuple[int, float]]] = {}  # (turns, seconds) of each run
    errors: dict[tuple[str, int], int] = {}
    spent: list[float] = []
    with (
        MosquittoBroker(persistence=False) as broker,
        RedisServer() as redis,
        tempfile.TemporaryDirectory(prefix="argentic-bench-store-") as folder,
    ):
        for number in range(args.rounds):
            order = kinds if number % 2 == 0 else kinds[::-1]  # each backend leads as often
            stores = [kind for kind in order if kind != "memory"]
            for replicas in (1, 2):
                labels = ["memory", *stores, AGAIN] if replicas == 1 else order
                for label in labels:
                    kind = "memory" if label == AGAIN else label
                    turns, seconds, wrong, times = await one_run(
                        broker, kind, replicas, args, Path(folder), redis.url
                    )
                    rate = turns / seconds * 60
                    key = (label, replicas)
                    runs.setdefault(key, []).append((turns, seconds))
                    errors[key] = errors.get(key, 0) + wrong
                    if kind != "memory":
                        spent.extend(times)
                    print(
                        f"round {number + 1} {label:12s} x{replicas}: {rate:7.0f} turns/min, "
                        f"{wrong} history errors",
                        file=sys.stderr,
                        flush=True,
                    )
        reruns = answered = 0
        for kind in ("sqlite", "redis"):
            url = f"sqlite:///{Path(folder) / 'takeover.db'}" if kind == "sqlite" else redis.url
            rerun, done = await takeover_run(broker, url, args.takeovers, args.takeover_timeout)
            reruns, answered = reruns + rerun, answered + done
            print(
                f"takeover {kind:6s}: {done}/{args.takeovers} answered, {rerun} tools run twice",
                file=sys.stderr,
                flush=True,
            )
    # Turns per minute over all of a backend's runs: their total turns over their total time.
    overall = {key: sum(t for t, _ in done) / sum(s for _, s in done) * 60 for key, done in runs.items()}
    memory_runs = runs[("memory", 1)] + runs[(AGAIN, 1)]
    memory = sum(t for t, _ in memory_runs) / sum(s for _, s in memory_runs) * 60

    def per_round(kind: str) -> list[float]:
        rounds = zip(runs[(kind, 1)], runs[("memory", 1)], runs[(AGAIN, 1)], strict=True)
        return [round(t / s / ((t1 / s1 + t2 / s2) / 2), 3) for (t, s), (t1, s1), (t2, s2) in rounds]

    spent.sort()
    p99 = spent[min(len(spent) - 1, round(0.99 * (len(spent) - 1)))] if spent else 0.0
    return {
        "tasks_per_min_memory": round(memory),
        "ratio_sqlite": round(overall[("sqlite", 1)] / memory, 3),
        "ratio_redis": round(overall[("redis", 1)] / memory, 3),
        "ratio_memory_again": round(overall[(AGAIN, 1)] / overall[("memory", 1)], 3),
        "round_ratios_sqlite": per_round("sqlite"),
        "round_ratios_redis": per_round("redis"),
        "ratio_sqlite_2_replicas": round(overall[("sqlite", 2)] / memory, 3),
        "ratio_redis_2_replicas": round(overall[("redis", 2)] / memory, 3),
        "turn_store_p50_ms": round(statistics.median(spent) * 1000, 3) if spent else 0.0,
        "turn_store_p99_ms": round(p99 * 1000, 3),
        "history_errors": sum(errors.values()),
        "takeover_answered": answered,
        "takeover_questions": 2 * args.takeovers,
        "rerun_tool_calls": reruns,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=64)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0, help="each run's length")
    parser.add_argument("--takeovers", type=int, default=16, help="questions whose replica is killed")
    parser.add_argument(
        "--takeover-timeout",
        type=float,
        default=60.0,
        help="seconds the asker of those waits (it sends them again after a third of it)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a check that it runs: a few short conversations"
    )
    parser.add_argument(
        "--doomed", nargs=4, metavar=("PORT", "NAMESPACE", "URL", "N"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.doomed:
        port, namespace, url, questions = args.doomed
        asyncio.run(doomed_replica(int(port), namespace, url, int(questions)))
        return
    if args.quick:
        parser.set_defaults(
            conversations=4, turns=2, rounds=1, takeovers=2, seconds=0.2, takeover_timeout=20.0
        )
        args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args))))


if __name__ == "__main__":
    main()
