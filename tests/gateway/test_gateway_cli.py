"""``argentic gateway`` as a process: the a2a-sdk's client asks a role through it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, create_client
from a2a.types import TaskState
from gateway_support import request
from team_support import answers, config, model, team

from argentic.netutil import free_port
from argentic.protocol import Question
from argentic.testing.messagers import MakeMessager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.processes import command_env, serving_command

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def gateway_process(env: dict[str, str]) -> Iterator[str]:
    """``argentic gateway`` in a process of its own: its base URL."""
    port = free_port()
    args = ["gateway", "--port", str(port)]
    with serving_command(args, env, port=port, what="argentic gateway", cwd=REPO):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def gateway_url(mosquitto: MosquittoBroker, namespace: str) -> Iterator[str]:
    with gateway_process(command_env(mosquitto.port, namespace)) as url:
        yield url


async def wait_roles(http: httpx.AsyncClient, gateway_url: str) -> list[str]:
    """The roles the gateway sees online, once it sees any (a guard: the retained presences
    arrive within moments)."""
    roles: list[str] = []
    for _ in range(300):
        roles = [r["role"] for r in (await http.get(f"{gateway_url}/roles")).json()["roles"]]
        if roles:
            break
        await asyncio.sleep(0.05)
    return roles


async def test_argentic_gateway_serves_the_roles_on_the_broker(
    gateway_url: str, mqtt: MakeMessager, namespace: str
) -> None:
    cfg = config(namespace, {"helper": {"description": "helps"}})
    async with team(cfg, await mqtt(), {"helper": model(answers("helped"))}), httpx.AsyncClient() as http:
        roles = await wait_roles(http, gateway_url)
        url = f"{gateway_url}/agents/helper/"
        card = await A2ACardResolver(http, url).get_agent_card()
        client = await create_client(url, client_config=ClientConfig(streaming=False))
        replies = [r async for r in client.send_message(request("hello"))]
        await client.close()
    assert roles == ["helper"] and card.description == "helps"
    task = replies[-1].task
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert [a.parts[0].text for a in task.artifacts if a.name == "answer"] == ["helped: hello"]


async def test_a_traced_gateway_passes_its_trace_on_to_the_role(
    mosquitto: MosquittoBroker, mqtt: MakeMessager, namespace: str, tmp_path: Path
) -> None:
    spans = tmp_path / "gateway.jsonl"
    env = {
        **command_env(mosquitto.port, namespace),
        "ARGENTIC_TRACING__ENABLED": "true",
        "ARGENTIC_TRACING__FILE": str(spans),
    }
    asked: list[Question] = []

    async def spy(question: Question) -> None:
        asked.append(question)

    watcher = await mqtt()
    await watcher.subscribe(watcher.topics.agent_questions("helper"), spy, model=Question)
    # The A2A caller's own trace context (W3C: 00-{trace id}-{its span id}-{flags}).
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    traced = {"traceparent": f"00-{caller_trace}-{caller_span}-01"}
    cfg = config(namespace, {"helper": {"description": "helps"}})
    with gateway_process(env) as gateway_url:
        async with (
            team(cfg, await mqtt(), {"helper": model(answers("helped"))}),
            httpx.AsyncClient() as http,
            httpx.AsyncClient(headers=traced, timeout=30) as caller,
        ):
            assert await wait_roles(http, gateway_url) == ["helper"]
            url = f"{gateway_url}/agents/helper/"
            config_ = ClientConfig(streaming=False, httpx_client=caller)
            client = await create_client(url, client_config=config_)
            replies = [r async for r in client.send_message(request("hello"))]
            await client.close()
    assert replies[-1].task.status.state == TaskState.TASK_STATE_COMPLETED
    written = [json.loads(line) for line in spans.read_text().splitlines() if line.strip()]
    # The gateway's spans of the request are in the caller's trace, under the caller's span.
    assert written and {span["context"]["trace_id"] for span in written} == {f"0x{caller_trace}"}
    ids = {span["context"]["span_id"] for span in written}
    assert {span["parent_id"] for span in written} - ids == {f"0x{caller_span}"}
    # And the question the gateway asked goes on in that trace, under one of them.
    [question] = asked
    assert question.traceparent is not None
    _, trace_id, parent_id, _ = question.traceparent.split("-")
    assert trace_id == caller_trace and f"0x{parent_id}" in ids
