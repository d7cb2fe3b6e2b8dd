"""What the messager takes from the wire is bounded: deep or huge-number payloads are one warning
line, and payloads waiting for busy handlers are capped (the rest is shed, with a warning)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from argentic.messaging import Messager
from argentic.messaging.transport import Outbound
from argentic.protocol import Message, Question
from argentic.testing.waiting import wait_until

Connect = Callable[..., Awaitable[Messager]]

DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE_NUMBER = b'{"type": "question", "text": "x", "n": 1' + b"0" * 5000 + b"}"


@pytest.mark.parametrize("payload", [DEEP, HUGE_NUMBER], ids=["deep", "huge-number"])
async def test_unparseable_json_is_one_warning(
    connect: Connect, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="argentic")
    sender, receiver = await connect(), await connect()
    topic = receiver.topics.agent_questions("limits")
    received: list[Message] = []

    async def on_message(message: Message) -> None:
        received.append(message)

    await receiver.subscribe(topic, on_message)
    await receiver.subscribe(topic + "/typed", on_message, model=Question)
    raw = sender._connection.transport  # the bytes as any client could send them
    for target in (topic, topic + "/typed", receiver.inbox):
        await raw.publish(Outbound(target, payload, 1))
    await sender.publish(topic, Question(text="after"))
    await wait_until(lambda: len(received) == 1)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    dropped = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(dropped) >= 2 and all(r.exc_info is None for r in dropped)
    assert all("\n" not in r.getMessage() for r in dropped)


async def test_payloads_waiting_for_handlers_are_capped(connect: Connect) -> None:
    sender = await connect()
    receiver = await connect(max_queued_bytes=2_000_000, max_concurrent_handlers=2)
    topic = receiver.topics.agent_questions("capped")
    release = asyncio.Event()
    handled: list[str] = []

    async def slow(question: Question) -> None:
        await release.wait()
        handled.append(question.text)

    await receiver.subscribe(topic, slow, model=Question)
    for i in range(20):
        await sender.publish(topic, Question(text=f"{i}:" + "x" * 190_000, user_id="u"))
    # 20 payloads of ~190 KB each: at most ~2 MB of them wait, the rest are shed.
    await wait_until(lambda: receiver._dispatcher.shed + receiver._dispatcher.pending_bytes // 190_000 >= 20)
    assert receiver._dispatcher.pending_bytes <= 2_000_000 + 200_000
    assert receiver._dispatcher.shed > 0
    release.set()
    await sender.publish(topic, Question(text="small"))
    await wait_until(lambda: "small" in handled)


async def test_the_receive_queue_is_bounded_and_loses_nothing(connect: Connect) -> None:
    sender = await connect()
    receiver = await connect(max_queued_bytes=1_000_000, max_concurrent_handlers=1)
    topic = receiver.topics.agent_questions("flood")
    release = asyncio.Event()
    handled: list[str] = []

    async def slow(question: Question) -> None:
        await release.wait()
        handled.append(question.text)

    await receiver.subscribe(topic, slow, model=Question)
    count = 400
    await asyncio.gather(
        *(sender.publish(topic, Question(text=f"{i}:" + "x" * 10_000)) for i in range(count))
    )
    transport = receiver._connection.transport
    peak = 0
    for _ in range(50):  # while the handler is stuck, the flood waits in the broker
        peak = max(peak, transport._queued_bytes)
        await asyncio.sleep(0.01)
    assert peak <= 2_000_000
    release.set()
    await wait_until(lambda: len(handled) == count, limit_s=60, what=lambda: f"{len(handled)} of {count}")
    assert sorted(int(t.split(":")[0]) for t in handled) == list(range(count))
