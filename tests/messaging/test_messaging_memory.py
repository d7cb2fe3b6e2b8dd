"""The fast tier: the Messager over the in-memory broker, and its small parts on their own."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from argentic.backoff import backoff_delays
from argentic.errors import (
    AuthenticationError,
    BrokerUnavailableError,
    MessagingError,
    NotConnectedError,
    RequestTimeoutError,
)
from argentic.messaging import Messager, Will
from argentic.messaging.dedupe import RecentIds
from argentic.messaging.memory import MemoryBroker
from argentic.messaging.outbox import Outbox, OutboxFullError
from argentic.messaging.transport import Outbound
from argentic.protocol import Answer, Presence, Question
from argentic.testing.waiting import wait_until

Make = Callable[..., Awaitable[Messager]]


@pytest.fixture
def memory_broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
async def make(memory_broker: MemoryBroker) -> AsyncIterator[Make]:
    made: list[Messager] = []

    async def factory(*, connect: bool = True, **kwargs: Any) -> Messager:
        kwargs.setdefault("reconnect_initial_delay_s", 0.01)
        kwargs.setdefault("reconnect_max_delay_s", 0.05)
        messager = Messager("memory", 0, transport=memory_broker.transport(), **kwargs)
        made.append(messager)
        if connect:
            await messager.connect()
        return messager

    yield factory
    for messager in made:
        await messager.disconnect()


async def test_publish_subscribe_and_request(make: Make) -> None:
    a, b = await make(), await make()
    assert a.protocol_version == "5"

    async def answer(question: Question) -> None:
        await b.reply(question, Answer(question_id=question.id, conversation_id="c", text=question.text * 2))

    topic = b.topics.agent_questions("mem")
    await b.subscribe(topic, answer, model=Question)
    reply = await a.request(topic, Question(text="ab"), response_model=Answer, timeout=5)
    assert isinstance(reply, Answer) and reply.text == "abab"
    assert a.pending_requests == 0


async def test_request_timeout_cleans_up(make: Make) -> None:
    a = await make()
    with pytest.raises(RequestTimeoutError):
        await a.request(a.topics.agent_questions("none"), Question(text="?"), timeout=0.05)
    assert a.pending_requests == 0


async def test_reconnects_renews_subscriptions_and_flushes_the_outbox(
    memory_broker: MemoryBroker, make: Make
) -> None:
    publisher, subscriber = await make(), await make(client_id="steady")
    received: list[str] = []

    async def on_question(question: Question) -> None:
        received.append(question.text)

    topic = subscriber.topics.agent_questions("outage")
    await subscriber.subscribe(topic, on_question, model=Question)
    memory_broker.stop()
    await wait_until(lambda: not publisher.is_connected, what="the outage to be noticed")
    for index in range(5):
        await publisher.publish(topic, Question(text=str(index)))
    assert publisher.queued_publishes == 5
    memory_broker.start()
    await wait_until(lambda: received == [str(i) for i in range(5)], what="the flushed publishes, in order")
    assert publisher.queued_publishes == 0


async def test_offline_session_delivers_on_return(make: Make) -> None:
    first = await make(client_id="roamer")
    topic = first.topics.agent_questions("roam")

    async def ignore(question: Question) -> None:
        return None

    await first.subscribe(topic, ignore, model=Question)
    await first.disconnect()
    publisher = await make()
    await publisher.publish(topic, Question(text="while away"))
    back = await make(client_id="roamer")
    got: list[str] = []

    async def on_question(question: Question) -> None:
        got.append(question.text)

    await back.subscribe(topic, on_question, model=Question)
    await wait_until(lambda: got == ["while away"], what="the backlog")


async def test_will_on_dropped_connection(memory_broker: MemoryBroker, make: Make) -> None:
    watcher = await make()
    states: list[bool] = []

    async def on_presence(presence: Presence) -> None:
        states.append(presence.online)

    topic = watcher.topics.agent_status("ghost")
    await watcher.subscribe(topic, on_presence, model=Presence)
    await make(client_id="ghost", will=Will(topic, Presence(role="ghost", online=False)))
    memory_broker.drop("ghost")
    await wait_until(lambda: states == [False], what="the will")


async def test_errors_before_connect_and_on_refusal(memory_broker: MemoryBroker, make: Make) -> None:
    idle = await make(connect=False)
    with pytest.raises(NotConnectedError, match="connect"):
        await idle.publish("x/y", Question(text="early"))
    memory_broker.stop()
    with pytest.raises(BrokerUnavailableError):
        await make()
    memory_broker.start()
    memory_broker.users = {"u": "p"}
    with pytest.raises(AuthenticationError):
        await make(username="u", password="bad")


async def test_handler_concurrency_is_bounded(make: Make) -> None:
    publisher, subscriber = await make(), await make(max_concurrent_handlers=3)
    running = 0
    peak = 0
    done = 0
    release = asyncio.Event()

    async def slow(question: Question) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        done += 1

    topic = subscriber.topics.agent_questions("bounded")
    await subscriber.subscribe(topic, slow, model=Question)
    for index in range(10):
        await publisher.publish(topic, Question(text=str(index)))
    await wait_until(lambda: running == 3, what="three handlers running")
    release.set()
    await wait_until(lambda: done == 10, what="all handlers")
    assert peak == 3


def test_recent_ids_is_bounded() -> None:
    recent = RecentIds(capacity=3)
    assert not recent.seen("a") and not recent.seen("b") and not recent.seen("c")
    assert recent.seen("a")  # refreshed: now the newest
    assert not recent.seen("d")  # evicts "b", the oldest
    assert len(recent) == 3
    assert not recent.seen("b")
    assert recent.seen("a")


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    delays = backoff_delays(0.1, 2.0, rng=random.Random(7))
    values = [next(delays) for _ in range(12)]
    assert all(0.05 <= v <= 2.0 for v in values)
    assert values[0] <= 0.1
    assert max(values[6:]) > 0.5  # the ceiling grew
    assert len(set(values)) == len(values)  # jittered


def test_outbox_is_bounded_and_drops_expired() -> None:
    outbox = Outbox(capacity=2)
    outbox.put(Outbound("t", b"1", 1))
    outbox.put(Outbound("t", b"2", 1, expires_at=1.0))  # long expired
    with pytest.raises(OutboxFullError, match="outbox_size"):
        outbox.put(Outbound("t", b"3", 1))
    assert [m.payload for m in outbox.take(10)] == [b"1"]
    assert len(outbox) == 0


async def test_handlers_can_await_requests_while_every_slot_is_busy(make: Make) -> None:
    """Replies must get through even when all handler slots wait on requests."""
    client, worker, tool = await make(), await make(max_concurrent_handlers=2), await make()
    gate = asyncio.Event()

    async def slow_tool(question: Question) -> None:
        await gate.wait()
        await tool.reply(question, Answer(question_id=question.id, conversation_id="c", text="tool"))

    tool_topic = tool.topics.tool_calls("slow")
    await tool.subscribe(tool_topic, slow_tool, model=Question)
    finished: list[str] = []

    async def work(question: Question) -> None:
        reply = await worker.request(
            tool_topic, Question(text=question.text), response_model=Answer, timeout=10
        )
        assert isinstance(reply, Answer)
        finished.append(question.text)

    work_topic = worker.topics.agent_questions("worker")
    await worker.subscribe(work_topic, work, model=Question)
    for index in range(5):
        await client.publish(work_topic, Question(text=str(index)))
    await asyncio.sleep(0.05)
    gate.set()
    await wait_until(lambda: len(finished) == 5, what="all five handlers to get their replies")
    assert worker.pending_requests == 0


async def test_every_connection_gets_a_will_of_its_own(memory_broker: MemoryBroker, make: Make) -> None:
    watcher = await make()
    states: list[bool] = []

    async def on_presence(presence: Presence) -> None:
        states.append(presence.online)

    topic = watcher.topics.agent_status("flaky")
    await watcher.subscribe(topic, on_presence, model=Presence)
    flaky = await make(client_id="flaky", will=Will(topic, Presence(role="flaky", online=False)))
    memory_broker.drop("flaky")
    await wait_until(lambda: states == [False], what="the first will")
    await wait_until(lambda: flaky.is_connected, what="the reconnection")
    await flaky.publish(topic, Presence(role="flaky", online=True))
    await wait_until(lambda: states == [False, True], what="the online presence")
    memory_broker.drop("flaky")
    await wait_until(
        lambda: states == [False, True, False], what="the second will, not dropped as a duplicate"
    )


async def test_retained_state_is_delivered_again_after_reconnecting(
    memory_broker: MemoryBroker, make: Make
) -> None:
    publisher, watcher = await make(), await make(client_id="watcher")
    topic = publisher.topics.agent_status("steady")
    await publisher.publish(topic, Presence(role="steady", online=True), retain=True)
    seen: list[bool] = []

    async def on_presence(presence: Presence) -> None:
        seen.append(presence.online)

    await watcher.subscribe(topic, on_presence, model=Presence)
    await wait_until(lambda: seen == [True], what="the retained presence")
    memory_broker.stop()
    memory_broker.start()
    await wait_until(
        lambda: seen == [True, True], what="the retained presence after renewing the subscription"
    )


async def test_a_refused_subscription_is_an_error(memory_broker: MemoryBroker, make: Make) -> None:
    memory_broker.refused_filters = {"secret/#"}
    messager = await make()
    got: list[str] = []

    async def on_question(question: Question) -> None:
        got.append(question.text)

    with pytest.raises(MessagingError, match="refused the subscription"):
        await messager.subscribe("secret/#", on_question, model=Question)
    await messager.subscribe("open/#", on_question, model=Question)
    memory_broker.stop()
    memory_broker.start()  # renewing the subscriptions must not trip over the refused one
    await wait_until(lambda: messager.is_connected, what="the reconnection")
    await messager.publish("secret/x", Question(text="hidden"))
    await messager.publish("open/x", Question(text="visible"))
    await wait_until(lambda: got == ["visible"], what="the allowed message")
