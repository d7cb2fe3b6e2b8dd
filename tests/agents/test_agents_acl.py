"""argentic under the broker ACL of deploy/mosquitto.acl, one user and password per party (each role
logs in as its role, each tool service as its service id): the whole path works (question, tool
call, delegation, cancel, ask-back), and the broker refuses what a party may not do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from agents_support import REPO, all_tools
from team_support import answers, ask_following, asks, asks_back, config, model, states, team

from argentic.agents import Agent, AgentClient
from argentic.errors import AgentReplyError, MessagingError
from argentic.llm import ScriptedLLM, tool_call
from argentic.messaging import Messager
from argentic.protocol import Presence, ToolAnnouncement
from argentic.testing.messagers import MakeMessager, connected_messagers
from argentic.testing.mosquitto import MosquittoBroker
from argentic.tools import ToolManager, ToolService

ACL = REPO / "deploy" / "mosquitto.acl"
ROLES = ("calc", "architect", "developer", "reviewer")
USERS = {
    **{role: f"{role}-secret" for role in ROLES},
    "math": "t-secret",  # the tool service "math"
    "client": "c-secret",  # a person
    "video": "v-secret",
}


@pytest.fixture
def guarded(namespace: str) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(users=USERS, acl_file=ACL, namespace=namespace) as broker:
        yield broker


@pytest.fixture
async def party(guarded: MosquittoBroker, namespace: str) -> AsyncIterator[MakeMessager]:
    """``await party("architect")``: a messager logged in as that party."""

    def build(user: str, **options: Any) -> Messager:
        return Messager(
            guarded.host, guarded.port, namespace=namespace, username=user, password=USERS[user], **options
        )

    async with connected_messagers(build) as make:
        yield make


async def test_the_system_works_under_the_acl(party: MakeMessager) -> None:
    async with ToolService(await party("math"), all_tools(), "math"):
        bus = await party("calc")
        llm = ScriptedLLM([tool_call("add", {"a": 2, "b": 3}), "five"])
        async with ToolManager(bus) as tools, Agent(llm=llm, messager=bus, tool_manager=tools, role="calc"):
            await tools.wait_for_tools("add")
            client = AgentClient(await party("client"), role="calc")
            assert await client.online(timeout=5)
            async with client.stream("2 + 3?") as run:
                events = [event async for event in run]
            answer = await run.answer()
            assert answer is not None and answer.text == "five" and events
            assert [(c.name, c.result) for c in answer.tool_calls] == [("add", 5)]


async def test_a_client_cannot_publish_where_the_acl_forbids(party: MakeMessager) -> None:
    async with ToolService(await party("math"), all_tools(), "math") as service:
        client = await party("client")
        forged = ToolAnnouncement(service_id="math", tools=[])
        for topic in (
            service.topic,  # hide the service's tools
            client.topics.tool_calls("add"),  # call a tool directly
            client.topics.agent_status("calc"),  # pose as an agent
            client.topics.agent_events("calc", "q1"),  # speak for an agent's task
        ):
            with pytest.raises(MessagingError, match="refused"):
                await client.publish(topic, forged, retain=True)
        async with ToolManager(await party("calc")) as tools:
            await tools.wait_for_tools("add", timeout=10)
            assert (await tools.call("add", {"a": 1, "b": 1}, timeout=10)).result == 2


def _team_config(namespace: str) -> Any:
    return config(
        namespace,
        {
            "architect": {"delegates": ["developer", "reviewer"]},
            "developer": {},
            "reviewer": {"ask_back": True},
        },
    )


async def test_a_team_delegates_cancels_and_asks_back_each_role_as_its_own_user(
    party: MakeMessager, namespace: str
) -> None:
    hanging = asyncio.Event()

    async def developer(text: str, results: list[str]) -> str:
        if text == "hang":
            hanging.set()
            await asyncio.sleep(3600)
        return answers("code")(text, results)

    def architect(text: str, results: list[str]) -> Any:
        return asks("ask_developer", text, then="plan")(text, results)

    cfg = _team_config(namespace)
    models = {
        "architect": model(architect),
        "developer": model(developer),
        "reviewer": model(asks_back("which?")),
    }
    async with (
        team(cfg, await party("architect"), models, roles=["architect"]),
        team(cfg, await party("developer"), models, roles=["developer"]),
        team(cfg, await party("reviewer"), models, roles=["reviewer"]),
    ):
        person = await party("client")
        # A delegation: the architect (user architect) asks the developer (user developer).
        answer, statuses, error = await ask_following(
            AgentClient(person, "architect"), "write add()", timeout=30
        )
        assert error is None and answer.text == 'plan: "code: write add()"'
        assert states(statuses, "developer") == ["submitted", "working", "completed"]
        # A cancel from the person who asked reaches the role and its delegate.
        async with AgentClient(person, "architect").stream("hang", timeout=30) as run:
            async for event in run:
                if getattr(event, "role", None) == "developer" and getattr(event, "state", None) == "working":
                    await asyncio.wait_for(hanging.wait(), 10)
                    await run.cancel("stop")
        with pytest.raises(AgentReplyError) as caught:
            await run.answer()
        assert caught.value.code == "canceled"
        # An ask-back: the person answers the reviewer's input-required.
        async with AgentClient(person, "reviewer").stream("review it", timeout=30) as run:
            async for event in run:
                if getattr(event, "state", None) == "input-required":
                    await run.give_input(event, "main.py")
        assert (await run.answer()).text == 'reviewed "main.py"'


async def test_a_role_answers_the_input_its_delegate_asks_for(party: MakeMessager, namespace: str) -> None:
    def architect(text: str, results: list[str]) -> Any:
        if text.startswith("You asked the reviewer"):
            return "the one in src"  # the reviewer asked back: the architect's model answers
        if not results:
            return tool_call("ask_reviewer", {"question": "review it"})
        return "done: " + results[0]

    cfg = _team_config(namespace)
    models = {"architect": model(architect), "reviewer": model(asks_back("which one?"))}
    async with (
        team(cfg, await party("architect"), models, roles=["architect"]),
        team(cfg, await party("reviewer"), models, roles=["reviewer"]),
    ):
        answer, statuses, error = await ask_following(
            AgentClient(await party("client"), "architect"), "go", timeout=30
        )
    assert error is None and answer.text == 'done: "reviewed \\"the one in src\\""'
    assert "input-required" in states(statuses, "reviewer")


async def test_a_role_can_neither_forge_another_roles_card_nor_take_its_questions(
    party: MakeMessager, namespace: str
) -> None:
    cfg = _team_config(namespace)
    models = {"developer": model(answers("code"))}
    async with team(cfg, await party("developer"), models, roles=["developer"]):
        intruder = await party("architect")
        client = AgentClient(await party("client"), "developer")
        assert await client.online(timeout=5)
        forged = Presence(role="developer", online=True, client_id=intruder.client_id)
        # Its card, its events: the broker refuses the publish.
        for topic in (
            intruder.topics.agent_status("developer"),
            intruder.topics.agent_events("developer", "q1"),
        ):
            with pytest.raises(MessagingError, match="refused"):
                await intruder.publish(topic, forged, retain=True)
        taken: list[Any] = []

        async def take(message: Any) -> None:
            taken.append(message)

        # Its questions: mosquitto 2.0 grants the subscription (alone or in the role's shared group)
        # but delivers nothing it may not read. A question rotated to the intruder's member of the
        # group is dropped there; the asker's resend (after a third of its timeout) reaches the role.
        for group in (None, "developer"):
            await intruder.subscribe(intruder.topics.agent_questions("developer"), take, shared_group=group)
        for _ in range(4):
            assert await client.ask("hello", timeout=6) == "code: hello"
        assert taken == []
        assert await client.online(timeout=5)
