"""Publish/subscribe against real brokers: typed delivery, wildcards, malformed input, failing handlers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
import pytest
from messaging_support import BrokerUnderTest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from argentic.messaging import Messager
from argentic.protocol import Answer, Message, Presence, Question, ToolAnnouncement
from argentic.testing.waiting import wait_until

Connect = Callable[..., Awaitable[Messager]]


def raw_client(broker: BrokerUnderTest) -> aiomqtt.Client:
    return aiomqtt.Client(
        broker.host,
        broker.port,
        protocol=aiomqtt.ProtocolVersion.V5 if broker.mqtt5 else aiomqtt.ProtocolVersion.V311,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )


async def test_typed_publish_subscribe(connect: Connect, broker: BrokerUnderTest) -> None:
    publisher, subscriber = await connect(), await connect()
    assert publisher.protocol_version == ("5" if broker.mqtt5 else "3.1.1")
    received: list[Question] = []

    async def on_question(question: Question) -> None:
        received.append(question)

    topic = subscriber.topics.agent_questions("typed")
    await subscriber.subscribe(topic, on_question, model=Question)
    sent = Question(text="what is 2 + 2?", conversation_id="c1")
    await publisher.publish(topic, sent)
    await wait_until(lambda: len(received) == 1, what="the question")
    assert received[0] == sent
    assert isinstance(received[0], Question)


async def test_wildcards(connect: Connect, namespace: str) -> None:
    publisher, subscriber = await connect(), await connect()
    single: list[tuple[str, str]] = []
    multi: list[str] = []

    async def on_single(message: Presence) -> None:
        single.append((message.role, message.id))

    async def on_multi(message: Message) -> None:
        multi.append(message.type)

    await subscriber.subscribe(f"{namespace}/agents/+/status", on_single, model=Presence)
    await subscriber.subscribe(f"{namespace}/agents/#", on_multi)
    topics = publisher.topics
    await publisher.publish(topics.agent_status("a"), Presence(role="a", online=True))
    await publisher.publish(topics.agent_status("b"), Presence(role="b", online=True))
    await publisher.publish(topics.agent_questions("a"), Question(text="deep"))
    await publisher.publish(f"{namespace}/elsewhere", Presence(role="x", online=True))
    await wait_until(lambda: len(single) == 2 and len(multi) == 3, what="wildcard deliveries")
    assert sorted(role for role, _ in single) == ["a", "b"]
    assert sorted(multi) == ["presence", "presence", "question"]


async def test_malformed_payloads_are_dropped_and_valid_ones_still_arrive(
    connect: Connect, broker: BrokerUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    subscriber = await connect(max_payload_bytes=10_000)
    received: list[Question] = []

    async def on_question(question: Question) -> None:
        received.append(question)

    topic = subscriber.topics.agent_questions("strict")
    await subscriber.subscribe(topic, on_question, model=Question)
    first, last = Question(text="before"), Question(text="after")
    async with raw_client(broker) as raw:
        await raw.publish(topic, first.to_json(), qos=1)
        await raw.publish(topic, b"\xff\xfe not json at all", qos=1)
        await raw.publish(topic, b'{"type": "question"}', qos=1)  # no text: wrong schema
        await raw.publish(topic, b"[1, 2, 3]", qos=1)
        await raw.publish(topic, Answer(question_id="q", conversation_id="c").to_json(), qos=1)
        await raw.publish(topic, Question(text="x" * 20_000).to_json(), qos=1)  # oversized
        await raw.publish(topic, last.to_json(), qos=1)
    await wait_until(lambda: len(received) == 2, what="the two valid questions")
    await asyncio.sleep(0.1)
    assert [q.text for q in received] == ["before", "after"]
    assert subscriber.is_connected
    dropped = [
        r.getMessage()
        for r in caplog.records
        if r.name == "argentic.messaging" and "dropped" in r.getMessage()
    ]
    assert len(dropped) == 5
    assert all(topic in line for line in dropped)


async def test_a_raising_handler_does_not_kill_the_subscription(connect: Connect) -> None:
    publisher, subscriber = await connect(), await connect()
    handled: list[str] = []

    async def flaky(question: Question) -> None:
        if question.text == "boom":
            raise RuntimeError("handler failure")
        handled.append(question.text)

    topic = subscriber.topics.agent_questions("flaky")
    await subscriber.subscribe(topic, flaky, model=Question)
    for text in ("one", "boom", "two", "boom", "three"):
        await publisher.publish(topic, Question(text=text))
    await wait_until(lambda: len(handled) == 3, what="the non-failing deliveries")
    assert sorted(handled) == ["one", "three", "two"]


async def test_duplicates_and_expired_messages_are_dropped(connect: Connect) -> None:
    publisher, subscriber = await connect(), await connect()
    received: list[str] = []

    async def on_question(question: Question) -> None:
        received.append(question.text)

    topic = subscriber.topics.agent_questions("dedupe")
    await subscriber.subscribe(topic, on_question, model=Question)
    once = Question(text="once")
    await publisher.publish(topic, once)
    await publisher.publish(topic, once)  # a redelivery: same id
    await publisher.publish(topic, Question(text="stale", expires_at=time.time() - 1))
    await publisher.publish(topic, Question(text="end"))
    await wait_until(lambda: "end" in received, what="the last message")
    await asyncio.sleep(0.1)
    assert sorted(received) == ["end", "once"]


async def test_retained_messages_and_empty_payloads(connect: Connect) -> None:
    publisher = await connect()
    topic = publisher.topics.tool_service("svc")
    announcement = ToolAnnouncement(service_id="svc", tools=[])
    await publisher.publish(topic, announcement, retain=True)
    subscriber = await connect()
    seen: list[str] = []
    cleared: list[str] = []

    async def on_announcement(message: ToolAnnouncement) -> None:
        seen.append(message.service_id)

    async def on_empty(empty_topic: str) -> None:
        cleared.append(empty_topic)

    await subscriber.subscribe(
        subscriber.topics.tool_services_all(), on_announcement, model=ToolAnnouncement, on_empty=on_empty
    )
    await wait_until(lambda: seen == ["svc"], what="the retained announcement")
    await publisher.publish(topic, None, retain=True)
    await wait_until(lambda: cleared == [topic], what="the withdrawal")
    late: list[str] = []

    async def on_late(message: ToolAnnouncement) -> None:
        late.append(message.service_id)

    await (await connect()).subscribe(subscriber.topics.tool_services_all(), on_late, model=ToolAnnouncement)
    await asyncio.sleep(0.2)
    assert late == []  # the retained message is gone


async def test_unsubscribe_stops_delivery(connect: Connect) -> None:
    publisher, subscriber = await connect(), await connect()
    received: list[str] = []

    async def on_question(question: Question) -> None:
        received.append(question.text)

    topic = subscriber.topics.agent_questions("unsub")
    subscription = await subscriber.subscribe(topic, on_question, model=Question)
    await publisher.publish(topic, Question(text="first"))
    await wait_until(lambda: received == ["first"], what="the first message")
    await subscriber.unsubscribe(subscription)
    await publisher.publish(topic, Question(text="second"))
    marker: list[str] = []

    async def on_marker(question: Question) -> None:
        marker.append(question.text)

    await subscriber.subscribe(topic + "/end", on_marker, model=Question)
    await publisher.publish(topic + "/end", Question(text="end"))
    await wait_until(lambda: marker == ["end"], what="the marker")
    assert received == ["first"]


async def test_shared_subscription_splits_work(connect: Connect, broker: BrokerUnderTest) -> None:
    if not broker.mqtt5:
        pytest.skip("amqtt has no shared subscriptions ($share needs MQTT 5)")
    publisher, first, second = await connect(), await connect(), await connect()
    got: dict[str, list[str]] = {"first": [], "second": []}

    def collect(name: str) -> Callable[[Question], Awaitable[None]]:
        async def handler(question: Question) -> None:
            got[name].append(question.text)

        return handler

    topic = publisher.topics.tool_calls("shared_tool")
    await first.subscribe(topic, collect("first"), model=Question, shared_group="workers")
    await second.subscribe(topic, collect("second"), model=Question, shared_group="workers")
    for index in range(20):
        await publisher.publish(topic, Question(text=str(index)))
    await wait_until(lambda: len(got["first"]) + len(got["second"]) == 20, what="20 shared deliveries")
    assert sorted(got["first"] + got["second"], key=int) == [str(i) for i in range(20)]
    assert got["first"] and got["second"]


async def test_mqtt5_properties_carry_reply_topic_and_correlation(
    connect: Connect, broker: BrokerUnderTest
) -> None:
    if not broker.mqtt5:
        pytest.skip("MQTT 5 properties need an MQTT 5 broker")
    requester = await connect()
    topic = requester.topics.agent_questions("props")
    async with raw_client(broker) as raw:
        await raw.subscribe(topic, qos=1)
        request = asyncio.create_task(requester.request(topic, Question(text="hi"), timeout=10))
        message = await asyncio.wait_for(anext(aiter(raw.messages)), 10)
        assert message.properties is not None
        props: Any = message.properties  # paho sets property attributes dynamically
        assert isinstance(message.payload, bytes)
        question = Question.model_validate_json(message.payload)
        assert question.correlation_id is not None
        assert props.ResponseTopic == requester.inbox == question.reply_to
        assert props.CorrelationData == question.correlation_id.encode()
        assert 1 <= props.MessageExpiryInterval <= 10
        # Answer like a plain MQTT 5 client: only the properties carry the correlation.
        reply_props: Any = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        reply_props.CorrelationData = props.CorrelationData
        answer = Answer(question_id=question.id, conversation_id="c", text="HI")
        await raw.publish(props.ResponseTopic, answer.to_json(), qos=1, properties=reply_props)
        result = await request
    assert isinstance(result, Answer) and result.text == "HI"
