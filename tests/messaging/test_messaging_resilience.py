"""Broker outages and absent clients: reconnection, persistent sessions, the outbox, dedupe."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import aiomqtt
import pytest

from argentic.errors import MessagingError, RequestTimeoutError
from argentic.messaging import Messager
from argentic.messaging.aiomqtt_transport import AiomqttTransport
from argentic.messaging.embedded_broker import EmbeddedBroker
from argentic.messaging.transport import ConnectOptions
from argentic.netutil import free_port
from argentic.protocol import Answer, Question
from argentic.testing.messagers import MakeMessager as Messagers
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.waiting import wait_until

Connect = Callable[..., Awaitable[Messager]]


async def wait_for_save(broker: MosquittoBroker, after: float) -> None:
    """Wait until mosquitto has written its persistence file since ``after`` (Unix time)."""
    database = broker.workdir / "mosquitto.db"

    def saved() -> bool:
        return database.exists() and database.stat().st_mtime > after + 0.01

    await wait_until(saved, limit_s=30, what="mosquitto to save its state")


async def test_broker_killed_and_restarted_mid_stream(
    private_mosquitto: MosquittoBroker, messagers: Messagers, namespace: str
) -> None:
    broker = private_mosquitto
    subscriber = await messagers(broker.host, broker.port, namespace=namespace, client_id=f"{namespace}-sub")
    publisher = await messagers(broker.host, broker.port, namespace=namespace, client_id=f"{namespace}-pub")
    counts: Counter[str] = Counter()

    async def on_question(question: Question) -> None:
        counts[question.text] += 1

    topic = subscriber.topics.agent_questions("stream")
    await subscriber.subscribe(topic, on_question, model=Question)
    total = 300
    for index in range(total):
        if index == 100:
            # SIGKILL loses what mosquitto has not saved yet (it saves every second): wait for a
            # save that includes the subscriber's session, else the broker rightly forgets it.
            await wait_until(lambda: len(counts) == 100, what="the first 100 messages")
            await wait_for_save(broker, after=time.time())
            await asyncio.to_thread(broker.stop, kill=True)
        if index == 200:
            await asyncio.to_thread(broker.start)
        await publisher.publish(topic, Question(text=str(index)))
    await wait_until(
        lambda: len(counts) == total,
        limit_s=60,
        what=lambda: (
            f"every message after the restart; missing {sorted({str(i) for i in range(total)} - set(counts))}"
        ),
    )
    await asyncio.sleep(0.3)  # let any redelivery show up
    assert set(counts) == {str(i) for i in range(total)}
    assert max(counts.values()) == 1, "a message reached the handler twice"
    assert publisher.is_connected and subscriber.is_connected
    assert publisher.queued_publishes == 0


async def test_subscriptions_and_requests_work_after_a_restart(
    private_mosquitto: MosquittoBroker, messagers: Messagers, namespace: str
) -> None:
    broker = private_mosquitto
    # Not persistent: nothing survives on the broker, so the subscriptions must be renewed.
    responder = await messagers(broker.host, broker.port, namespace=namespace, persistent=False)
    requester = await messagers(broker.host, broker.port, namespace=namespace, persistent=False)

    async def answer(question: Question) -> None:
        await responder.reply(question, Answer(question_id=question.id, conversation_id="c", text="pong"))

    topic = responder.topics.agent_questions("pinger")
    await responder.subscribe(topic, answer, model=Question)
    assert isinstance(await requester.request(topic, Question(text="ping"), timeout=10), Answer)
    await asyncio.to_thread(broker.restart, kill=True)
    await wait_until(
        lambda: requester.is_connected and responder.is_connected, limit_s=30, what="reconnection"
    )
    reply = await requester.request(topic, Question(text="ping again"), response_model=Answer, timeout=20)
    assert isinstance(reply, Answer) and reply.text == "pong"


async def test_a_request_the_broker_lost_is_sent_again_soon_after_the_reconnection(
    private_mosquitto: MosquittoBroker, messagers: Messagers, namespace: str
) -> None:
    """A request sent while the broker is down leaves from the outbox when it is back, before its
    responder has subscribed again, and the broker drops it: a copy follows at the request's next
    beat, although the connection came back only a moment before."""
    broker = private_mosquitto
    requester = await messagers(broker.host, broker.port, namespace=namespace, persistent=False)
    topic = requester.topics.agent_questions("late")
    await asyncio.to_thread(broker.stop, kill=True)
    await wait_until(lambda: not requester.is_connected, limit_s=10, what="the drop")
    asked = asyncio.ensure_future(
        requester.request(topic, Question(text="ping"), response_model=Answer, timeout=10, retry_after=4)
    )
    await asyncio.sleep(5)
    await asyncio.to_thread(broker.start)
    await wait_until(lambda: requester.is_connected, limit_s=10, what="reconnection")
    await asyncio.sleep(1)  # the outbox's copy has gone to nobody by now
    responder = await messagers(broker.host, broker.port, namespace=namespace, persistent=False)

    async def answer(question: Question) -> None:
        await responder.reply(question, Answer(question_id=question.id, conversation_id="c", text="pong"))

    await responder.subscribe(topic, answer, model=Question)
    reply = await asyncio.wait_for(asked, 15)
    assert isinstance(reply, Answer) and reply.text == "pong"


async def test_unanswered_requests_are_sent_once_then_twice_a_beat(
    mosquitto: MosquittoBroker, messagers: Messagers, namespace: str
) -> None:
    """A second silence sends two copies back to back: a shared group hands them to two members,
    so a copy that a dead replica's session swallows has a twin that reaches a live one."""
    requester = await messagers(mosquitto.host, mosquitto.port, namespace=namespace)
    topic = requester.topics.agent_questions("silent")
    seen: list[str] = []
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as raw:
        await raw.subscribe(topic, qos=1)

        async def count() -> None:
            async for message in raw.messages:
                seen.append(Question.model_validate_json(bytes(message.payload)).id)  # type: ignore[arg-type]

        counting = asyncio.ensure_future(count())
        question = Question(text="anyone?")
        with pytest.raises(RequestTimeoutError):
            # Beats at 1 s and 2 s: the request, one copy, then two.
            await requester.request(topic, question, timeout=2.6, retry_after=1)
        await asyncio.sleep(0.3)
        counting.cancel()
    assert seen == [question.id] * 4


async def test_messages_sent_while_subscriber_is_down_arrive_when_it_returns(
    connect: Connect, namespace: str
) -> None:
    client_id = f"{namespace}-away"
    first = await connect(client_id=client_id)
    topic = first.topics.agent_questions("away")

    async def ignore(question: Question) -> None:
        return None

    await first.subscribe(topic, ignore, model=Question)
    await first.disconnect()
    publisher = await connect()
    for index in range(10):
        await publisher.publish(topic, Question(text=str(index)))
    received: list[str] = []

    async def on_question(question: Question) -> None:
        received.append(question.text)

    returned = await connect(client_id=client_id, connect=False)
    await returned.connect()
    await returned.subscribe(topic, on_question, model=Question)
    await wait_until(lambda: len(received) == 10, what="the messages sent while away")
    assert sorted(received, key=int) == [str(i) for i in range(10)]


async def test_publishes_while_the_broker_is_away_are_queued_and_flushed_in_order(
    private_mosquitto: MosquittoBroker, messagers: Messagers, namespace: str
) -> None:
    broker = private_mosquitto
    subscriber = await messagers(broker.host, broker.port, namespace=namespace, client_id=f"{namespace}-s")
    publisher = await messagers(broker.host, broker.port, namespace=namespace)
    received: list[str] = []

    async def on_question(question: Question) -> None:
        received.append(question.text)

    topic = publisher.topics.agent_questions("outbox")
    await subscriber.subscribe(topic, on_question, model=Question, qos=1)
    await asyncio.to_thread(broker.stop)
    await wait_until(lambda: not publisher.is_connected, what="the publisher to notice the outage")
    for index in range(20):
        await publisher.publish(topic, Question(text=str(index)))
    assert publisher.queued_publishes == 20
    await asyncio.to_thread(broker.start)
    await wait_until(lambda: len(received) == 20, limit_s=30, what="the queued publishes")
    assert sorted(received, key=int) == [str(i) for i in range(20)]
    assert publisher.queued_publishes == 0


async def _session_present(broker: MosquittoBroker, client_id: str) -> bool:
    transport = AiomqttTransport()
    options = ConnectOptions(
        host=broker.host,
        port=broker.port,
        client_id=client_id,
        protocol="5",
        clean_start=False,
        session_expiry_s=0,
        keepalive=30,
        timeout=10,
    )
    connected = await transport.connect(options)
    await transport.disconnect()
    return connected.session_present


async def test_stable_ids_keep_their_session_and_generated_ids_end_it(
    mosquitto: MosquittoBroker, messagers: Messagers, namespace: str
) -> None:
    stable = await messagers(
        mosquitto.host, mosquitto.port, namespace=namespace, client_id=f"{namespace}-keep"
    )
    generated = await messagers(mosquitto.host, mosquitto.port, namespace=namespace)

    async def ignore(question: Question) -> None:
        return None

    for messager in (stable, generated):
        await messager.subscribe(messager.topics.agent_questions("sessions"), ignore, model=Question)
        await messager.disconnect()
    assert await _session_present(mosquitto, stable.client_id)
    assert not await _session_present(mosquitto, generated.client_id)


async def test_reconnects_to_a_restarted_embedded_broker(messagers: Messagers, namespace: str) -> None:
    port = free_port()
    broker = EmbeddedBroker("127.0.0.1", port)
    await broker.start()
    try:
        responder = await messagers("127.0.0.1", port, namespace=namespace)
        requester = await messagers("127.0.0.1", port, namespace=namespace)

        async def answer(question: Question) -> None:
            await responder.reply(question, Answer(question_id=question.id, conversation_id="c", text="pong"))

        topic = responder.topics.agent_questions("amqtt")
        await responder.subscribe(topic, answer, model=Question)
        await broker.stop()
        await wait_until(lambda: not requester.is_connected, what="the outage to be noticed")
        await broker.start()
        # amqtt keeps sessions in memory only: the renewed subscriptions are what makes this work.
        await wait_until(
            lambda: requester.is_connected and responder.is_connected, limit_s=30, what="reconnection"
        )
        reply = await requester.request(topic, Question(text="ping"), response_model=Answer, timeout=20)
        assert isinstance(reply, Answer) and reply.text == "pong"
    finally:
        await broker.stop()


async def test_a_publish_the_broker_does_not_acknowledge_fails_after_the_publish_timeout(
    private_mosquitto: MosquittoBroker, messagers: Messagers, namespace: str
) -> None:
    broker = private_mosquitto
    publisher = await messagers(broker.host, broker.port, namespace=namespace, publish_timeout_s=0.5)
    topic = publisher.topics.agent_questions("stalled")
    await publisher.publish(topic, Question(text="before"))
    assert broker.process is not None
    broker.process.send_signal(signal.SIGSTOP)  # connected, but it acknowledges nothing
    try:
        with pytest.raises(MessagingError, match="did not acknowledge"):
            await publisher.publish(topic, Question(text="stalled"))
    finally:
        broker.process.send_signal(signal.SIGCONT)
    await publisher.publish(topic, Question(text="after"))
