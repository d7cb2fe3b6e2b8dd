"""One lifecycle on a real mosquitto: ``async with`` starts and stops every part, and parts that
share one messager keep their presence right, whether they leave gracefully or die."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agents_support import REPO, add
from team_support import config as team_config

from argentic import Agent, AgentClient, ToolManager, ToolService
from argentic.agents.tasks import TaskBoard
from argentic.agents.team import Team
from argentic.errors import ConfigError, LLMUnavailableError, MessagingError, RequestTimeoutError
from argentic.lifecycle import Running
from argentic.llm import FunctionLLM, ScriptedLLM, tool_call
from argentic.messaging import Messager
from argentic.protocol import ClientStatus, Presence
from argentic.testing.messagers import MakeMessager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.waiting import wait_until

HERE = Path(__file__).resolve().parent


async def retained(messager: Messager, topic: str, wait_s: float = 1.0) -> bytes | None:
    """The retained payload on ``topic`` (None when there is none)."""
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_message(message: object) -> None:
        got.put_nowait(b"message")

    async def on_empty(_: str) -> None:
        got.put_nowait(b"")

    sub = await messager.subscribe(topic, on_message, on_empty=on_empty)
    try:
        return await asyncio.wait_for(got.get(), wait_s)
    except TimeoutError:
        return None
    finally:
        await messager.unsubscribe(sub)


async def presence_of(messager: Messager, role: str) -> Presence | None:
    got: asyncio.Queue[Presence] = asyncio.Queue()

    async def on_presence(presence: Presence) -> None:
        got.put_nowait(presence)

    sub = await messager.subscribe(messager.topics.agent_status(role), on_presence, model=Presence)
    try:
        return await asyncio.wait_for(got.get(), 1.0)
    except TimeoutError:
        return None
    finally:
        await messager.unsubscribe(sub)


async def test_parts_on_one_messager_start_and_stop_with_async_with(mqtt: MakeMessager) -> None:
    bus, observer = await mqtt(), await mqtt()
    watcher = ToolManager(observer)
    await watcher.start()
    llm = ScriptedLLM([tool_call("add", {"a": 2, "b": 3}), "5"])
    async with (
        ToolService(bus, [add], "math") as service,
        ToolManager(bus) as tools,
        Agent(llm=llm, messager=bus, tool_manager=tools, role="calc") as agent,
    ):
        await tools.wait_for_tools("add")
        assert service.announcement().client_id == bus.client_id
        presence = await presence_of(observer, "calc")
        assert presence is not None and presence.online and presence.client_id == bus.client_id
        client = AgentClient(observer, "calc")
        assert await client.online()
        assert await client.ask("2 + 3?", timeout=30) == "5"
        assert agent.role == "calc"
    # Leaving the block withdrew the tools and said offline; the messager itself stays connected.
    await wait_until(lambda: "add" not in watcher.tools)
    presence = await presence_of(observer, "calc")
    assert presence is not None and not presence.online
    assert not await AgentClient(observer, "calc").online()
    assert bus.is_connected


async def test_a_graceful_disconnect_clears_the_client_status(mqtt: MakeMessager) -> None:
    bus, observer = await mqtt(), await mqtt()
    topic = bus.topics.client_status(bus.client_id)
    statuses: list[ClientStatus] = []

    async def on_status(status: ClientStatus) -> None:
        statuses.append(status)

    await observer.subscribe(topic, on_status, model=ClientStatus)
    await wait_until(lambda: any(s.online for s in statuses))
    await bus.disconnect()
    assert await retained(observer, topic) is None  # cleared, not a retained "gone" forever
    assert not any(not s.online for s in statuses)


def _start(port: int, namespace: str, client_id: str, role: str, service: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO / "src")])}
    process = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "shared_messager_process.py"),
            str(port),
            namespace,
            client_id,
            role,
            service,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.strip() == "READY", line
    return process


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)


async def test_a_killed_process_makes_everything_it_announced_stale(
    mosquitto: MosquittoBroker, namespace: str, mqtt: MakeMessager, processes: list[subprocess.Popen[str]]
) -> None:
    observer = await mqtt()
    tools = ToolManager(observer)
    await tools.start()
    process = await asyncio.to_thread(_start, mosquitto.port, namespace, "shared-1", "calc", "math")
    processes.append(process)
    await tools.wait_for_tools("add", timeout=10)
    client = AgentClient(observer, "calc")
    assert await client.online()

    os.kill(process.pid, signal.SIGKILL)
    # One will (the client's) covers the agent and the tool service on that messager.
    await wait_until(lambda: "add" not in tools.tools, limit_s=30)
    await wait_until(lambda: observer.peers.gone("shared-1"), limit_s=5)
    assert not await client.online()
    # A manager that starts later does not take the stale retained announcement for live tools.
    late = ToolManager(await mqtt())
    await late.start()
    await asyncio.sleep(0.3)
    assert "add" not in late.tools
    assert not await AgentClient(await mqtt(), "calc").online()


async def test_a_live_replica_takes_over_the_presence_of_a_killed_one(
    mosquitto: MosquittoBroker, namespace: str, mqtt: MakeMessager, processes: list[subprocess.Popen[str]]
) -> None:
    observer = await mqtt()
    first = await asyncio.to_thread(_start, mosquitto.port, namespace, "replica-1", "calc", "math")
    processes.append(first)
    second = await asyncio.to_thread(_start, mosquitto.port, namespace, "replica-2", "calc", "math")
    processes.append(second)
    tools = ToolManager(observer)
    await tools.start()
    await tools.wait_for_tools("add", timeout=10)
    presence = await presence_of(observer, "calc")
    assert presence is not None and presence.client_id in ("replica-1", "replica-2")
    holder = first if presence.client_id == "replica-1" else second
    survivor_id = "replica-2" if holder is first else "replica-1"

    seen: list[Presence] = []

    async def on_presence(presence: Presence) -> None:
        seen.append(presence)

    await observer.subscribe(observer.topics.agent_status("calc"), on_presence, model=Presence)
    os.kill(holder.pid, signal.SIGKILL)
    await wait_until(lambda: any(p.online and p.client_id == survivor_id for p in seen), limit_s=30)
    now = await presence_of(observer, "calc")
    assert now is not None and now.online and now.client_id == survivor_id
    # The tools stay known too: the survivor announced them again.
    await wait_until(lambda: tools.services.get("math") is not None, limit_s=10)
    assert "add" in tools.tools
    assert await AgentClient(observer, "calc").online()


class _Part(Running):
    """A part that opens things in its start and fails (or hangs) at a chosen point."""

    def __init__(self, *, fail: bool = False, hang: bool = False, stop_fails: bool = False) -> None:
        self.fail, self.hang, self.stop_fails = fail, hang, stop_fails
        self.open: list[str] = []
        self.stops = 0

    async def start(self) -> None:
        self.open.append("socket")
        if self.hang:
            await asyncio.sleep(3600)
        if self.fail:
            raise ConfigError("the second half of the start failed")
        self.open.append("subscription")

    async def stop(self) -> None:
        self.stops += 1
        self.open.clear()
        if self.stop_fails:
            raise RuntimeError("stop failed too")


async def test_a_part_whose_start_fails_is_stopped_and_the_start_error_raised() -> None:
    part = _Part(fail=True)
    with pytest.raises(ConfigError, match="second half"):
        async with part:
            pytest.fail("the block must not run")
    assert part.stops == 1 and part.open == []
    # A stop that fails as well is logged; the start's error is what the caller sees.
    both = _Part(fail=True, stop_fails=True)
    with pytest.raises(ConfigError, match="second half"):
        async with both:
            pytest.fail("the block must not run")
    assert both.stops == 1


async def test_a_cancelled_start_is_stopped_too() -> None:
    part = _Part(hang=True)

    async def enter() -> None:
        async with part:
            pytest.fail("the block must not run")

    task = asyncio.create_task(enter())
    await wait_until(lambda: part.open == ["socket"])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert part.stops == 1 and part.open == []


async def test_a_part_that_starts_is_stopped_once_on_leaving() -> None:
    part = _Part()
    async with part as entered:
        assert entered is part and part.open == ["socket", "subscription"] and part.stops == 0
    assert part.stops == 1 and part.open == []


class _UnreachableModel(FunctionLLM):
    """A model whose server cannot be reached: its agent's start fails (looking up its profile)."""

    async def resolve_model(self) -> str:
        raise LLMUnavailableError("no server answers")


async def test_a_team_that_fails_half_way_stops_the_agents_it_started(
    mqtt: MakeMessager, namespace: str
) -> None:
    cfg = team_config(namespace, {"good": {}, "bad": {}})
    models = {"good": FunctionLLM(lambda *_: "fine"), "bad": _UnreachableModel(lambda *_: "never")}
    observer = await mqtt()
    seen: list[Presence] = []

    async def on_presence(presence: Presence) -> None:
        seen.append(presence)

    await observer.subscribe(observer.topics.agent_status("good"), on_presence, model=Presence)
    bus = await mqtt()
    group = Team(cfg, messager=bus, llm=FunctionLLM(lambda *_: "default"), endpoints=models, replicas=2)
    with pytest.raises(LLMUnavailableError, match="no server answers"):
        await group.start()
    assert group.agents == []
    # The good role's replicas did start (said online) and were stopped (said offline), and nothing
    # answers its questions any more.
    await wait_until(lambda: any(not p.online for p in seen), what="the good role saying it is offline")
    assert seen[0].online and not seen[-1].online
    assert not await AgentClient(observer, "good").online()
    with pytest.raises(RequestTimeoutError):
        await AgentClient(observer, "good").ask("anyone?", timeout=1)
    # The same through `async with`: the error comes out, nothing is left serving.
    with pytest.raises(LLMUnavailableError):
        async with Team(cfg, messager=bus, llm=FunctionLLM(lambda *_: "default"), endpoints=models):
            pytest.fail("the block must not run")
    assert not await AgentClient(observer, "good").online()


async def test_the_older_lifecycle_names_still_work(mosquitto: MosquittoBroker, namespace: str) -> None:
    from argentic.agents.visual_agent import VisualAgent
    from argentic.core.agent.agent import Agent as OlderAgent
    from argentic.core.agent.visual_agent import VisualAgent as OlderVisualAgent
    from argentic.core.llm.llm_factory import LLMFactory as OlderFactory
    from argentic.core.messager.messager import Messager as OlderMessager
    from argentic.core.tools import ToolManager as OlderToolManager
    from argentic.llm import LLMFactory

    assert (OlderAgent, OlderVisualAgent, OlderFactory, OlderMessager, OlderToolManager) == (
        Agent,
        VisualAgent,
        LLMFactory,
        Messager,
        ToolManager,
    )
    # Connect, async_init, use, then stop and close by hand: the older form of `async with`.
    messager = OlderMessager(mosquitto.host, mosquitto.port, namespace=namespace, persistent=False)
    await messager.connect()
    observer = Messager(mosquitto.host, mosquitto.port, namespace=namespace, persistent=False)
    await observer.connect()
    try:
        tools = OlderToolManager(messager)
        await tools.async_init()
        llm = OlderFactory.create({"provider": "scripted"})
        agent = OlderAgent(llm=llm, messager=messager, tool_manager=tools, role="older")
        await agent.async_init()
        assert await AgentClient(observer, "older").online()
        assert await agent.query("hello")
        await agent.stop()
        await tools.close()
        await llm.close()
        assert not await AgentClient(observer, "older").online()
        assert tools._subscription is None
    finally:
        await messager.disconnect()
        await observer.disconnect()
    assert not messager.is_connected


class _RefusingMessager(Messager):
    """A messager whose subscription to one topic fails, as a broker refusing it would."""

    refused = ""

    async def subscribe(self, topic: str, *args: Any, **kwargs: Any) -> Any:
        if topic == self.refused:
            raise MessagingError(f"the broker refused {topic}")
        return await super().subscribe(topic, *args, **kwargs)


async def test_an_agent_whose_start_fails_half_way_undoes_what_it_did(
    mosquitto: MosquittoBroker, namespace: str
) -> None:
    async with _RefusingMessager("127.0.0.1", mosquitto.port, namespace=namespace) as bus:
        bus.refused = bus.topics.agent_questions("calc")
        board = bus.shared(TaskBoard)
        with pytest.raises(MessagingError, match="refused"):
            async with Agent(llm=ScriptedLLM(["never"]), messager=bus, role="calc"):
                pytest.fail("the block must not run")
        # It had joined the task board and watched the peers: both undone, nothing announced.
        assert "calc" not in board.roles
        assert not await AgentClient(bus, "calc").online(timeout=0.5)
        # The same agent starts once the broker takes the subscription.
        bus.refused = ""
        async with Agent(llm=ScriptedLLM(["fine"]), messager=bus, role="calc"):
            assert board.roles == {"calc": 1}
            assert await AgentClient(bus, "calc").query("ok?", timeout=10) == "fine"
        assert board.roles == {}
