"""The MQTT transport: one paho-mqtt connection at a time, served by the asyncio loop.

A :class:`~argentic.messaging.paho_link.PahoLink` holds the connection (TCP_NODELAY, TLS, will,
session properties, keepalive, SUBACK/UNSUBACK waiters); this module adds the two per-message
paths and the mapping of failures to argentic's errors. A publish waits on one future resolved
by paho's ``on_publish``, with one timer for all of them, and incoming messages go from paho's
``on_message`` straight into a queue whose size in bytes pauses the reading of the socket. When
the connection ends, every waiting publish fails and the message stream ends, so no wait
outlives the connection.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from argentic.errors import (
    AuthenticationError,
    BrokerUnavailableError,
    ConnectionLostError,
    MessagingError,
    ProtocolRefusedError,
)
from argentic.messaging.paho_link import NODELAY, Connack, PahoLink, new_client
from argentic.messaging.publish_properties import TRACEPARENT, PublishProperties
from argentic.messaging.transport import Connected, ConnectOptions, Inbound, Outbound, Transport

__all__ = ["NODELAY", "MqttTransport"]

_AUTH_CODES = {4, 5, 134, 135}  # 3.1.1 bad credentials / not authorised, and their MQTT 5 reason codes
_PROTOCOL_CODES = {1, 132}  # 3.1.1 unacceptable protocol version, MQTT 5 unsupported protocol version


def _link(options: ConnectOptions, *, v5: bool, probe: bool = False) -> tuple[PahoLink, Properties | None]:
    """A link for ``options``, and the CONNECT properties to send (none for a probe)."""
    client = new_client(
        f"argentic-probe-{uuid.uuid4().hex[:12]}" if probe else options.client_id,
        v5=v5,
        clean_session=options.clean_start,
        max_inflight=options.max_inflight,
    )
    if options.username is not None:
        client.username_pw_set(options.username, options.password)
    if options.tls_context is not None:
        client.tls_set_context(options.tls_context)
        client.tls_insecure_set(options.tls_insecure)
    properties = None
    if v5 and not probe:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = options.session_expiry_s
    if options.will is not None and not probe:
        will = options.will
        client.will_set(will.topic, will.payload or None, will.qos, will.retain)
    return PahoLink(client), properties


async def _open(
    link: PahoLink, options: ConnectOptions, properties: Properties | None, *, v5: bool
) -> Connack:
    return await link.open(
        options.host,
        options.port,
        keepalive=options.keepalive,
        # paho refuses a clean_start flag on 3.1.1; FIRST_ONLY is its neutral default there.
        clean_start=options.clean_start if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
        properties=properties,
        timeout=options.timeout,
    )


class MqttTransport(Transport):
    def __init__(self) -> None:
        self._link: PahoLink | None = None
        self._lost: asyncio.Future[None] | None = None
        self._acks: dict[int, asyncio.Future[None]] = {}
        # Publishes waiting for their acknowledgement, oldest first, with their deadlines: one
        # timer for all of them (a timer each would cost more than the rest of a publish).
        self._deadlines: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._publish_timeout_s: float | None = None
        self._inbox: asyncio.Queue[Inbound | None] = asyncio.Queue()
        self._v5 = False
        # Received bytes not yet read by messages(): beyond the bound the socket is not read
        # until half of them are, so a flood waits in the broker rather than in this process.
        self._queued_bytes = 0
        self._max_queued_bytes: int | None = None

    @property
    def socket(self) -> socket.socket | None:
        """The current connection's socket, if connected (for diagnostics)."""
        return self._link.socket if self._link is not None else None

    # --- paho callbacks, on the event loop ---------------------------------------------------

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: Any, props: Any) -> None:
        future = self._acks.pop(mid, None)
        if future is None or future.done():
            return
        if getattr(reason_code, "is_failure", False):  # an MQTT 5 PUBACK refusing the message
            future.set_exception(MessagingError(f"the broker refused the publish: {reason_code}"))
        else:
            future.set_result(None)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        response_topic = correlation = traceparent = None
        props = getattr(message, "properties", None)
        if props is not None:
            response_topic = getattr(props, "ResponseTopic", None)
            correlation = getattr(props, "CorrelationData", None)
            for name, value in getattr(props, "UserProperty", None) or ():
                if name == TRACEPARENT:
                    traceparent = value
        payload = message.payload
        if isinstance(payload, bytearray):
            payload = bytes(payload)
        self._inbox.put_nowait(
            Inbound(
                message.topic,
                payload,
                message.qos,
                bool(message.retain),
                response_topic,
                correlation,
                traceparent,
            )
        )
        self._queued_bytes += len(payload)
        limit = self._max_queued_bytes
        if limit is not None and self._queued_bytes > limit and self._link is not None:
            self._link.pause_reading()

    # --- connecting ---------------------------------------------------------------------------

    async def connect(self, options: ConnectOptions) -> Connected:
        await self.disconnect()
        # A resumed session's queued messages arrive right behind the CONNACK: be ready for them.
        self._inbox = asyncio.Queue()
        self._queued_bytes = 0
        self._max_queued_bytes = options.max_queued_bytes
        self._publish_timeout_s = options.publish_timeout_s
        v5 = options.protocol == "5"
        link, properties = _link(options, v5=v5)
        link.client.on_publish = self._on_publish
        link.client.on_message = self._on_message
        lost = asyncio.get_running_loop().create_future()
        link.on_lost = lambda reason: self._mark_lost(reason, lost)
        where = f"{options.host}:{options.port}"
        self._link = link  # before the CONNACK: a resumed session's messages come right behind it
        try:
            connack = await _open(link, options, properties, v5=v5)
        except (BrokerUnavailableError, OSError, TimeoutError, ValueError) as exc:
            self._link = None
            tls_error = _tls_failure(exc)
            if tls_error is not None:
                raise BrokerUnavailableError(
                    f"the TLS handshake with the MQTT broker at {where} failed ({tls_error}); check "
                    "that messaging.tls.ca_certs holds the CA that signed the broker's certificate"
                ) from exc
            raise BrokerUnavailableError(
                f"no MQTT broker answered at {where} ({exc or type(exc).__name__}); start one "
                "(`argentic broker`, mosquitto) or fix messaging.broker_address / messaging.port"
            ) from exc
        except BaseException:
            self._link = None
            raise
        if not connack.accepted:
            self._link = None
            if connack.code in _AUTH_CODES:
                raise AuthenticationError(
                    f"the MQTT broker at {where} refused the credentials of user {options.username!r} "
                    f"({connack.reason}); check messaging.username and messaging.password"
                )
            if connack.code in _PROTOCOL_CODES:
                raise ProtocolRefusedError(f"the MQTT broker at {where} refused MQTT {options.protocol}")
            raise BrokerUnavailableError(
                f"the MQTT broker at {where} refused the connection: {connack.reason}"
            )
        self._lost, self._v5 = lost, v5
        return Connected(protocol=options.protocol, session_present=connack.session_present)

    async def probe_mqtt5(self, options: ConnectOptions) -> bool | None:
        """Connect once with a throwaway id and no CONNECT properties, then leave.

        Without properties a 3.1.1-only broker (amqtt) refuses MQTT 5 at once instead of stalling
        on the properties it cannot parse; any MQTT 5 CONNACK, even a refusal of the credentials,
        shows that the broker speaks 5.
        """
        link, _ = _link(options, v5=True, probe=True)
        try:
            connack = await _open(link, options, None, v5=True)
        except (BrokerUnavailableError, OSError, TimeoutError, ValueError):
            return None  # unreachable or stalled: the real attempt reports it
        if not connack.accepted:
            return connack.code not in _PROTOCOL_CODES
        await link.disconnect()
        return True

    async def disconnect(self, *, end_session: bool = False) -> None:
        link, self._link = self._link, None
        was_connected = self._lost is not None and not self._lost.done()
        self._mark_lost("disconnected")
        if link is None:
            return
        properties = None
        if end_session and self._v5 and was_connected:
            # Session Expiry 0 in DISCONNECT: the broker forgets this session now instead of
            # holding its subscriptions and queueing messages for a client that never returns.
            properties = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 0
        await link.disconnect(properties)

    def _connected(self) -> tuple[PahoLink, asyncio.Future[None]]:
        if self._link is None or self._lost is None or self._lost.done():
            raise ConnectionLostError("not connected to the broker")
        return self._link, self._lost

    def _mark_lost(self, reason: object, connection: asyncio.Future[None] | None = None) -> None:
        """Fail the current connection's waits (only if it is ``connection``, when given)."""
        lost = self._lost
        if lost is None or lost.done() or (connection is not None and connection is not lost):
            return
        error = ConnectionLostError(f"connection to the broker lost: {reason}")
        lost.set_exception(error)
        lost.exception()  # retrieved: it is only a flag
        acks, self._acks = self._acks, {}
        for future in acks.values():
            if not future.done():
                future.set_exception(error)
        self._deadlines.clear()
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        self._inbox.put_nowait(None)  # ends messages()

    # --- publishing ---------------------------------------------------------------------------

    def _properties(self, message: Outbound) -> Properties | None:
        if not self._v5 or (
            message.response_topic is None
            and message.correlation_data is None
            and message.expires_at is None
            and message.traceparent is None
        ):
            return None
        return PublishProperties(
            message.response_topic, message.correlation_data, message.expires_at, message.traceparent
        )

    async def publish(self, message: Outbound) -> None:
        link, _ = self._connected()
        info = link.client.publish(
            message.topic, message.payload, message.qos, message.retain, self._properties(message)
        )
        if info.rc != paho.MQTT_ERR_SUCCESS:
            self._mark_lost(paho.error_string(info.rc))
            raise ConnectionLostError(f"publish failed: {paho.error_string(info.rc)}")
        if message.qos == 0 or info.is_published():
            return
        future = asyncio.get_running_loop().create_future()
        self._acks[info.mid] = future
        if self._publish_timeout_s is not None:
            self._watch(future, self._publish_timeout_s)
        try:
            await future
        finally:
            self._acks.pop(info.mid, None)

    def _watch(self, future: asyncio.Future[None], timeout: float) -> None:
        """Fail ``future`` with TimeoutError if it is not done within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadlines = self._deadlines
        while deadlines and deadlines[0][1].done():
            deadlines.popleft()
        deadlines.append((loop.time() + timeout, future))
        if self._sweep_handle is None:
            self._sweep_handle = loop.call_at(deadlines[0][0], self._sweep)

    def _sweep(self) -> None:
        self._sweep_handle = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadlines = self._deadlines
        while deadlines:
            deadline, future = deadlines[0]
            if not future.done():
                if deadline > now:
                    self._sweep_handle = loop.call_at(deadline, self._sweep)
                    return
                future.set_exception(TimeoutError())
            deadlines.popleft()

    # --- subscribing and receiving ------------------------------------------------------------

    async def subscribe(self, topic_filter: str, qos: int) -> None:
        link, _ = self._connected()
        granted = await link.subscribe(topic_filter, qos)
        for code in granted:
            # MQTT 5 reason codes, or 3.1.1 granted QoS where 0x80 means refused.
            if getattr(code, "is_failure", False) or code == 0x80:
                raise MessagingError(f"the broker refused the subscription to {topic_filter!r}: {code}")

    async def unsubscribe(self, topic_filter: str) -> None:
        link, _ = self._connected()
        await link.unsubscribe(topic_filter)

    async def messages(self) -> AsyncIterator[Inbound]:
        link, lost = self._connected()
        inbox = self._inbox
        while True:
            inbound = await inbox.get()
            if inbound is None:
                break
            self._queued_bytes -= len(inbound.payload)
            limit = self._max_queued_bytes
            if limit is None or self._queued_bytes <= limit // 2:
                link.resume_reading()
            yield inbound
        raise ConnectionLostError(str(lost.exception()) if lost.done() else "connection to the broker lost")


def _tls_failure(exc: BaseException) -> str | None:
    """What went wrong in the TLS handshake, if that is what ``exc`` (or what it wraps) is."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return str(getattr(seen, "verify_message", None) or seen.reason or seen)
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    return text if "SSL" in text or "CERTIFICATE" in text else None
