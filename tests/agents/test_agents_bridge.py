"""Two mosquitto brokers bridged, an edge and a centre (mosquitto's `connection` bridge, the
namespace in both directions): a client on the edge asks an agent on the centre, and answers,
progress events, presence and tool announcements cross the bridge both ways."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from agents_support import REPO, all_tools

from argentic.agents import Agent, AgentClient
from argentic.agents.delegation import Directory
from argentic.llm import ScriptedLLM, tool_call
from argentic.messaging import Messager
from argentic.protocol import ToolAnnouncement
from argentic.testing.messagers import MakeMessager, connected_messagers
from argentic.testing.mosquitto import MosquittoBroker, bridge_config
from argentic.tools import ToolManager, ToolService

BRIDGE = REPO / "deploy" / "mosquitto-bridge.conf"


@pytest.fixture
def brokers(namespace: str) -> Iterator[tuple[MosquittoBroker, MosquittoBroker]]:
    """(edge, centre): the edge bridges the namespace to the centre, as deploy/mosquitto-bridge.conf."""
    with MosquittoBroker(persistence=False) as centre:
        bridge = bridge_config(BRIDGE, centre, namespace)
        with MosquittoBroker(persistence=False, extra_config=bridge) as edge:
            yield edge, centre


@pytest.fixture
async def on(brokers: tuple[MosquittoBroker, MosquittoBroker], namespace: str) -> AsyncIterator[MakeMessager]:
    """``await on("edge")`` or ``await on("centre")``: a messager connected to that broker."""
    edge, centre = brokers

    def build(where: str, **options: Any) -> Messager:
        broker = edge if where == "edge" else centre
        return Messager(broker.host, broker.port, namespace=namespace, persistent=False, **options)

    async with connected_messagers(build) as make:
        yield make


async def test_a_client_on_the_edge_asks_an_agent_on_the_centre(on: MakeMessager) -> None:
    # The tool service sits on the edge, the agent that calls it on the centre: announcements and
    # calls cross one way, results the other.
    async with ToolService(await on("edge"), all_tools(), "math"):
        bus = await on("centre")
        llm = ScriptedLLM([tool_call("add", {"a": 2, "b": 3}), "five"])
        async with ToolManager(bus) as tools, Agent(llm=llm, messager=bus, tool_manager=tools, role="calc"):
            await tools.wait_for_tools("add", timeout=15)
            edge = await on("edge")
            # The agent's retained presence (and its client's status) reached the edge.
            assert await edge.shared(Directory).online("calc", timeout=15)
            client = AgentClient(edge, role="calc")
            async with client.stream("2 + 3?", timeout=30) as run:
                events = [event async for event in run]
            answer = await run.answer()
            assert answer is not None and answer.text == "five"
            assert events, "progress events crossed the bridge"
            assert [(c.name, c.result) for c in answer.tool_calls] == [("add", 5)]


async def test_tool_announcements_cross_the_bridge_both_ways(on: MakeMessager) -> None:
    for where, other in (("edge", "centre"), ("centre", "edge")):
        async with ToolService(await on(where), all_tools(), f"tools-{where}"):
            # The retained announcement, read on the other broker, and a call across.
            probe = await on(other)
            topic = probe.topics.tool_service(f"tools-{where}")
            async with probe.messages(topic, model=ToolAnnouncement) as found:
                announcement = await asyncio.wait_for(anext(aiter(found)), 15)
            assert announcement.service_id == f"tools-{where}"
            assert "add" in {t.name for t in announcement.tools}
            async with ToolManager(await on(other)) as tools:
                await tools.wait_for_tools("add", timeout=15)
                assert (await tools.call("add", {"a": 1, "b": 2}, timeout=15)).result == 3
