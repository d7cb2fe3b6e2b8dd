"""argentic under the broker ACL of deploy/mosquitto.acl, one user and password per party: the
whole path works (question, tool call, answer), and a party cannot publish where the ACL forbids."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from agents_support import REPO, all_tools

from argentic.agents import Agent, AgentClient
from argentic.errors import MessagingError
from argentic.llm import ScriptedLLM, tool_call
from argentic.messaging import Messager
from argentic.protocol import ToolAnnouncement
from argentic.testing.messagers import MakeMessager, connected_messagers
from argentic.testing.mosquitto import MosquittoBroker
from argentic.tools import ToolManager, ToolService

ACL = REPO / "deploy" / "mosquitto.acl"
USERS = {"client": "c-secret", "agent": "a-secret", "tools": "t-secret", "video": "v-secret"}


@pytest.fixture
def guarded(namespace: str) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(users=USERS, acl_file=ACL, namespace=namespace) as broker:
        yield broker


@pytest.fixture
async def party(guarded: MosquittoBroker, namespace: str) -> AsyncIterator[MakeMessager]:
    """``await party("agent")``: a messager logged in as that party."""

    def build(user: str, **options: Any) -> Messager:
        return Messager(
            guarded.host, guarded.port, namespace=namespace, username=user, password=USERS[user], **options
        )

    async with connected_messagers(build) as make:
        yield make


async def test_the_system_works_under_the_acl(party: MakeMessager) -> None:
    async with ToolService(await party("tools"), all_tools(), "math"):
        bus = await party("agent")
        llm = ScriptedLLM([tool_call("add", {"a": 2, "b": 3}), "five"])
        async with ToolManager(bus) as tools, Agent(llm=llm, messager=bus, tool_manager=tools, role="calc"):
            await tools.wait_for_tools("add")
            client = AgentClient(await party("client"), role="calc")
            assert await client.online(timeout=5)
            async with client.stream("2 + 3?") as run:
                events = [event async for event in run]
            answer = run.answer
            assert answer is not None and answer.text == "five" and events
            assert [(c.name, c.result) for c in answer.tool_calls] == [("add", 5)]


async def test_a_client_cannot_publish_where_the_acl_forbids(party: MakeMessager) -> None:
    async with ToolService(await party("tools"), all_tools(), "math") as service:
        client = await party("client")
        forged = ToolAnnouncement(service_id="math", tools=[])
        for topic in (
            service.topic,  # hide the service's tools
            client.topics.client_inbox("someone-else"),  # answer for an agent
            client.topics.tool_calls("add"),  # call a tool directly
            client.topics.agent_status("calc"),  # pose as an agent
        ):
            with pytest.raises(MessagingError, match="refused"):
                await client.publish(topic, forged, retain=True)
        async with ToolManager(await party("agent")) as tools:
            await tools.wait_for_tools("add", timeout=10)
            assert (await tools.call("add", {"a": 1, "b": 1}, timeout=10)).result == 2
