"""A2A gateway benchmark, on one mosquitto with a scripted model.

The same concurrent questions (64) go to a team role straight over MQTT (``AgentClient``) and
through the A2A gateway (the a2a-sdk's client, ``message/send``), in one run: ``mqtt_tasks_per_min``,
``gateway_tasks_per_min`` and ``gateway_ratio`` = the second over the first (goal >= 0.9). The
scripted model waits ``--model-s`` seconds per reply, standing for a model's latency, so the figure
is what the gateway costs a team rather than what an instant model would make of HTTP. The sides
take turns going first and each keeps its best round (other load on the machine comes and goes).

    uv run python bench/gateway.py [--questions 64] [--rounds 3] [--model-s 0.5] [--quick]

``--quick`` (4 questions, one round, a 0.05 s model) checks that it runs. The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from typing import Any

import httpx
from a2a.client import ClientConfig, create_client
from a2a.types import Message, Part, Role, SendMessageRequest, TaskState

from argentic.agents.client import AgentClient
from argentic.agents.team import Team
from argentic.config import ArgenticConfig
from argentic.gateway import Gateway
from argentic.llm import ChatRequest, FunctionLLM
from argentic.messaging import Messager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.waiting import wait_until

NAMESPACE = "bench-gateway"
ROLE = "assistant"


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


async def gateway_pass(url: str, http: httpx.AsyncClient, count: int) -> float:
    client = await create_client(url, client_config=ClientConfig(streaming=False, httpx_client=http))

    async def one(i: int) -> int:
        message = Message(
            message_id=uuid.uuid4().hex, role=Role.ROLE_USER, parts=[Part(text=f"question {i}")]
        )
        replies = [r async for r in client.send_message(SendMessageRequest(message=message))]
        return int(replies[-1].task.status.state)

    started = time.perf_counter()
    states = await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.perf_counter() - started
    await client.close()
    if any(s != TaskState.TASK_STATE_COMPLETED for s in states):
        raise RuntimeError("a task through the gateway did not complete")
    return elapsed


async def run(args: argparse.Namespace) -> dict[str, Any]:
    config = ArgenticConfig.model_validate(
        {
            "messaging": {"namespace": NAMESPACE},
            "roles": {ROLE: {"description": "answers", "tools": [], "max_tasks": max(64, args.questions)}},
        }
    )
    with MosquittoBroker() as broker:
        async with (
            Messager(broker.host, broker.port, namespace=NAMESPACE, persistent=False) as bus,
            Messager(broker.host, broker.port, namespace=NAMESPACE, persistent=False) as asker,
            Messager(
                broker.host, broker.port, namespace=NAMESPACE, persistent=False, max_concurrent_handlers=256
            ) as front,
            Team(config, messager=bus, llm=scripted(args.model_s)),
            Gateway(front, timeout_s=300) as gateway,
            httpx.AsyncClient(timeout=300) as http,
        ):
            await wait_until(lambda: gateway.roster.online(ROLE) is not None, what="the role online")
            client = AgentClient(asker, ROLE, timeout_s=300)
            url = gateway.role_url(ROLE)
            log(f"warm-up: {args.questions} questions each way")
            await mqtt_pass(client, args.questions)
            await gateway_pass(url, http, args.questions)
            mqtt_runs: list[float] = []
            gateway_runs: list[float] = []
            for number in range(args.rounds):
                if number % 2 == 0:
                    mqtt_runs.append(await mqtt_pass(client, args.questions))
                gateway_runs.append(await gateway_pass(url, http, args.questions))
                if number % 2 == 1:
                    mqtt_runs.append(await mqtt_pass(client, args.questions))
                log(f"round {number + 1}: mqtt {mqtt_runs[-1]:.3f} s, gateway {gateway_runs[-1]:.3f} s")
    mqtt_s, gateway_s = min(mqtt_runs), min(gateway_runs)
    return {
        "questions": args.questions,
        "model_s": args.model_s,
        "mqtt_tasks_per_min": round(args.questions / mqtt_s * 60, 1),
        "gateway_tasks_per_min": round(args.questions / gateway_s * 60, 1),
        "gateway_ratio": round(mqtt_s / gateway_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=64, help="concurrent questions each way")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model-s", type=float, default=0.5, help="the scripted model's seconds per reply")
    parser.add_argument("--quick", action="store_true", help="4 questions, one round: checks that it runs")
    args = parser.parse_args()
    if args.quick:
        args.questions, args.rounds, args.model_s = 4, 1, 0.05
    result = asyncio.run(run(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
