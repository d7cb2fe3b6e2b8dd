"""The transport seam: what the Messager needs from an MQTT connection, and nothing more.

:class:`MqttTransport` (in :mod:`argentic.messaging.mqtt_transport`) speaks to a real broker;
:class:`~argentic.messaging.memory.MemoryTransport` is an in-process broker for fast tests.
A transport holds one connection at a time and can be connected again after it was lost.
"""

from __future__ import annotations

import ssl
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

# Importable from here as before; they live in the one tree of argentic.errors.
from argentic.errors import ConnectionLostError, ProtocolRefusedError
from argentic.protocol import Message

__all__ = [
    "ConnectOptions",
    "Connected",
    "ConnectionLostError",
    "Inbound",
    "Outbound",
    "ProtocolRefusedError",
    "ProtocolVersion",
    "Transport",
    "WillMessage",
    "known_protocol",
    "remember_protocol",
]

ProtocolVersion = Literal["5", "3.1.1"]


@dataclass(frozen=True, slots=True)
class WillMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    host: str
    port: int
    client_id: str
    protocol: ProtocolVersion
    clean_start: bool
    session_expiry_s: int
    keepalive: int
    timeout: float
    username: str | None = None
    password: str | None = None
    tls_context: ssl.SSLContext | None = None
    tls_insecure: bool = False
    will: WillMessage | None = None
    max_inflight: int = 1000
    max_queued_bytes: int | None = None  # received bytes held before the socket is read again
    publish_timeout_s: float | None = None  # longest wait for a publish's acknowledgement


@dataclass(frozen=True, slots=True)
class Outbound:
    """One publish. The MQTT 5 fields are sent as properties when the connection speaks 5."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    response_topic: str | None = None
    correlation_data: bytes | None = None
    expires_at: float | None = None  # Unix seconds; becomes MessageExpiryInterval
    traceparent: str | None = None  # becomes the user property ``traceparent``
    attempts: int = 0  # sends that ended with the connection lost (see limits.MAX_SEND_ATTEMPTS)

    @classmethod
    def of(cls, topic: str, message: Message | None, qos: int, retain: bool) -> Outbound:
        """``message`` as a publish (``None``: an empty payload, which clears a retained message)."""
        if message is None:
            return cls(topic, b"", qos, retain)
        correlation = message.correlation_id
        return cls(
            topic,
            message.to_json(),
            qos,
            retain,
            message.reply_to,
            correlation.encode() if correlation is not None else None,
            message.expires_at,
            message.traceparent,
        )


@dataclass(frozen=True, slots=True)
class Inbound:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    response_topic: str | None = None
    correlation_data: bytes | None = None
    traceparent: str | None = None  # the MQTT 5 user property


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: ProtocolVersion
    session_present: bool


class Transport(ABC):
    """One MQTT connection. Methods raise :class:`ConnectionLostError` once the connection is gone."""

    @abstractmethod
    async def connect(self, options: ConnectOptions) -> Connected:
        """Open the connection; raises BrokerUnavailableError, AuthenticationError or ProtocolRefusedError."""

    @abstractmethod
    async def disconnect(self, *, end_session: bool = False) -> None:
        """Close gracefully (no last will); does nothing when not connected.

        ``end_session`` asks the broker to drop the session now rather than keep it (MQTT 5).
        """

    @abstractmethod
    async def publish(self, message: Outbound) -> None:
        """Publish and, for QoS > 0, wait for the broker's acknowledgement: at most the connection's
        ``publish_timeout_s``, then TimeoutError."""

    @abstractmethod
    async def subscribe(self, topic_filter: str, qos: int) -> None: ...

    @abstractmethod
    async def unsubscribe(self, topic_filter: str) -> None: ...

    async def probe_mqtt5(self, options: ConnectOptions) -> bool | None:
        """Whether the broker speaks MQTT 5, found without touching this client's session.

        None when the transport cannot tell; the Messager then tries MQTT 5 and falls back.
        """
        return None

    @abstractmethod
    def messages(self) -> AsyncIterator[Inbound]:
        """Incoming messages of the current connection; raises ConnectionLostError when it drops."""


# MQTT versions found to work per broker address in this process. A 3.1.1-only broker (amqtt)
# does not refuse an MQTT 5 CONNECT, it stalls on it; remembering saves later clients the wait.
_known_protocols: dict[tuple[str, int], ProtocolVersion] = {}


def remember_protocol(host: str, port: int, protocol: ProtocolVersion | None) -> None:
    """Record (or, with None, forget) the MQTT version the broker at host:port speaks."""
    if protocol is None:
        _known_protocols.pop((host, port), None)
    else:
        _known_protocols[(host, port)] = protocol


def known_protocol(host: str, port: int) -> ProtocolVersion | None:
    return _known_protocols.get((host, port))
