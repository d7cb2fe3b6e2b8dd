"""A2A gateway benchmark, on one mosquitto with a scripted model.

The same concurrent questions (64) go to a team role straight over MQTT (``AgentClient``) and
through the A2A gateway (the a2a-sdk's client, ``message/send``), in one run: ``mqtt_tasks_per_min``,
``gateway_tasks_per_min`` and ``gateway_ratio`` = the second over the first (goal >= 0.9). The
scripted model waits ``--model-s`` seconds per reply, standing for a model's latency, so the figure
is what the gateway costs a team rather than what an instant model would make of HTTP.

It runs as deployed: the team in this process, ``argentic gateway`` in a process of its own, and
the askers in a third, as users elsewhere (one MQTT client for the ``AgentClient`` questions, one
A2A client with its own HTTP connection per concurrent question). The sides take turns going
first; each figure is the median of the rounds.

    uv run python bench/gateway.py [--questions 64] [--rounds 5] [--model-s 0.5] [--quick]

``--quick`` (4 questions, one round, a 0.05 s model) checks that it runs. The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
from a2a.client import A2ACardResolver, Client, ClientConfig, create_client
from a2a.types import Message, Part, Role, SendMessageRequest, TaskState

from argentic.agents.client import AgentClient
from argentic.agents.team import Team
from argentic.config import ArgenticConfig
from argentic.llm import ChatRequest, FunctionLLM
from argentic.messaging import Messager
from argentic.netutil import free_port
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.processes import command_env, serving_command

NAMESPACE = "bench-gateway"
ROLE = "assistant"
#: The askers' process: warm-up and rounds, with room for a slow host.
ASKER_S = 600.0


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def scripted(delay_s: float) -> FunctionLLM:
    async def reply(request: ChatRequest) -> str:
        await asyncio.sleep(delay_s)
        users = [m for m in request.messages if m.role == "user"]
        return "ok: " + (users[-1].text if users else "")

    return FunctionLLM(reply, model_name="scripted")


async def mqtt_pass(client: AgentClient, count: int) -> float:
    started = time.perf_counter()
    answers = await asyncio.gather(*(client.answer(f"question {i}") for i in range(count)))
    elapsed = time.perf_counter() - started
    if any(not a.text.startswith("ok: ") for a in answers):
        raise RuntimeError("an answer over MQTT was wrong")
    return elapsed


async def gateway_pass(clients: list[Client], count: int) -> float:
    async def one(i: int) -> int:
        message = Message(
            message_id=uuid.uuid4().hex, role=Role.ROLE_USER, parts=[Part(text=f"question {i}")]
        )
        client = clients[i % len(clients)]
        replies = [r async for r in client.send_message(SendMessageRequest(message=message))]
        return int(replies[-1].task.status.state)

    started = time.perf_counter()
    states = await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.perf_counter() - started
    if any(s != TaskState.TASK_STATE_COMPLETED for s in states):
        raise RuntimeError("a task through the gateway did not complete")
    return elapsed


@contextlib.asynccontextmanager
async def a2a_clients(url: str, count: int) -> AsyncIterator[list[Client]]:
    """``count`` A2A clients, each with its own HTTP connection, as ``count`` users would have.
    (One httpx client shared by all would put its connection pool's bookkeeping, which grows
    with the square of the connections in use, on the gateway's figure.)"""
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=300))
        card = await A2ACardResolver(http, url).get_agent_card()
        clients = []
        for _ in range(count):
            own = await stack.enter_async_context(httpx.AsyncClient(timeout=300))
            client = await create_client(card, client_config=ClientConfig(streaming=False, httpx_client=own))
            stack.push_async_callback(client.close)
            clients.append(client)
        yield clients


@contextlib.contextmanager
def gateway_process(broker_port: int) -> Iterator[str]:
    """``argentic gateway`` in front of the broker, as it is deployed: its base URL."""
    port = free_port()
    env = command_env(broker_port, NAMESPACE)
    with serving_command(["gateway", "--port", str(port)], env, port=port, what="argentic gateway"):
        yield f"http://127.0.0.1:{port}"


async def wait_role_online(url: str) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(1200):
            if ROLE in [r["role"] for r in (await http.get(f"{url}/roles")).json()["roles"]]:
                return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"the {ROLE} role did not come online at the gateway within 60 s")


async def serve(args: argparse.Namespace) -> dict[str, Any]:
    """The team in this process, ``argentic gateway`` in front of it, and the askers in a process
    of their own, as users elsewhere."""
    config = ArgenticConfig.model_validate(
        {
            "messaging": {"namespace": NAMESPACE},
            "roles": {ROLE: {"description": "answers", "tools": [], "max_tasks": max(64, args.questions)}},
        }
    )
    with MosquittoBroker() as broker:
        async with (
            Messager(broker.host, broker.port, namespace=NAMESPACE, persistent=False) as bus,
            Team(config, messager=bus, llm=scripted(args.model_s)),
        ):
            with gateway_process(broker.port) as url:
                await wait_role_online(url)
                command = [
                    *(sys.executable, __file__, "--ask", f"{url}/agents/{ROLE}/"),
                    *("--broker-port", str(broker.port)),
                    *("--questions", str(args.questions), "--rounds", str(args.rounds)),
                ]
                asker = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
                try:
                    out, _ = await asyncio.wait_for(asker.communicate(), ASKER_S)
                finally:
                    if asker.returncode is None:
                        asker.kill()
                        await asker.wait()
                if asker.returncode != 0:
                    raise RuntimeError(f"the askers' process failed ({asker.returncode})")
    runs = json.loads(out.decode().strip().splitlines()[-1])
    mqtt_s, gateway_s = statistics.median(runs["mqtt"]), statistics.median(runs["gateway"])
    return {
        "questions": args.questions,
        "model_s": args.model_s,
        "mqtt_tasks_per_min": round(args.questions / mqtt_s * 60, 1),
        "gateway_tasks_per_min": round(args.questions / gateway_s * 60, 1),
        "gateway_ratio": round(mqtt_s / gateway_s, 3),
    }


async def ask(args: argparse.Namespace) -> dict[str, list[float]]:
    """The askers: each round, the questions over MQTT and through the gateway (the sides take
    turns going first)."""
    async with (
        Messager("127.0.0.1", args.broker_port, namespace=NAMESPACE, persistent=False) as asker,
        a2a_clients(args.ask, args.questions) as clients,
    ):
        client = AgentClient(asker, ROLE, timeout_s=300)
        log(f"warm-up: {args.questions} questions each way")
        await mqtt_pass(client, args.questions)
        await gateway_pass(clients, args.questions)
        runs: dict[str, list[float]] = {"mqtt": [], "gateway": []}
        for number in range(args.rounds):
            if number % 2 == 0:
                runs["mqtt"].append(await mqtt_pass(client, args.questions))
            runs["gateway"].append(await gateway_pass(clients, args.questions))
            if number % 2 == 1:
                runs["mqtt"].append(await mqtt_pass(client, args.questions))
            log(f"round {number + 1}: mqtt {runs['mqtt'][-1]:.3f} s, gateway {runs['gateway'][-1]:.3f} s")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=64, help="concurrent questions each way")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model-s", type=float, default=0.5, help="the scripted model's seconds per reply")
    parser.add_argument("--quick", action="store_true", help="4 questions, one round: checks that it runs")
    parser.add_argument("--ask", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--broker-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.questions, args.rounds, args.model_s = 4, 1, 0.05
    result = asyncio.run(ask(args) if args.ask else serve(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
