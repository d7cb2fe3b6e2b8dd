"""Connecting: protocol negotiation, credentials, unreachable brokers, TLS, last will."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from messaging_support import BrokerUnderTest, start_peer, stop_peer

from argentic.config import MessagingConfig, TLSConfig
from argentic.errors import AuthenticationError, BrokerUnavailableError, ConfigError
from argentic.messaging import Messager
from argentic.messaging.aiomqtt_transport import AiomqttTransport
from argentic.messaging.embedded_broker import EmbeddedBroker
from argentic.messaging.transport import ConnectOptions
from argentic.netutil import free_port
from argentic.protocol import Message, Presence, Question
from argentic.testing.messagers import MakeMessager as Messagers
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.waiting import wait_until

Connect = Callable[..., Awaitable[Messager]]


async def test_protocol_is_negotiated(connect: Connect, broker: BrokerUnderTest) -> None:
    messager = await connect()
    assert messager.is_connected
    assert messager.protocol_version == ("5" if broker.mqtt5 else "3.1.1")


async def test_wrong_password_is_an_authentication_error(
    private_mosquitto_users: MosquittoBroker, messagers: Messagers
) -> None:
    broker = private_mosquitto_users
    with pytest.raises(AuthenticationError, match="alice"):
        await messagers(broker.host, broker.port, username="alice", password="wrong")
    ok = await messagers(broker.host, broker.port, username="alice", password="secret")
    assert ok.is_connected


async def test_embedded_broker_checks_passwords_when_given_users(messagers: Messagers) -> None:
    async with EmbeddedBroker("127.0.0.1", free_port(), users={"bob": "pw"}) as broker:
        with pytest.raises(AuthenticationError, match="bob"):
            await messagers(broker.host, broker.port, username="bob", password="nope")
        ok = await messagers(broker.host, broker.port, username="bob", password="pw")
        assert ok.protocol_version == "3.1.1"
        await ok.disconnect()


async def test_unreachable_broker_names_the_address(messagers: Messagers) -> None:
    port = free_port()
    with pytest.raises(BrokerUnavailableError, match=f"127.0.0.1:{port}"):
        await messagers("127.0.0.1", port, connect_timeout_s=2)


async def test_from_config_passes_credentials(
    private_mosquitto_users: MosquittoBroker, messagers: Messagers
) -> None:
    broker = private_mosquitto_users
    config = MessagingConfig(
        broker_address=broker.host,
        port=broker.port,
        username="alice",
        password="secret",
        client_id="cfg-client",
    )
    messager = Messager.from_config(config)
    await messager.connect()
    try:
        assert messager.client_id == "cfg-client"
        assert messager.protocol_version == "5"
    finally:
        await messager.disconnect()


async def test_last_will_is_published_when_a_client_dies(
    connect: Connect, broker: BrokerUnderTest, namespace: str
) -> None:
    watcher = await connect()
    states: list[bool] = []

    async def on_presence(presence: Presence) -> None:
        states.append(presence.online)

    await watcher.subscribe(watcher.topics.agent_status("dying"), on_presence, model=Presence)
    process = await start_peer("will", broker, namespace)
    try:
        await wait_until(lambda: states == [True], what="the online presence")
        process.kill()
        await process.wait()
        await wait_until(lambda: states == [True, False], what="the last will")
    finally:
        await stop_peer(process)


async def test_graceful_disconnect_publishes_the_will_once(connect: Connect) -> None:
    """A process that leaves without withdrawing what it announced is gone all the same."""
    watcher = await connect()
    seen: list[Message] = []

    async def on_message(message: Message) -> None:
        seen.append(message)

    topic = watcher.topics.agent_status("polite")
    await watcher.subscribe(topic + "/#", on_message)  # '/#' matches the topic itself too
    from argentic.messaging import Will

    leaving = await connect(will=Will(topic, Presence(role="polite", online=False), retain=False))
    await leaving.disconnect()
    # A marker published after the disconnect: once it is here, anything the broker would
    # have added for the same client (a second will) would have been delivered before it.
    await watcher.publish(topic + "/end", Question(text="marker"))
    await wait_until(lambda: any(isinstance(m, Question) for m in seen), what="the marker")
    presences = [m for m in seen if isinstance(m, Presence)]
    assert [p.online for p in presences] == [False]


# --- TLS ----------------------------------------------------------------------------------------


class TLSMosquitto(MosquittoBroker):
    """mosquitto whose listener speaks TLS with a self-signed certificate for 127.0.0.1."""

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__(persistence=False)
        self.cert, self.key = cert, key

    def _write_config(self) -> Path:
        config = super()._write_config()
        with config.open("a") as handle:
            handle.write(f"certfile {self.cert}\nkeyfile {self.key}\n")
        return config


@pytest.fixture
def tls_mosquitto(tmp_path: Path) -> Iterator[TLSMosquitto]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    os.chmod(key, 0o644)  # mosquitto may run as its own user
    broker = TLSMosquitto(cert, key)
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


async def test_tls_reaches_the_client(
    tls_mosquitto: TLSMosquitto, messagers: Messagers, namespace: str
) -> None:
    broker = tls_mosquitto
    tls = TLSConfig(enabled=True, ca_certs=broker.cert)
    secure = await messagers(broker.host, broker.port, tls=tls, namespace=namespace)
    received: list[str] = []

    async def on_question(question: Question) -> None:
        received.append(question.text)

    topic = secure.topics.agent_questions("tls")
    await secure.subscribe(topic, on_question, model=Question)
    await secure.publish(topic, Question(text="encrypted"))
    await wait_until(lambda: received == ["encrypted"], what="a message over TLS")


async def test_tls_with_an_untrusted_certificate_fails(
    tls_mosquitto: TLSMosquitto, messagers: Messagers
) -> None:
    broker = tls_mosquitto
    # Trusting only the system CAs, the self-signed certificate must be refused.
    with pytest.raises(BrokerUnavailableError, match=f"{broker.host}:{broker.port}"):
        await messagers(broker.host, broker.port, tls=TLSConfig(enabled=True), connect_timeout_s=5)


async def test_tls_with_a_missing_ca_file_says_which_key(messagers: Messagers, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(ConfigError, match=r"messaging\.tls\.ca_certs"):
        await messagers("127.0.0.1", 1, tls=TLSConfig(enabled=True, ca_certs=missing), connect_timeout_s=2)


async def test_tls_with_the_wrong_ca_says_so(
    tls_mosquitto: TLSMosquitto, messagers: Messagers, tmp_path: Path
) -> None:
    broker = tls_mosquitto
    other, other_key = tmp_path / "other.pem", tmp_path / "other-key.pem"
    await asyncio.to_thread(
        subprocess.run,
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(other_key), "-out", str(other), "-subj", "/CN=someone-else",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    with pytest.raises(BrokerUnavailableError) as caught:
        await messagers(
            broker.host, broker.port, tls=TLSConfig(enabled=True, ca_certs=other), connect_timeout_s=5
        )
    assert "TLS handshake" in str(caught.value) and "messaging.tls.ca_certs" in str(caught.value)
    assert "start one" not in str(caught.value)


async def test_plain_client_cannot_talk_to_a_tls_listener(
    tls_mosquitto: TLSMosquitto, messagers: Messagers
) -> None:
    broker = tls_mosquitto
    with pytest.raises(BrokerUnavailableError):
        await messagers(broker.host, broker.port, protocol="5", connect_timeout_s=2)


async def test_mqtt5_probe_tells_brokers_apart(broker: BrokerUnderTest) -> None:
    options = ConnectOptions(
        host=broker.host,
        port=broker.port,
        client_id="unused",
        protocol="5",
        clean_start=True,
        session_expiry_s=0,
        keepalive=30,
        timeout=5,
    )
    assert await AiomqttTransport().probe_mqtt5(options) is broker.mqtt5
