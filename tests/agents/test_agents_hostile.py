"""Hostile requests on a real mosquitto: reply topics the broker refuses or the sender may not use,
ids that are no topic level, ids two clients share, and conversations one client names for another."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest
from agents_support import all_tools
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from argentic.agents import Agent
from argentic.errors import InvalidTopicError
from argentic.llm import ChatRequest, FunctionLLM
from argentic.messaging import Messager
from argentic.protocol import (
    Answer,
    ErrorReply,
    Presence,
    Question,
    ToolAnnouncement,
    ToolCall,
    parse_message,
)
from argentic.testing.messagers import MakeMessager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.tools import ToolManager, ToolService

DEEP = "/".join(["x"] * 250)


def echo_llm() -> FunctionLLM:
    """Answers with every user text it was shown, so a test can see what history reached it."""

    def reply(request: ChatRequest) -> str:
        return " | ".join(m.text for m in request.messages if m.role == "user")

    return FunctionLLM(reply)


@pytest.fixture
async def agent(mqtt: MakeMessager) -> AsyncIterator[tuple[Agent, Messager]]:
    bus = await mqtt()
    agent = Agent(llm=echo_llm(), messager=bus, role="guard")
    async with agent:
        yield agent, bus


@pytest.fixture
async def raw(mosquitto: MosquittoBroker) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        yield client


def lost_connection(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "lost the connection" in r.getMessage()]


async def test_a_deep_reply_topic_does_not_take_the_agent_off_the_broker(
    agent: tuple[Agent, Messager], raw: aiomqtt.Client, mqtt: MakeMessager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="argentic.messaging")
    _, bus = agent
    topic = bus.topics.agent_questions("guard")
    # In the JSON envelope and as the MQTT 5 Response Topic alone.
    await raw.publish(topic, json.dumps({"type": "question", "text": "hi", "reply_to": DEEP}), qos=1)
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = DEEP
    props.CorrelationData = b"c1"
    await raw.publish(topic, json.dumps({"type": "question", "text": "hi"}), qos=1, properties=props)

    client = await mqtt()
    for _ in range(3):
        answer = await client.request(topic, Question(text="still there?"), response_model=Answer, timeout=20)
        assert isinstance(answer, Answer)
    assert lost_connection(caplog) == []
    assert bus.is_connected and bus.queued_publishes == 0


async def test_a_deep_reply_topic_does_not_take_a_tool_service_off_the_broker(
    mqtt: MakeMessager, raw: aiomqtt.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="argentic.messaging")
    service_bus = await mqtt()
    async with ToolService(service_bus, all_tools(), "deep"):
        topic = service_bus.topics.tool_calls("add")
        call = ToolCall(tool="add", arguments={"a": 1, "b": 2}, reply_to=DEEP).to_json()
        await raw.publish(topic, call, qos=1)
        async with ToolManager(await mqtt()) as tools:
            await tools.wait_for_tools("add")
            for _ in range(3):
                result = await tools.call("add", {"a": 2, "b": 3}, timeout=10)
                assert result.ok and result.result == 5
    assert lost_connection(caplog) == []


async def test_publishing_to_a_topic_the_broker_would_refuse_fails_that_publish_alone(
    mqtt: MakeMessager,
) -> None:
    bus = await mqtt()
    with pytest.raises(InvalidTopicError):
        await bus.publish(bus.topics.namespace + "/" + DEEP, Question(text="x"))
    assert bus.is_connected and bus.queued_publishes == 0


async def test_answers_go_only_to_inboxes(
    agent: tuple[Agent, Messager], raw: aiomqtt.Client, mqtt: MakeMessager, mosquitto: MosquittoBroker
) -> None:
    _, bus = agent
    victim = bus.topics.agent_questions("other")
    seen: list[bytes] = []
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5) as spy:
        await spy.subscribe(victim, qos=1)

        async def listen() -> None:
            async for message in spy.messages:
                seen.append(bytes(message.payload))  # type: ignore[arg-type]

        listening = asyncio.create_task(listen())
        question = {"type": "question", "text": "hi", "reply_to": victim, "correlation_id": "forged"}
        await raw.publish(bus.topics.agent_questions("guard"), json.dumps(question), qos=1)
        client = await mqtt()
        topic = bus.topics.agent_questions("guard")
        answer = await client.request(topic, Question(text="mine"), response_model=Answer, timeout=20)
        assert isinstance(answer, Answer)
        listening.cancel()
    assert not any(b'"answer"' in payload for payload in seen)


@pytest.mark.parametrize("bad_id", ["a/b", "$x", "+", "#", 123, None])
async def test_an_id_that_is_no_topic_level_gets_an_error_reply(
    agent: tuple[Agent, Messager], raw: aiomqtt.Client, bad_id: Any
) -> None:
    _, bus = agent
    inbox = bus.topics.client_inbox("raw-asker")
    await raw.subscribe(inbox, qos=1)
    question: dict[str, Any] = {"type": "question", "text": "hi", "reply_to": inbox, "correlation_id": "k1"}
    if bad_id is not None:
        question["id"] = bad_id
    else:
        question["id"] = ["not", "a", "string"]
    await raw.publish(bus.topics.agent_questions("guard"), json.dumps(question), qos=1)
    async with asyncio.timeout(20):
        async for message in raw.messages:
            reply = parse_message(bytes(message.payload))  # type: ignore[arg-type]
            break
    assert isinstance(reply, ErrorReply) and reply.error.code == "malformed_request"
    assert reply.correlation_id == "k1"


async def test_two_clients_may_use_the_same_id(agent: tuple[Agent, Messager], mqtt: MakeMessager) -> None:
    _, bus = agent
    topic = bus.topics.agent_questions("guard")
    first, second = await mqtt(), await mqtt()
    for client in (first, second):
        answer = await client.request(
            topic, Question(id="q1", text="hello"), response_model=Answer, timeout=20
        )
        assert isinstance(answer, Answer) and answer.question_id == "q1"


async def test_a_conversation_belongs_to_who_asked(agent: tuple[Agent, Messager], mqtt: MakeMessager) -> None:
    _, bus = agent
    topic = bus.topics.agent_questions("guard")
    owner, stranger = await mqtt(), await mqtt()
    secret = Question(text="my card is 4111-1111", conversation_id="c1")
    first = await owner.request(topic, secret, response_model=Answer, timeout=20)
    assert isinstance(first, Answer) and first.conversation_id == "c1"

    probe = await stranger.request(
        topic, Question(text="what was my card?", conversation_id="c1"), response_model=Answer, timeout=20
    )
    assert isinstance(probe, Answer) and "4111" not in probe.text

    again = await owner.request(
        topic, Question(text="and my card?", conversation_id="c1"), response_model=Answer, timeout=20
    )
    assert isinstance(again, Answer) and "4111" in again.text


async def test_an_announcement_is_filed_under_its_topic(mqtt: MakeMessager, raw: aiomqtt.Client) -> None:
    async with ToolService(await mqtt(), all_tools(), "math"), ToolManager(await mqtt()) as tools:
        await tools.wait_for_tools("add")
        evil = tools.messager.topics.tool_service("evil")
        forged = ToolAnnouncement(service_id="math", tools=[]).to_json()
        await raw.publish(evil, forged, qos=1, retain=True)
        await raw.publish(evil, b"", qos=1, retain=True)  # and cleared again
        # a question that goes through after both were delivered
        assert (await tools.call("add", {"a": 1, "b": 1}, timeout=10)).result == 2
        assert "add" in tools.tools and "math" in tools.services and "evil" not in tools.services


async def test_a_service_repairs_what_is_retained_on_its_topic(
    mqtt: MakeMessager, raw: aiomqtt.Client
) -> None:
    async with ToolService(await mqtt(), all_tools(), "mended") as service:
        for garbage in (b"garbage", ToolAnnouncement(service_id="mended", tools=[]).to_json()):
            await raw.publish(service.topic, garbage, qos=1, retain=True)
            # A manager that starts later still learns the service's tools from the retained one.
            async with ToolManager(await mqtt()) as late:
                await late.wait_for_tools("add", timeout=10)


async def test_an_agent_repairs_its_status_while_online(
    agent: tuple[Agent, Messager], raw: aiomqtt.Client, mqtt: MakeMessager
) -> None:
    _, bus = agent
    status = bus.topics.agent_status("guard")
    await raw.publish(status, b"{not json", qos=1, retain=True)
    watcher = await mqtt()
    # Whether the repair is retained before this subscribes or arrives after, a presence comes.
    async with watcher.messages(status, model=Presence) as presences, asyncio.timeout(10):
        async for presence in presences:
            assert presence.online and presence.role == "guard"
            break
