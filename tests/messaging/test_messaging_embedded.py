"""ensure_broker's modes and the ``argentic broker`` command."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

from argentic.config import MessagingConfig
from argentic.errors import ConfigError, MessagingError
from argentic.messaging.embedded_broker import EmbeddedBroker, broker_for, ensure_broker
from argentic.netutil import free_port, is_listening
from argentic.protocol import Question
from argentic.testing.messagers import MakeMessager as Messagers
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.waiting import wait_until


async def test_auto_starts_a_broker_when_none_listens(messagers: Messagers, namespace: str) -> None:
    config = MessagingConfig(broker_address="localhost", port=free_port(), embedded_broker="auto")
    broker = await ensure_broker(config)
    assert broker is not None and broker.running
    try:
        messager = await messagers(broker.host, broker.port, namespace=namespace)
        got: list[str] = []

        async def on_question(question: Question) -> None:
            got.append(question.text)

        await messager.subscribe(messager.topics.agent_questions("e"), on_question, model=Question)
        await messager.publish(messager.topics.agent_questions("e"), Question(text="hi"))
        await wait_until(lambda: got == ["hi"], what="a message through the embedded broker")
        await messager.disconnect()
    finally:
        await broker.stop()
    assert not is_listening(broker.host, broker.port)


async def test_auto_uses_a_broker_that_already_listens(mosquitto: MosquittoBroker) -> None:
    config = MessagingConfig(broker_address=mosquitto.host, port=mosquitto.port, embedded_broker="auto")
    assert await ensure_broker(config) is None


async def test_never_and_remote_addresses_start_nothing() -> None:
    assert await ensure_broker(MessagingConfig(port=free_port(), embedded_broker="never")) is None
    remote = MessagingConfig(broker_address="broker.example", port=free_port(), embedded_broker="auto")
    assert await ensure_broker(remote) is None
    with pytest.raises(ConfigError, match="not a local"):
        await ensure_broker(remote.model_copy(update={"embedded_broker": "always"}))


async def test_always_starts_one() -> None:
    broker = await ensure_broker(
        MessagingConfig(broker_address="127.0.0.1", port=free_port(), embedded_broker="always")
    )
    assert broker is not None
    await broker.stop()


async def test_broker_command_serves_until_sigterm(messagers: Messagers) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "argentic.cli.main",
        "broker",
        "--port",
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_until(
            lambda: is_listening("127.0.0.1", port), limit_s=60, what="argentic broker to listen"
        )
        messager = await messagers("127.0.0.1", port)  # protocol auto, across processes
        assert messager.protocol_version == "3.1.1"
        await messager.disconnect()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_broker_for_stops_what_it_started() -> None:
    config = MessagingConfig(broker_address="127.0.0.1", port=free_port(), embedded_broker="auto")
    async with broker_for(config) as broker:
        assert broker is not None and is_listening("127.0.0.1", config.port)
    assert not broker.running
    assert not is_listening("127.0.0.1", config.port)


async def test_the_broker_serves_inside_async_with_and_is_gone_after(
    messagers: Messagers, namespace: str
) -> None:
    port = free_port()
    async with EmbeddedBroker("127.0.0.1", port) as broker:
        assert broker.running and is_listening("127.0.0.1", port)
        messager = await messagers("127.0.0.1", port, namespace=namespace)
        got: list[str] = []

        async def on_question(question: Question) -> None:
            got.append(question.text)

        await messager.subscribe(messager.topics.agent_questions("e"), on_question, model=Question)
        await messager.publish(messager.topics.agent_questions("e"), Question(text="through"))
        await wait_until(lambda: got == ["through"], what="a message through the embedded broker")
        await messager.disconnect()
    assert not broker.running and not is_listening("127.0.0.1", port)
    # The older form, start() and stop(), is the same lifecycle.
    await broker.start()
    assert broker.running and is_listening("127.0.0.1", port)
    await broker.stop()
    assert not is_listening("127.0.0.1", port)


async def test_a_broker_that_cannot_listen_fails_to_enter_and_leaves_nothing(
    mosquitto: MosquittoBroker,
) -> None:
    taken = EmbeddedBroker("127.0.0.1", mosquitto.port)
    with pytest.raises(MessagingError, match="cannot start the embedded MQTT broker"):
        async with taken:
            pytest.fail("the block must not run")
    assert not taken.running
    # The port is still mosquitto's, and the same object starts where the port is free.
    assert is_listening(mosquitto.host, mosquitto.port)
    taken.port = free_port()
    async with taken:
        assert is_listening("127.0.0.1", taken.port)
    assert not is_listening("127.0.0.1", taken.port)
