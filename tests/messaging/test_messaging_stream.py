"""Subscribing as ``async for``: real brokers (mosquitto, amqtt) and the in-memory one."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiomqtt
import pytest
from messaging_support import BrokerUnderTest

from argentic.errors import NotConnectedError
from argentic.messaging import Cleared, Messager, MessageStream
from argentic.messaging.memory import MemoryBroker
from argentic.protocol import Message, Presence, Question, ToolAnnouncement
from argentic.testing.waiting import wait_until

Connect = Callable[..., Awaitable[Messager]]


async def take(messages: MessageStream[Any], count: int) -> list[Any]:
    """The next ``count`` items, each within a guard timeout."""
    return [await asyncio.wait_for(anext(messages), 10) for _ in range(count)]


async def test_stream_yields_typed_messages_in_order_and_drops_bad_ones(
    connect: Connect, broker: BrokerUnderTest
) -> None:
    publisher, subscriber = await connect(), await connect()
    topic = subscriber.topics.agent_questions("stream")
    once = Question(text="once")
    async with subscriber.messages(topic, model=Question) as messages:
        async with aiomqtt.Client(
            broker.host,
            broker.port,
            protocol=aiomqtt.ProtocolVersion.V5 if broker.mqtt5 else aiomqtt.ProtocolVersion.V311,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        ) as raw:
            await raw.publish(topic, b"not json", qos=1)
            await raw.publish(topic, b'{"type": "question"}', qos=1)  # no text: wrong schema
        await publisher.publish(topic, once)
        await publisher.publish(topic, once)  # a redelivery: same id
        await publisher.publish(topic, Question(text="stale", expires_at=time.time() - 1))
        for index in range(5):
            await publisher.publish(topic, Question(text=str(index)))
        received = await take(messages, 6)
        assert all(isinstance(message, Question) for message in received)
        assert [message.text for message in received] == ["once", "0", "1", "2", "3", "4"]
        assert messages.dropped == 0


async def test_leaving_the_block_unsubscribes_and_ends_the_iteration(connect: Connect) -> None:
    publisher, subscriber = await connect(), await connect()
    topic = subscriber.topics.agent_questions("leave")
    async with subscriber.messages(topic, model=Question) as messages:
        await publisher.publish(topic, Question(text="inside"))
        assert [m.text for m in await take(messages, 1)] == ["inside"]
    assert [m async for m in messages] == []  # ended: iteration stops at once
    # Still subscribed at the broker, "gap" would wait in the unclaimed backlog and be handed to
    # the next subscription on the filter; unsubscribed, the broker never sends it.
    await publisher.publish(topic, Question(text="gap"))
    marker: list[str] = []

    async def on_marker(question: Question) -> None:
        marker.append(question.text)

    await subscriber.subscribe(topic + "/marker", on_marker, model=Question)
    await publisher.publish(topic + "/marker", Question(text="marker"))
    await wait_until(lambda: marker == ["marker"], what="the marker")
    assert messages.waiting == 0  # the left stream no longer receives
    async with subscriber.messages(topic, model=Question) as again:
        await publisher.publish(topic, Question(text="after"))
        assert [m.text for m in await take(again, 1)] == ["after"]


async def test_retained_state_and_cleared_payloads(connect: Connect) -> None:
    publisher, subscriber = await connect(), await connect()
    topic = publisher.topics.tool_service("svc")
    await publisher.publish(topic, ToolAnnouncement(service_id="svc", tools=[]), retain=True)
    everything = subscriber.topics.tool_services_all()
    async with subscriber.messages(everything, model=ToolAnnouncement, include_empty=True) as messages:
        first = await take(messages, 1)
        assert isinstance(first[0], ToolAnnouncement) and first[0].service_id == "svc"
        await publisher.publish(topic, None, retain=True)
        assert await take(messages, 1) == [Cleared(topic)]
    async with subscriber.messages(everything, model=ToolAnnouncement) as plain:
        await publisher.publish(topic, None, retain=True)  # not yielded without include_empty
        await publisher.publish(topic, ToolAnnouncement(service_id="svc", tools=[]), retain=True)
        assert [m.service_id for m in await take(plain, 1)] == ["svc"]


async def test_shared_group_splits_the_stream(connect: Connect, broker: BrokerUnderTest) -> None:
    if not broker.mqtt5:
        pytest.skip("amqtt has no shared subscriptions ($share needs MQTT 5)")
    publisher, first, second = await connect(), await connect(), await connect()
    topic = publisher.topics.tool_calls("shared_stream")
    got: dict[str, list[str]] = {"first": [], "second": []}

    async def read(name: str, messages: MessageStream[Question]) -> None:
        async for message in messages:
            got[name].append(message.text)

    async with (
        first.messages(topic, model=Question, shared_group="workers") as one,
        second.messages(topic, model=Question, shared_group="workers") as two,
    ):
        readers = [asyncio.create_task(read("first", one)), asyncio.create_task(read("second", two))]
        for index in range(20):
            await publisher.publish(topic, Question(text=str(index)))
        await wait_until(lambda: len(got["first"]) + len(got["second"]) == 20, what="20 shared deliveries")
    await asyncio.wait_for(asyncio.gather(*readers), 10)  # leaving the block ended both
    assert sorted(got["first"] + got["second"], key=int) == [str(i) for i in range(20)]
    assert got["first"] and got["second"]


@pytest.fixture
async def memory() -> AsyncIterator[Callable[..., Awaitable[Messager]]]:
    broker = MemoryBroker()
    made: list[Messager] = []

    async def factory(**kwargs: Any) -> Messager:
        messager = Messager("memory", 0, transport=broker.transport(), **kwargs)
        made.append(messager)
        await messager.connect()
        return messager

    yield factory
    for messager in made:
        await messager.disconnect()


async def test_a_full_stream_drops_the_oldest_with_one_warning(
    memory: Callable[..., Awaitable[Messager]], caplog: pytest.LogCaptureFixture
) -> None:
    publisher, subscriber = await memory(), await memory()
    topic = subscriber.topics.agent_status("busy")
    caplog.set_level(logging.WARNING, "argentic.messaging")
    async with subscriber.messages(topic, model=Presence, queue_size=3) as messages:
        for index in range(10):
            await publisher.publish(topic, Presence(role=str(index), online=True))
        await wait_until(lambda: messages.dropped == 7, what="seven dropped")
        assert [m.role for m in await take(messages, 3)] == ["7", "8", "9"]
    warnings = [r.getMessage() for r in caplog.records if "dropping the oldest" in r.getMessage()]
    assert len(warnings) == 1 and topic in warnings[0]


async def test_any_message_type_without_a_model(memory: Callable[..., Awaitable[Messager]]) -> None:
    publisher, subscriber = await memory(), await memory()
    topic = f"{subscriber.topics.namespace}/agents/#"
    async with subscriber.messages(topic) as messages:
        await publisher.publish(subscriber.topics.agent_questions("a"), Question(text="q"))
        await publisher.publish(subscriber.topics.agent_status("a"), Presence(role="a", online=True))
        received: list[Message] = await take(messages, 2)
    assert [type(m) for m in received] == [Question, Presence]


async def test_disconnect_ends_the_iteration_after_what_was_queued(
    memory: Callable[..., Awaitable[Messager]],
) -> None:
    publisher, subscriber = await memory(), await memory()
    topic = subscriber.topics.agent_questions("end")
    async with subscriber.messages(topic, model=Question) as messages:
        await publisher.publish(topic, Question(text="queued"))
        await wait_until(lambda: messages.waiting == 1, what="one queued")
        await subscriber.disconnect()
        rest = await asyncio.wait_for(_drain(messages), 10)
    assert [m.text for m in rest] == ["queued"]
    with pytest.raises(NotConnectedError):
        async with subscriber.messages(topic, model=Question):
            pass


async def _drain(messages: MessageStream[Question]) -> list[Question]:
    return [message async for message in messages]


async def test_stream_misuse_is_an_error(memory: Callable[..., Awaitable[Messager]]) -> None:
    messager = await memory()
    with pytest.raises(ValueError, match="queue_size"):
        messager.messages("x/y", queue_size=0)
    stream = messager.messages("x/y", model=Question)
    with pytest.raises(RuntimeError, match="async with"):
        await anext(stream)
    async with stream:
        with pytest.raises(RuntimeError, match="once"):
            await stream.__aenter__()
