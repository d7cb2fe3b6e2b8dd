"""``argentic gateway`` as a process: the a2a-sdk's client asks a role through it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, create_client
from a2a.types import TaskState
from gateway_support import request
from team_support import answers, config, model, team

from argentic.netutil import free_port
from argentic.testing.messagers import MakeMessager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.processes import command_env, stop_process, wait_listening

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def gateway_url(mosquitto: MosquittoBroker, namespace: str) -> Iterator[str]:
    env = command_env(mosquitto.port, namespace)
    port = free_port()
    command = [sys.executable, "-m", "argentic.cli.main", "gateway", "--port", str(port)]
    process = subprocess.Popen(command, cwd=REPO, env=env)
    try:
        wait_listening(process, port, what="argentic gateway")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


async def test_argentic_gateway_serves_the_roles_on_the_broker(
    gateway_url: str, mqtt: MakeMessager, namespace: str
) -> None:
    cfg = config(namespace, {"helper": {"description": "helps"}})
    async with team(cfg, await mqtt(), {"helper": model(answers("helped"))}), httpx.AsyncClient() as http:

        async def roles_online() -> list[str]:
            return [r["role"] for r in (await http.get(f"{gateway_url}/roles")).json()["roles"]]

        roles: list[str] = []
        for _ in range(300):  # a guard: the gateway sees the retained presence within moments
            roles = await roles_online()
            if roles:
                break
            await asyncio.sleep(0.05)
        url = f"{gateway_url}/agents/helper/"
        card = await A2ACardResolver(http, url).get_agent_card()
        client = await create_client(url, client_config=ClientConfig(streaming=False))
        replies = [r async for r in client.send_message(request("hello"))]
        await client.close()
    assert roles == ["helper"] and card.description == "helps"
    task = replies[-1].task
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert [a.parts[0].text for a in task.artifacts if a.name == "answer"] == ["helped: hello"]
