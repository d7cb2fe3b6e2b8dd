"""``argentic status``: the roles, tool services, model servers and tasks on a real mosquitto, read
by the command in a process of its own (and the task view through FleetWatch in this one)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator

import pytest
from observe_support import REPO, FakeVLLM, add, eventually, free_port

from argentic.agents import Agent, AgentClient
from argentic.config import LLMConfig
from argentic.llm import ChatRequest, FunctionLLM
from argentic.observability.fleet import FleetStatus, FleetWatch
from argentic.protocol import AgentCard
from argentic.testing.messagers import MakeMessager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.tools import ToolManager, ToolService


@pytest.fixture
async def fleet(mqtt: MakeMessager) -> AsyncIterator[Agent]:
    """An agent of role 'counter' (with a card) and a tool service 'arith' serving ``add``."""
    bus = await mqtt()
    async with ToolService(await mqtt(), [add], "arith"), ToolManager(bus) as tools:
        await tools.wait_for_tools("add")
        agent = Agent(llm=FunctionLLM(lambda r: "done"), messager=bus, tool_manager=tools, role="counter")
        agent.card = AgentCard(description="counts things", model="fake/model", tools=["add"])
        async with agent:
            yield agent


def bus_env(mosquitto: MosquittoBroker, namespace: str) -> dict[str, str]:
    return {
        "ARGENTIC_MESSAGING__BROKER_ADDRESS": "127.0.0.1",
        "ARGENTIC_MESSAGING__PORT": str(mosquitto.port),
        "ARGENTIC_MESSAGING__NAMESPACE": namespace,
    }


async def status_json(mosquitto: MosquittoBroker, namespace: str, **env: str) -> FleetStatus:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "argentic.cli.main", "status", "--json", "--wait", "1",
        cwd=REPO, env={**os.environ, **bus_env(mosquitto, namespace), **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()[-2000:]
    lines = out.decode().strip().splitlines()
    assert len(lines) == 1, out.decode()  # one JSON object
    return FleetStatus.model_validate(json.loads(lines[0]))


async def test_status_lists_roles_tools_and_model_servers_up_and_down(
    fleet: Agent, mosquitto: MosquittoBroker, namespace: str
) -> None:
    down_url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with FakeVLLM() as server:
        status = await status_json(
            mosquitto,
            namespace,
            ARGENTIC_LLM__PROVIDER="vllm",
            ARGENTIC_LLM__VLLM_BASE_URL=server.url,
            ARGENTIC_LLM__ENDPOINTS=f"{{big: {{base_url: '{down_url}'}}}}",
        )
    assert status.namespace == namespace
    [role] = status.roles
    assert role.role == "counter" and role.online and role.replicas == 1
    assert fleet.messager is not None and role.client_id == fleet.messager.client_id
    assert role.card is not None and role.card.description == "counts things" and role.card.tools == ["add"]
    [service] = status.tool_services
    assert service.service_id == "arith" and service.online and service.tools == ["add"]

    servers = {s.endpoint: s for s in status.model_servers}
    assert set(servers) == {"default", "big"}
    up, down = servers["default"], servers["big"]
    assert up.up and up.model == "fake/model"
    assert (up.running, up.waiting, up.kv_cache_usage) == (3, 2, 0.25)
    assert up.prefix_cache_hit_rate == 0.25
    assert up.tokens_per_s is not None and up.tokens_per_s > 0  # two readings, 100 tokens apart
    assert not down.up and down.model is None and down.base_url == down_url


def replicas(status: FleetStatus) -> dict[str, int]:
    return {role.role: role.replicas for role in status.roles}


async def test_status_counts_every_replica_busy_or_idle_until_its_client_goes(
    mqtt: MakeMessager, mosquitto: MosquittoBroker, namespace: str
) -> None:
    # Two idle replicas of 'coder', one of them `argentic agent` in a process of its own, and one
    # of 'tester'. None has answered anything: only their clients' statuses tell they serve.
    replica = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "argentic.cli.main", "agent", "--role", "coder",
        cwd=REPO,
        env={
            **os.environ, **bus_env(mosquitto, namespace),
            "ARGENTIC_LLM__PROVIDER": "scripted", "ARGENTIC_STORAGE__URL": "memory://",
        },
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert replica.stderr is not None
        said: list[bytes] = []
        async with asyncio.timeout(60):  # it says so on standard error once it serves
            while b"answering" not in (said[-1] if said else b""):
                said.append(await replica.stderr.readline())
                assert said[-1], b"".join(said).decode()[-2000:]
        async with (
            Agent(llm=FunctionLLM(lambda r: "ok"), messager=await mqtt(), role="coder") as coder,
            Agent(llm=FunctionLLM(lambda r: "ok"), messager=await mqtt(), role="tester"),
        ):
            status = await status_json(mosquitto, namespace, ARGENTIC_LLM__PROVIDER="scripted")
            assert replicas(status) == {"coder": 2, "tester": 1}
            assert all(role.online for role in status.roles)
            [coders] = [role.clients for role in status.roles if role.role == "coder"]
            assert coder.messager is not None and coder.messager.client_id in coders and len(coders) == 2
            # The process dies without a word: its last will takes its replica away.
            replica.kill()
            await replica.wait()
            status = await status_json(mosquitto, namespace, ARGENTIC_LLM__PROVIDER="scripted")
            assert replicas(status) == {"coder": 1, "tester": 1}
            assert [role.clients for role in status.roles if role.role == "coder"] == [
                [coder.messager.client_id]
            ]
        # Stopped: no replica is left.
        status = await status_json(mosquitto, namespace, ARGENTIC_LLM__PROVIDER="scripted")
        assert replicas(status) == {"coder": 0, "tester": 0}
        assert not any(role.online for role in status.roles)
    finally:
        if replica.returncode is None:
            replica.kill()
            await replica.wait()


async def test_agents_of_one_role_on_one_client_are_counted_each_as_they_start_and_stop(
    mqtt: MakeMessager,
) -> None:
    bus = await mqtt()
    async with FleetWatch(await mqtt(), LLMConfig(provider="scripted")) as watch:

        async def counted(expected: dict[str, int]) -> bool:
            return replicas(await watch.report()) == expected

        first = Agent(llm=FunctionLLM(lambda r: "ok"), messager=bus, role="coder")
        second = Agent(llm=FunctionLLM(lambda r: "ok"), messager=bus, role="coder")
        async with first:
            async with second:
                await eventually(lambda: counted({"coder": 2}))
                [role] = (await watch.report()).roles
                assert role.online and role.clients == [bus.client_id]
            await eventually(lambda: counted({"coder": 1}))
        await eventually(lambda: counted({"coder": 0}))
        [role] = (await watch.report()).roles
        assert not role.online and role.clients == []
        # A replica that worked while watched, then left with its client: not counted either.
        other = await mqtt()
        async with Agent(llm=FunctionLLM(lambda r: "ok"), messager=other, role="coder"):
            assert await AgentClient(await mqtt(), "coder").ask("hi", timeout=30) == "ok"
            await eventually(lambda: counted({"coder": 1}))
        await other.disconnect()
        await eventually(lambda: counted({"coder": 0}))


async def test_status_without_anything_running_says_so(mosquitto: MosquittoBroker, namespace: str) -> None:
    status = await status_json(mosquitto, namespace, ARGENTIC_LLM__PROVIDER="scripted")
    assert status.roles == [] and status.tool_services == [] and status.model_servers == []
    assert status.tasks == []


async def test_a_task_in_flight_is_listed_until_it_ends(mqtt: MakeMessager) -> None:
    release = asyncio.Event()

    async def slow(request: ChatRequest) -> str:
        await release.wait()
        return "finally"

    async with (
        Agent(llm=FunctionLLM(slow), messager=await mqtt(), role="slowpoke"),
        FleetWatch(await mqtt(), LLMConfig(provider="scripted")) as watch,
    ):
        client = AgentClient(await mqtt(), "slowpoke")
        asking = asyncio.ensure_future(client.ask("take your time", timeout=30))
        seen: list[FleetStatus] = []

        async def in_flight() -> bool:
            seen.append(await watch.report())
            return bool(seen[-1].tasks)

        async def none_in_flight() -> bool:
            return not await in_flight()

        await eventually(in_flight)
        [task] = seen[-1].tasks
        assert task.role == "slowpoke" and task.state == "working" and task.asked_by is None
        release.set()
        assert await asking == "finally"
        await eventually(none_in_flight)


async def test_status_prints_a_table(fleet: Agent, mosquitto: MosquittoBroker, namespace: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "argentic.cli.main", "status", "--wait", "1",
        cwd=REPO,
        env={
            **os.environ,
            **bus_env(mosquitto, namespace),
            "ARGENTIC_LLM__PROVIDER": "scripted",
            "COLUMNS": "200",
        },
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()[-2000:]
    text = out.decode()
    for heading in ("Roles", "Tool services", "Model servers", "Tasks in flight"):
        assert heading in text
    assert "counter" in text and "counts things" in text and "arith" in text


async def test_every_server_of_an_endpoint_is_a_row_of_its_own(mqtt: MakeMessager) -> None:
    down_url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with FakeVLLM() as first, FakeVLLM() as second:
        llm = LLMConfig.model_validate(
            {
                "provider": "vllm",
                "base_urls": [first.url, down_url],
                "endpoints": {"big": {"base_urls": [second.url]}},
            }
        )
        async with FleetWatch(await mqtt(), llm) as watch:
            servers = (await watch.report()).model_servers
    rows = [(s.endpoint, s.base_url, s.up) for s in servers]
    assert rows == [("default", first.url, True), ("default", down_url, False), ("big", second.url, True)]
