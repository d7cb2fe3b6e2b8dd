"""The MQTT transport on a real broker: socket options, closing, and many concurrent (un)subscriptions."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

import argentic.messaging
from argentic.errors import BrokerUnavailableError
from argentic.messaging import Messager
from argentic.messaging.mqtt_transport import MqttTransport
from argentic.messaging.transport import ConnectOptions
from argentic.protocol import Question
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.waiting import wait_until

Messagers = Callable[..., Awaitable[Messager]]


def test_the_messaging_package_touches_no_private_attribute_of_another_object() -> None:
    """No ``x._name`` unless ``x`` is ``self`` or ``cls``: private parts of aiomqtt, paho and
    asyncio change without notice."""
    package = Path(argentic.messaging.__file__).parent
    found = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
                continue
            if node.attr.startswith("__") and node.attr.endswith("__"):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def test_every_messaging_module_is_at_most_450_lines() -> None:
    package = Path(argentic.messaging.__file__).parent
    sizes = {path.name: len(path.read_text().splitlines()) for path in package.glob("*.py")}
    assert {name: size for name, size in sizes.items() if size > 450} == {}


def test_the_old_transport_name_still_imports() -> None:
    from argentic.messaging.aiomqtt_transport import AiomqttTransport

    assert AiomqttTransport is MqttTransport


def _options(host: str, port: int, **changes: object) -> ConnectOptions:
    values: dict[str, object] = {
        "host": host,
        "port": port,
        "client_id": "argentic-transport-test",
        "protocol": "5",
        "clean_start": True,
        "session_expiry_s": 0,
        "keepalive": 30,
        "timeout": 5,
    }
    values.update(changes)
    return ConnectOptions(**values)  # type: ignore[arg-type]


async def test_the_socket_has_tcp_nodelay(mosquitto: MosquittoBroker) -> None:
    transport = MqttTransport()
    await transport.connect(_options(mosquitto.host, mosquitto.port))
    try:
        sock = transport.socket
        assert sock is not None
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        await transport.disconnect()
    assert transport.socket is None


@contextlib.asynccontextmanager
async def _silent_server() -> AsyncIterator[tuple[int, asyncio.Queue[float]]]:
    """A TCP server that accepts and never answers; the queue gets the time each peer closed."""
    closed: asyncio.Queue[float] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(4096):
            pass
        closed.put_nowait(loop.time())
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], closed
    finally:
        server.close()
        await server.wait_closed()


async def test_an_attempt_that_times_out_closes_its_socket_at_once() -> None:
    async with _silent_server() as (port, closed):
        transport = MqttTransport()
        loop = asyncio.get_running_loop()
        with pytest.raises(BrokerUnavailableError, match=f"127.0.0.1:{port}"):
            await transport.connect(_options("127.0.0.1", port, timeout=0.5))
        gave_up = loop.time()
        # The server sees the connection end right away, not when the process exits.
        assert await asyncio.wait_for(closed.get(), 2) - gave_up < 0.5
        assert transport.socket is None


async def test_a_broker_that_hangs_up_before_its_connack_fails_the_attempt_at_once() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the CONNECT has begun to arrive
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        with pytest.raises(BrokerUnavailableError, match="closed the connection before accepting it"):
            await MqttTransport().connect(_options("127.0.0.1", port, timeout=10))
        assert loop.time() - started < 2  # not the 10 s timeout
    finally:
        server.close()
        await server.wait_closed()


async def test_many_concurrent_subscribes_unsubscribes_and_cancelled_ones_on_one_messager(
    mosquitto: MosquittoBroker,
    messagers: Messagers,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """What 30 root questions with 16 concurrent handlers do to one client, made worse: every
    handler subscribes, unsubscribes, and gives up on subscribes and unsubscribes before the
    broker answers. No acknowledgement may be logged as unexpected, nothing may leak, and every
    subscription kept must deliver."""
    caplog.set_level(logging.WARNING)
    client = await messagers(mosquitto.host, mosquitto.port, namespace=namespace, max_concurrent_handlers=16)
    publisher = await messagers(mosquitto.host, mosquitto.port, namespace=namespace)
    heard: dict[str, list[str]] = {}
    kept: list[str] = []
    abandoned: list[str] = []
    dropped: list[str] = []

    def handler(topic: str) -> Callable[[Question], Awaitable[None]]:
        async def on_question(question: Question) -> None:
            heard.setdefault(topic, []).append(question.text)

        return on_question

    async def give_up(work: Awaitable[object], turns: int) -> None:
        task = asyncio.ensure_future(work)
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def worker(index: int) -> None:
        for round_ in range(6):
            base = client.topics.agent_questions(f"w{index}-r{round_}")
            kept_topic, dropped_topic, abandoned_topic = f"{base}/kept", f"{base}/dropped", f"{base}/gone"
            await client.subscribe(kept_topic, handler(kept_topic), model=Question)
            kept.append(kept_topic)
            dropped_sub = await client.subscribe(dropped_topic, handler(dropped_topic), model=Question)
            await client.unsubscribe(dropped_sub)
            dropped.append(dropped_topic)
            # Cancelled after the SUBSCRIBE is queued, before its SUBACK can have come back.
            await give_up(
                client.subscribe(abandoned_topic, handler(abandoned_topic), model=Question), 1 + round_ % 3
            )
            abandoned.append(abandoned_topic)
            # An unsubscribe given up on while the broker still has to answer it.
            other = await client.subscribe(f"{base}/brief", handler(f"{base}/brief"), model=Question)
            await give_up(client.unsubscribe(other), 1)
            dropped.append(f"{base}/brief")
            # Subscribes given up on by a timeout shorter than a round trip.
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0):
                    await client.subscribe(f"{base}/late", handler(f"{base}/late"), model=Question)
            abandoned.append(f"{base}/late")

    await asyncio.gather(*(worker(index) for index in range(16)))
    assert len(kept) == 16 * 6 and len(abandoned) == len(dropped) == 2 * 16 * 6
    # The others first: once the kept ones arrived, so had they (one publisher keeps its order).
    for topic in dropped + abandoned + kept:
        await publisher.publish(topic, Question(text=topic))
    await wait_until(
        lambda: all(heard.get(topic) == [topic] for topic in kept), what="every kept subscription"
    )
    await asyncio.sleep(0.2)
    complaints = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]
    assert complaints == []
    assert "Traceback" not in capfd.readouterr().err
    assert {topic: texts for topic, texts in heard.items() if topic not in kept} == {}
