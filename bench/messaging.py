"""Messager overhead against raw aiomqtt, both on the same mosquitto (QoS 1, TCP_NODELAY, MQTT 5).

    uv run python bench/messaging.py [--requests 1500] [--messages 10000] [--quick]

Measures request/response round trips (p50/p99) and the throughput of 1 KB QoS 1 messages from one
publisher to one subscriber, each publisher keeping a window of publishes in flight. ``--quick``
sends a few hundred messages: a check that it runs. The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import time
from collections.abc import Awaitable, Callable

import aiomqtt

from argentic.messaging import Messager
from argentic.protocol import Answer, Question
from argentic.testing.mosquitto import MosquittoBroker

RTT_WARMUP = 100
WINDOW = 200
PAYLOAD_TEXT = "x" * 880  # a Question of about 1 KB of JSON
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
DEADLINE_S = 20.0  # every wait is bounded


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def raw_client(port: int) -> aiomqtt.Client:
    client = aiomqtt.Client(
        "127.0.0.1",
        port,
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=NODELAY,
        max_inflight_messages=1000,
        max_queued_outgoing_messages=0,
    )
    client.pending_calls_threshold = 10 * WINDOW  # a window of publishes in flight is the point here
    return client


async def windowed(count: int, publish_one: Callable[[int], Awaitable[None]]) -> None:
    for start in range(0, count, WINDOW):
        await asyncio.gather(*(publish_one(i) for i in range(start, min(count, start + WINDOW))))


# --- Messager -----------------------------------------------------------------------------------


async def messager_rtt(port: int, count: int) -> list[float]:
    async with (
        Messager("127.0.0.1", port, namespace="bench") as requester,
        Messager("127.0.0.1", port, namespace="bench") as responder,
    ):

        async def answer(question: Question) -> None:
            await responder.reply(
                question, Answer(question_id=question.id, conversation_id="b", text=question.text)
            )

        topic = responder.topics.agent_questions("rtt")
        await responder.subscribe(topic, answer, model=Question)
        samples: list[float] = []
        for index in range(RTT_WARMUP + count):
            started = time.perf_counter()
            await requester.request(topic, Question(text="ping"), response_model=Answer, timeout=DEADLINE_S)
            if index >= RTT_WARMUP:
                samples.append(time.perf_counter() - started)
        return samples


async def messager_throughput(port: int, count: int) -> float:
    async with (
        Messager("127.0.0.1", port, namespace="bench") as publisher,
        Messager("127.0.0.1", port, namespace="bench") as subscriber,
    ):
        received = 0
        all_in = asyncio.Event()

        async def on_question(question: Question) -> None:
            nonlocal received
            received += 1
            if received == count:
                all_in.set()

        topic = subscriber.topics.agent_questions("load")
        await subscriber.subscribe(topic, on_question, model=Question)

        async def publish_one(index: int) -> None:
            await publisher.publish(topic, Question(text=PAYLOAD_TEXT))

        started = time.perf_counter()
        await windowed(count, publish_one)
        await asyncio.wait_for(all_in.wait(), DEADLINE_S)
        return count / (time.perf_counter() - started)


# --- raw aiomqtt --------------------------------------------------------------------------------


async def raw_rtt(port: int, count: int) -> list[float]:
    request_topic, reply_topic = "bench/raw/rtt", "bench/raw/rtt/reply"
    payload = Question(text="ping").to_json()
    async with raw_client(port) as requester, raw_client(port) as responder:
        await responder.subscribe(request_topic, qos=1)
        await requester.subscribe(reply_topic, qos=1)

        async def respond() -> None:
            async for message in responder.messages:
                await responder.publish(reply_topic, message.payload, qos=1)

        serving = asyncio.create_task(respond())
        replies = aiter(requester.messages)
        samples: list[float] = []
        try:
            for index in range(RTT_WARMUP + count):
                started = time.perf_counter()
                await requester.publish(request_topic, payload, qos=1)
                await asyncio.wait_for(anext(replies), DEADLINE_S)
                if index >= RTT_WARMUP:
                    samples.append(time.perf_counter() - started)
        finally:
            serving.cancel()
        return samples


async def raw_throughput(port: int, count: int) -> float:
    topic = "bench/raw/load"
    payload = Question(text=PAYLOAD_TEXT).to_json()
    async with raw_client(port) as publisher, raw_client(port) as subscriber:
        await subscriber.subscribe(topic, qos=1)

        async def consume() -> None:
            received = 0
            async for _ in subscriber.messages:
                received += 1
                if received == count:
                    return

        consuming = asyncio.create_task(consume())

        async def publish_one(index: int) -> None:
            await publisher.publish(topic, payload, qos=1)

        started = time.perf_counter()
        await windowed(count, publish_one)
        await asyncio.wait_for(consuming, DEADLINE_S)
        return count / (time.perf_counter() - started)


async def main(requests: int, messages: int) -> None:
    with MosquittoBroker(persistence=False) as broker:
        raw_samples = await raw_rtt(broker.port, requests)
        samples = await messager_rtt(broker.port, requests)
        raw_rate = await raw_throughput(broker.port, messages)
        rate = await messager_throughput(broker.port, messages)
    rtt_p50, rtt_p99 = statistics.median(samples) * 1000, percentile(samples, 0.99) * 1000
    raw_p50, raw_p99 = statistics.median(raw_samples) * 1000, percentile(raw_samples, 0.99) * 1000
    print(f"round trip, {requests} requests, QoS 1:")
    print(f"  Messager.request  p50 {rtt_p50:6.2f} ms   p99 {rtt_p99:6.2f} ms")
    print(f"  raw aiomqtt       p50 {raw_p50:6.2f} ms   p99 {raw_p99:6.2f} ms")
    print(f"throughput, {messages} messages of ~1 KB, QoS 1, window {WINDOW}:")
    print(f"  Messager          {rate:8.0f} msg/s")
    print(f"  raw aiomqtt       {raw_rate:8.0f} msg/s")
    result = {
        "rtt_p50_ms": round(rtt_p50, 3),
        "raw_rtt_p50_ms": round(raw_p50, 3),
        "rtt_ratio": round(rtt_p50 / raw_p50, 3),
        "msgs_per_s": round(rate, 1),
        "raw_msgs_per_s": round(raw_rate, 1),
        "throughput_ratio": round(rate / raw_rate, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500, help="measured round trips of each side")
    parser.add_argument("--messages", type=int, default=10_000, help="messages of each side's throughput")
    parser.add_argument("--quick", action="store_true", help="a check that it runs: a few hundred messages")
    args = parser.parse_args()
    if args.quick:
        parser.set_defaults(requests=100, messages=400)
        args = parser.parse_args()
    asyncio.run(main(args.requests, args.messages))
