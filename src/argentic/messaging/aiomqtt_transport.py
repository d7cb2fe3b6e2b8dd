"""The aiomqtt transport: one aiomqtt client per connection, TCP_NODELAY on its socket.

aiomqtt opens the connection (TLS, will, session properties, socket callbacks) and subscribes.
The two per-message paths go to its paho client directly, because aiomqtt's cost a task and an
``asyncio.wait`` per message: a publish waits on one future resolved by paho's ``on_publish``, and
incoming messages go from paho's ``on_message`` straight into a queue. When aiomqtt marks the
connection lost, every waiting publish fails and the message stream ends, so no wait outlives
the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import ssl
import struct
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from argentic.errors import (
    AuthenticationError,
    BrokerUnavailableError,
    ConnectionLostError,
    MessagingError,
    ProtocolRefusedError,
)
from argentic.messaging.transport import Connected, ConnectOptions, Inbound, Outbound, Transport

# Without it every QoS 1 round trip waits on Nagle against delayed ACK (tens of milliseconds).
NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
_AUTH_CODES = {4, 5, 134, 135}  # 3.1.1 bad credentials / not authorised, and their MQTT 5 reason codes
_PROTOCOL_CODES = {1, 132}  # 3.1.1 unacceptable protocol version, MQTT 5 unsupported protocol version


def _code(exc: aiomqtt.MqttCodeError) -> int | None:
    rc = exc.rc
    if rc is None:
        return None
    return int(rc.value) if hasattr(rc, "value") else int(rc)


def _close_socket(client: aiomqtt.Client) -> None:
    """Close the socket of a connection attempt that failed or timed out, so it does not linger."""
    with contextlib.suppress(Exception):
        client._client._sock_close()


class AiomqttTransport(Transport):
    def __init__(self) -> None:
        self._client: aiomqtt.Client | None = None
        self._lost: asyncio.Future[None] | None = None
        self._acks: dict[int, asyncio.Future[None]] = {}
        # Publishes waiting for their acknowledgement, oldest first, with their deadlines: one
        # timer for all of them (a timer each would cost more than the rest of a publish).
        self._deadlines: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._publish_timeout_s: float | None = None
        self._inbox: asyncio.Queue[Inbound | None] = asyncio.Queue()
        self._v5 = False
        self._session_present = False
        # Received bytes not yet read by messages(): beyond the bound the socket is not read
        # until half of them are, so a flood waits in the broker rather than in this process.
        self._queued_bytes = 0
        self._max_queued_bytes: int | None = None
        self._paused: tuple[int, Any, Any] | None = None  # socket fd, aiomqtt's reader and its args

    def _build(self, options: ConnectOptions) -> aiomqtt.Client:
        v5 = options.protocol == "5"
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = options.session_expiry_s
        will = None
        if options.will is not None:
            w = options.will
            will = aiomqtt.Will(w.topic, w.payload or None, w.qos, w.retain)
        client = aiomqtt.Client(
            options.host,
            options.port,
            identifier=options.client_id,
            username=options.username,
            password=options.password,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else options.clean_start,
            # paho refuses a clean_start flag on 3.1.1; FIRST_ONLY is its neutral default there.
            clean_start=options.clean_start if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
            keepalive=options.keepalive,
            timeout=options.timeout,
            will=will,
            tls_context=options.tls_context,
            tls_insecure=options.tls_insecure if options.tls_context is not None else None,
            socket_options=[NODELAY],
            # The Messager bounds what it queues itself; let paho keep a wide window in flight.
            max_inflight_messages=options.max_inflight,
            max_queued_outgoing_messages=0,
        )
        # aiomqtt warns above 10 pending calls; subscribes are the only calls left to it, and a
        # burst of them at reconnection is normal.
        client.pending_calls_threshold = options.max_inflight
        paho_client: paho.Client = client._client
        original_on_connect: Any = paho_client.on_connect

        def on_connect(
            c: paho.Client, userdata: Any, flags: Any, reason_code: Any, props: Any = None
        ) -> None:
            self._session_present = bool(getattr(flags, "session_present", False))
            original_on_connect(c, userdata, flags, reason_code, props)

        paho_client.on_connect = on_connect
        paho_client.on_publish = self._on_publish
        paho_client.on_message = self._on_message
        return client

    # paho callbacks, called on the event loop (aiomqtt drives paho's socket from the loop)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: Any, props: Any) -> None:
        future = self._acks.pop(mid, None)
        if future is None or future.done():
            return
        if getattr(reason_code, "is_failure", False):  # an MQTT 5 PUBACK refusing the message
            future.set_exception(MessagingError(f"the broker refused the publish: {reason_code}"))
        else:
            future.set_result(None)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        response_topic = correlation = None
        props = getattr(message, "properties", None)
        if props is not None:
            response_topic = getattr(props, "ResponseTopic", None)
            correlation = getattr(props, "CorrelationData", None)
        payload = message.payload
        if isinstance(payload, bytearray):
            payload = bytes(payload)
        self._inbox.put_nowait(
            Inbound(message.topic, payload, message.qos, bool(message.retain), response_topic, correlation)
        )
        self._queued_bytes += len(payload)
        limit = self._max_queued_bytes
        if limit is not None and self._queued_bytes > limit and self._paused is None:
            self._pause_reading(client)

    def _pause_reading(self, client: paho.Client) -> None:
        loop = asyncio.get_running_loop()
        sock = client.socket()
        try:
            fd = sock.fileno() if sock is not None else -1
            selector = getattr(loop, "_selector", None)
            key = selector.get_key(fd) if selector is not None and fd >= 0 else None
        except (KeyError, ValueError, OSError):
            return
        reader = key.data[0] if key is not None and key.data else None
        if reader is None:
            return  # a loop that does not tell its readers: the queue stays unbounded
        callback, args = reader._callback, reader._args or ()  # removing the reader clears them
        loop.remove_reader(fd)
        self._paused = (fd, callback, args)

    def _resume_reading(self) -> None:
        paused, self._paused = self._paused, None
        if paused is None or self._client is None or self._lost is None or self._lost.done():
            return
        fd, callback, args = paused
        with contextlib.suppress(OSError, ValueError):
            asyncio.get_running_loop().add_reader(fd, callback, *args)

    async def connect(self, options: ConnectOptions) -> Connected:
        await self.disconnect()
        # A resumed session's queued messages arrive right behind the CONNACK: be ready for them.
        self._inbox = asyncio.Queue()
        self._queued_bytes = 0
        self._paused = None
        self._max_queued_bytes = options.max_queued_bytes
        self._publish_timeout_s = options.publish_timeout_s
        client = self._build(options)
        where = f"{options.host}:{options.port}"
        try:
            try:
                await asyncio.wait_for(client.__aenter__(), options.timeout)
            except BaseException:
                _close_socket(client)
                raise
        except MqttConnectError as exc:
            code = _code(exc)
            if code in _AUTH_CODES:
                raise AuthenticationError(
                    f"the MQTT broker at {where} refused the credentials of user {options.username!r} "
                    f"({exc}); check messaging.username and messaging.password"
                ) from exc
            if code in _PROTOCOL_CODES:
                raise ProtocolRefusedError(
                    f"the MQTT broker at {where} refused MQTT {options.protocol}"
                ) from exc
            raise BrokerUnavailableError(f"the MQTT broker at {where} refused the connection: {exc}") from exc
        except (aiomqtt.MqttError, OSError, TimeoutError, ValueError) as exc:
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
        self._client = client
        self._lost = asyncio.get_running_loop().create_future()
        self._v5 = options.protocol == "5"
        # aiomqtt resolves this future however the connection ends (socket error, DISCONNECT, ...).
        lost = self._lost
        client._disconnected.add_done_callback(lambda done: self._mark_lost(_describe(done), lost))
        return Connected(protocol=options.protocol, session_present=self._session_present)

    async def probe_mqtt5(self, options: ConnectOptions) -> bool | None:
        """Connect once with a throwaway id and no CONNECT properties, then leave.

        Without properties a 3.1.1-only broker (amqtt) refuses MQTT 5 at once instead of stalling
        on the properties it cannot parse; any MQTT 5 CONNACK, even a refusal of the credentials,
        shows that the broker speaks 5.
        """
        client = aiomqtt.Client(
            options.host,
            options.port,
            identifier=f"argentic-probe-{uuid.uuid4().hex[:12]}",
            username=options.username,
            password=options.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=True,
            keepalive=options.keepalive,
            timeout=options.timeout,
            tls_context=options.tls_context,
            tls_insecure=options.tls_insecure if options.tls_context is not None else None,
            socket_options=[NODELAY],
        )
        try:
            await asyncio.wait_for(client.__aenter__(), options.timeout)
        except MqttConnectError as exc:
            _close_socket(client)
            return _code(exc) not in _PROTOCOL_CODES
        except (aiomqtt.MqttError, OSError, TimeoutError, ValueError):
            _close_socket(client)
            return None  # unreachable or stalled: the real attempt reports it
        with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError):
            await asyncio.wait_for(client.__aexit__(None, None, None), 5)
        return True

    async def disconnect(self, *, end_session: bool = False) -> None:
        client, self._client = self._client, None
        was_connected = self._lost is not None and not self._lost.done()
        self._mark_lost("disconnected")
        if client is None:
            return
        if end_session and self._v5 and was_connected:
            # Session Expiry 0 in DISCONNECT: the broker forgets this session now instead of
            # holding its subscriptions and queueing messages for a client that never returns.
            properties = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 0
            if client._client.disconnect(properties=properties) == paho.MQTT_ERR_SUCCESS:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(client._disconnected), 5)
        with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError):  # gone either way
            await asyncio.wait_for(client.__aexit__(None, None, None), 5)

    def _connected(self) -> tuple[aiomqtt.Client, asyncio.Future[None]]:
        if self._client is None or self._lost is None or self._lost.done():
            raise ConnectionLostError("not connected to the broker")
        return self._client, self._lost

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

    def _properties(self, message: Outbound) -> Properties | None:
        if not self._v5 or (
            message.response_topic is None and message.correlation_data is None and message.expires_at is None
        ):
            return None
        return _PublishProperties(message.response_topic, message.correlation_data, message.expires_at)

    async def publish(self, message: Outbound) -> None:
        client, _ = self._connected()
        info = client._client.publish(
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

    async def _race(self, operation: Any, lost: asyncio.Future[None]) -> Any:
        """Await ``operation`` unless the connection drops first."""
        task = asyncio.ensure_future(operation)
        try:
            await asyncio.wait((task, lost), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            try:
                return task.result()
            except aiomqtt.MqttError as exc:
                self._mark_lost(exc)
                raise ConnectionLostError(str(exc)) from exc
        task.cancel()
        raise ConnectionLostError("connection to the broker lost")

    async def subscribe(self, topic_filter: str, qos: int) -> None:
        client, lost = self._connected()
        granted = await self._race(client.subscribe(topic_filter, qos, timeout=math.inf), lost)
        for code in granted or ():
            # MQTT 5 reason codes, or 3.1.1 granted QoS where 0x80 means refused.
            if getattr(code, "is_failure", False) or code == 0x80:
                raise MessagingError(f"the broker refused the subscription to {topic_filter!r}: {code}")

    async def unsubscribe(self, topic_filter: str) -> None:
        client, lost = self._connected()
        await self._race(client.unsubscribe(topic_filter, timeout=math.inf), lost)

    async def messages(self) -> AsyncIterator[Inbound]:
        _, lost = self._connected()
        inbox = self._inbox
        while True:
            inbound = await inbox.get()
            if inbound is None:
                break
            self._queued_bytes -= len(inbound.payload)
            limit = self._max_queued_bytes
            if self._paused is not None and (limit is None or self._queued_bytes <= limit // 2):
                self._resume_reading()
            yield inbound
        raise ConnectionLostError(str(lost.exception()) if lost.done() else "connection to the broker lost")


class _PublishProperties(Properties):
    """Response Topic, Correlation Data and Message Expiry Interval, packed once.

    paho's Properties validates every assignment and scans all property names when packing,
    which costs more than the rest of a publish; paho only calls ``pack()`` on these.
    """

    def __init__(
        self, response_topic: str | None, correlation: bytes | None, expires_at: float | None
    ) -> None:
        buffer = b""
        if response_topic is not None:
            topic = response_topic.encode()
            buffer += b"\x08" + struct.pack("!H", len(topic)) + topic
        if correlation is not None:
            buffer += b"\x09" + struct.pack("!H", len(correlation)) + correlation
        if expires_at is not None:
            buffer += b"\x02" + struct.pack("!L", max(1, math.ceil(expires_at - time.time())))
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "_packed", _varint(len(buffer)) + buffer)

    def pack(self) -> bytes:
        packed: bytes = object.__getattribute__(self, "_packed")
        return packed

    def __str__(self) -> str:
        return "[publish properties]"


def _varint(value: int) -> bytes:
    """MQTT's Variable Byte Integer."""
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _tls_failure(exc: BaseException) -> str | None:
    """What went wrong in the TLS handshake, if that is what ``exc`` (or what it wraps) is."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return str(getattr(seen, "verify_message", None) or seen.reason or seen)
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    return text if "SSL" in text or "CERTIFICATE" in text else None


def _describe(done: asyncio.Future[None]) -> str:
    if done.cancelled():
        return "cancelled"
    exc = done.exception()
    return str(exc) if exc is not None else "disconnected"
