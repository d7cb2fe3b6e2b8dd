"""The Messager: typed publish/subscribe and request/response over MQTT, with its own reconnection.

One Messager is one MQTT client. It keeps its subscriptions and a bounded outbox across broker
outages: a lost connection is retried with jittered exponential backoff, subscriptions are
renewed, and publishes made meanwhile are sent in order once the broker is back. With a stable
``client_id`` and ``persistent=True`` the broker also keeps the session while the client is
away, so QoS 1 messages published meanwhile arrive when it returns; receivers drop a message id
they have already handled, so a redelivery never reaches a handler twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

from pydantic import ValidationError

from argentic.backoff import backoff_delays
from argentic.config import MessagingConfig, TLSConfig
from argentic.errors import (
    AuthenticationError,
    BrokerUnavailableError,
    MalformedMessageError,
    MessagingError,
    NotConnectedError,
    RequestTimeoutError,
)
from argentic.messaging.dedupe import RecentIds
from argentic.messaging.outbox import Outbox
from argentic.messaging.peers import Peers
from argentic.messaging.tls import build_ssl_context
from argentic.messaging.transport import (
    ConnectionLostError,
    ConnectOptions,
    Inbound,
    Outbound,
    ProtocolRefusedError,
    ProtocolVersion,
    Transport,
    WillMessage,
    known_protocol,
    remember_protocol,
)
from argentic.protocol import (
    MESSAGE_ADAPTER,
    ClientStatus,
    ErrorReply,
    Message,
    Topics,
    matches,
    new_id,
    parse_message,
    shared,
    topic_level,
)

logger = logging.getLogger("argentic.messaging")


M = TypeVar("M", bound=Message)
Handler = Callable[[M], Awaitable[None]]
EmptyHandler = Callable[[str], Awaitable[None]]

UNCLAIMED_MAX = 1000  # messages that arrived before a matching subscribe() (a resumed session's backlog)
UNCLAIMED_MAX_AGE_S = 60.0
FLUSH_BATCH = 100
V5_PROBE_TIMEOUT_S = 3.0
EPHEMERAL_SESSION_EXPIRY_S = 300
BACKLOG_FACTOR = 16  # deliveries allowed to wait for a handler slot, per slot


@dataclass
class Will:
    """The last will: what is true once this client is gone. The broker publishes it when the
    client vanishes; :meth:`Messager.disconnect` publishes it itself on a graceful exit."""

    topic: str
    message: Message | None
    retain: bool = True
    qos: int = 1


@dataclass(eq=False)
class Subscription(Generic[M]):
    """A live subscription; pass it to :meth:`Messager.unsubscribe`."""

    topic_filter: str
    handler: Handler[M]
    model: type[M] | None
    qos: int
    shared_group: str | None = None
    on_empty: EmptyHandler | None = None
    recent: RecentIds = field(default_factory=RecentIds)

    def broker_filter(self, protocol: str) -> str:
        # $share needs MQTT 5; on 3.1.1 every member receives every message.
        if self.shared_group is not None and protocol == "5":
            return shared(self.topic_filter, self.shared_group)
        return self.topic_filter


class _State(enum.Enum):
    NEW = "new"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class Messager:
    """An MQTT client speaking argentic's protocol. See ``docs/messaging.md``."""

    def __init__(
        self,
        broker_address: str = "localhost",
        port: int = 1883,
        *,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: TLSConfig | None = None,
        namespace: str = "argentic",
        protocol: Literal["auto", "5", "3.1.1"] = "auto",
        qos: int = 1,
        keepalive: int = 30,
        session_expiry_s: int = 3600,
        persistent: bool = True,
        will: Will | None = None,
        max_payload_bytes: int = 4 * 1024 * 1024,
        request_timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        publish_timeout_s: float = 60.0,
        max_concurrent_handlers: int = 64,
        outbox_size: int = 10_000,
        reconnect_initial_delay_s: float = 0.2,
        reconnect_max_delay_s: float = 10.0,
        max_inflight: int = 1000,
        transport: Transport | None = None,
    ) -> None:
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos!r}")
        self.broker_address = broker_address
        self.port = port
        self.topics = Topics(namespace)
        self._generated_id = client_id is None
        self.client_id = (
            topic_level(client_id, "client id") if client_id else f"argentic-{uuid.uuid4().hex[:16]}"
        )
        self.inbox = self.topics.client_inbox(self.client_id)
        self.username = username
        self._password = password
        self.tls = tls if tls is not None and tls.enabled else None
        self.protocol = protocol
        self.qos = qos
        self.keepalive = keepalive
        self.session_expiry_s = session_expiry_s
        self.persistent = persistent
        # Without a will of the caller's, the will says this client is gone (see messaging.peers):
        # it covers whatever the agents and tool services on this messager announced.
        self._status_will = will is None
        self.will = will or Will(
            topic=self.topics.client_status(self.client_id),
            message=ClientStatus(client_id=self.client_id, online=False),
        )
        self._peers: Peers | None = None
        self._leaving: list[Callable[[], Awaitable[None]]] = []
        self.max_payload_bytes = max_payload_bytes
        self.request_timeout_s = request_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.publish_timeout_s = publish_timeout_s
        self.max_concurrent_handlers = max_concurrent_handlers
        self.reconnect_initial_delay_s = reconnect_initial_delay_s
        self.reconnect_max_delay_s = reconnect_max_delay_s
        self.max_inflight = max_inflight
        if transport is None:
            from argentic.messaging.aiomqtt_transport import AiomqttTransport

            transport = AiomqttTransport()
        self._transport = transport
        self._state = _State.NEW
        self._negotiated: ProtocolVersion | None = None
        self._online = False  # connected and the outbox flushed: publishes go straight out
        self._subscriptions: list[Subscription[Any]] = []
        self._pending: dict[str, asyncio.Future[tuple[Message | None, bytes]]] = {}
        self._outbox = Outbox(outbox_size)
        self._unclaimed: deque[tuple[float, Inbound]] = deque(maxlen=UNCLAIMED_MAX)
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None  # handlers running
        self._backlog: asyncio.Semaphore | None = None  # deliveries running or waiting for a slot
        self._runner: asyncio.Task[None] | None = None
        self._ssl: Any = None
        self._ever_connected = False

    @classmethod
    def from_config(cls, config: MessagingConfig, **overrides: Any) -> Messager:
        values: dict[str, Any] = {
            "broker_address": config.broker_address,
            "port": config.port,
            "client_id": config.client_id,
            "username": config.username,
            "password": config.password.get_secret_value() if config.password else None,
            "tls": config.tls,
            "namespace": config.namespace,
            "protocol": config.protocol,
            "qos": config.qos,
            "keepalive": config.keepalive,
            "session_expiry_s": config.session_expiry_s,
            "max_payload_bytes": config.max_payload_bytes,
            "request_timeout_s": config.request_timeout_s,
            "connect_timeout_s": config.connect_timeout_s,
            "outbox_size": config.outbox_size,
            "persistent": config.persistent,
            "max_concurrent_handlers": config.max_concurrent_handlers,
            "reconnect_initial_delay_s": config.reconnect.initial_delay_s,
            "reconnect_max_delay_s": config.reconnect.max_delay_s,
        }
        values.update(overrides)
        return cls(**values)

    # --- state --------------------------------------------------------------------------------

    @property
    def protocol_version(self) -> str:
        """The MQTT version spoken: "5" or "3.1.1" once connected."""
        return self._negotiated or self.protocol

    @property
    def peers(self) -> Peers:
        """Which other clients the broker reports gone (shared by every component on this messager)."""
        if self._peers is None:
            self._peers = Peers(self)
        return self._peers

    @property
    def is_connected(self) -> bool:
        return self._state is _State.CONNECTED

    @property
    def pending_requests(self) -> int:
        """Requests waiting for their reply."""
        return len(self._pending)

    @property
    def queued_publishes(self) -> int:
        """Publishes held in the outbox until the broker is back."""
        return len(self._outbox)

    def _require_open(self) -> None:
        if self._state is _State.NEW:
            raise NotConnectedError("the Messager is not connected: await messager.connect() first")
        if self._state is _State.CLOSED:
            raise NotConnectedError("the Messager was disconnected; create a new one or connect() again")

    # --- connection ---------------------------------------------------------------------------

    async def connect(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (public API)
        """Connect to the broker; raises BrokerUnavailableError or AuthenticationError."""
        if self._state in (_State.CONNECTED, _State.RECONNECTING):
            return
        if self.tls is not None and self._ssl is None:
            self._ssl = await asyncio.to_thread(build_ssl_context, self.tls)
        if self._slots is None:  # once: handler tasks of an earlier connection release into them
            self._slots = asyncio.Semaphore(self.max_concurrent_handlers)
            self._backlog = asyncio.Semaphore(self.max_concurrent_handlers * BACKLOG_FACTOR)
        await self._open(timeout if timeout is not None else self.connect_timeout_s)
        try:
            await self._renew_subscriptions()
        except ConnectionLostError as exc:
            await self._transport.disconnect()
            raise BrokerUnavailableError(
                f"the MQTT broker at {self.broker_address}:{self.port} dropped the connection: {exc}"
            ) from exc
        self._state = _State.CONNECTED
        self._online = True
        self._runner = asyncio.create_task(self._run(), name=f"argentic-messager-{self.client_id}")
        await self._say_online()
        logger.info(
            "connected to %s:%s as %s (MQTT %s)",
            self.broker_address,
            self.port,
            self.client_id,
            self._negotiated,
        )

    def _options(self, protocol: ProtocolVersion, timeout: float) -> ConnectOptions:
        # A generated id has no earlier session to resume; a stable one resumes its session.
        # After a lost connection, the session of this very client is resumed in both cases.
        resume = self.persistent and (self._ever_connected or not self._generated_id)
        will = None
        if self.will is not None:
            payload = b""
            if self.will.message is not None:
                # A fresh id per connection: each will the broker publishes is a new event, which
                # receivers must not drop as a duplicate of the one from an earlier connection.
                fresh = self.will.message.model_copy(update={"id": new_id(), "ts": time.time()})
                payload = fresh.to_json()
            will = WillMessage(self.will.topic, payload, self.will.qos, self.will.retain)
        return ConnectOptions(
            host=self.broker_address,
            port=self.port,
            client_id=self.client_id,
            protocol=protocol,
            clean_start=not resume,
            session_expiry_s=self._session_expiry(),
            keepalive=self.keepalive,
            timeout=timeout,
            username=self.username,
            password=self._password,
            tls_context=self._ssl,
            tls_insecure=bool(self.tls and self.tls.insecure),
            will=will,
            max_inflight=self.max_inflight,
        )

    def _session_expiry(self) -> int:
        if not self.persistent:
            return 0
        if self._generated_id:
            # Nobody resumes a generated id after this process ends, so its session only needs to
            # outlive a broker restart or a network blip; a longer one would keep queueing (and, in
            # a shared group, keep drawing) messages for a dead process.
            return min(self.session_expiry_s, EPHEMERAL_SESSION_EXPIRY_S)
        return self.session_expiry_s

    async def _open(self, timeout: float) -> None:  # noqa: ASYNC109
        """Open the transport, negotiating the protocol version on the first connection."""
        probe_timeout = timeout
        if self._negotiated is not None:
            candidates: list[ProtocolVersion] = [self._negotiated]
        elif self.protocol != "auto":
            candidates = [self.protocol]
        else:
            known = known_protocol(self.broker_address, self.port)
            if known is None:
                speaks5 = await self._transport.probe_mqtt5(
                    self._options("5", min(timeout, V5_PROBE_TIMEOUT_S))
                )
                if speaks5 is not None:
                    known = "5" if speaks5 else "3.1.1"
            candidates = ["3.1.1", "5"] if known == "3.1.1" else ["5", "3.1.1"]
            if known is None:
                # A 3.1.1-only broker may stall on an MQTT 5 CONNECT instead of refusing it.
                probe_timeout = min(timeout, V5_PROBE_TIMEOUT_S)
        error: MessagingError | None = None
        for index, protocol in enumerate(candidates):
            attempt_timeout = probe_timeout if index == 0 and protocol == "5" else timeout
            try:
                await self._transport.connect(self._options(protocol, attempt_timeout))
            except AuthenticationError:
                raise
            except (ProtocolRefusedError, BrokerUnavailableError) as exc:
                error = exc
                continue
            if self._negotiated is None and self.protocol == "auto":
                remember_protocol(self.broker_address, self.port, protocol)
                if protocol == "3.1.1":
                    logger.info(
                        "the broker at %s:%s speaks MQTT 3.1.1 only: "
                        "no shared subscriptions or MQTT 5 properties",
                        self.broker_address,
                        self.port,
                    )
            self._negotiated = protocol
            self._ever_connected = True
            return
        if isinstance(error, BrokerUnavailableError):
            raise error
        raise BrokerUnavailableError(
            f"the MQTT broker at {self.broker_address}:{self.port} refused every protocol version "
            f"tried: {error}"
        )

    async def _renew_subscriptions(self) -> None:
        protocol = self.protocol_version
        wanted = {(sub.broker_filter(protocol), sub.qos) for sub in self._subscriptions}
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await self._transport.subscribe(self.inbox, max(self.qos, 1))
                for broker_filter, qos in wanted:
                    try:
                        await self._transport.subscribe(broker_filter, qos)
                    except ConnectionLostError:
                        raise
                    except MessagingError as exc:  # refused (an ACL, say): retrying would not help
                        logger.error("%s", exc)
        except TimeoutError:
            raise ConnectionLostError(
                f"the broker did not confirm the subscriptions within {self.connect_timeout_s:g}s"
            ) from None

    def before_disconnect(self, callback: Callable[[], Awaitable[None]]) -> Callable[[], None]:
        """Run ``callback`` at the start of a graceful :meth:`disconnect`, while still connected,
        so that what a component announced is withdrawn even if it is never stopped. Returns a
        function that cancels the registration (call it from the component's own stop)."""
        self._leaving.append(callback)

        def cancel() -> None:
            with contextlib.suppress(ValueError):
                self._leaving.remove(callback)

        return cancel

    async def _say_online(self) -> None:
        """Retain ``online: true`` on the client's status topic (a will from an earlier connection
        may have said otherwise)."""
        if not self._status_will:
            return
        status = ClientStatus(client_id=self.client_id, online=True)
        try:
            await self.publish(self.topics.client_status(self.client_id), status, retain=True)
        except MessagingError as exc:
            logger.warning("could not publish the client status: %s", exc)

    async def disconnect(self) -> None:
        """Leave gracefully. Pending requests fail.

        First the ``before_disconnect`` callbacks run (newest first), then the will is published:
        a broker sends it only for clients that vanish, yet a process that exits without
        withdrawing what it announced (tools, presence) is just as gone.
        """
        if self._state in (_State.NEW, _State.CLOSED):
            return
        for callback in reversed(list(self._leaving)):
            try:
                async with asyncio.timeout(min(self.publish_timeout_s, 5.0)):
                    await callback()
            except Exception as exc:  # leaving must not fail because one component could not
                logger.warning("while disconnecting, %r failed: %s", callback, exc)
        self._leaving.clear()
        if self.will is not None and self._online:
            message = self.will.message
            if self._status_will:
                # Everything announced was withdrawn above: clear the status rather than leave a
                # retained "gone" behind for every client that ever ran.
                message = None
            elif message is not None:
                message = message.model_copy(update={"id": new_id(), "ts": time.time()})
            try:
                async with asyncio.timeout(min(self.publish_timeout_s, 5.0)):
                    await self.publish(self.will.topic, message, qos=self.will.qos, retain=self.will.retain)
            except (MessagingError, TimeoutError) as exc:
                logger.warning("could not publish the will on %s while leaving: %s", self.will.topic, exc)
        self._state = _State.CLOSED
        self._online = False
        runner, self._runner = self._runner, None
        if runner is not None and runner is not asyncio.current_task():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        for future in self._pending.values():
            if not future.done():
                future.set_exception(NotConnectedError("the Messager disconnected while waiting for a reply"))
        current = asyncio.current_task()
        for task in list(self._handler_tasks):
            if task is not current:
                task.cancel()
        # A generated id is never used again: its session would only hoard messages.
        await self._transport.disconnect(end_session=self._generated_id or not self.persistent)
        if len(self._outbox):
            logger.warning("disconnected with %d publishes still queued; they are dropped", len(self._outbox))
        logger.info("disconnected from %s:%s", self.broker_address, self.port)

    async def __aenter__(self) -> Messager:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.disconnect()

    async def _run(self) -> None:
        """Read messages; when the connection drops, reconnect and read again."""
        while True:
            try:
                async for inbound in self._transport.messages():
                    try:
                        await self._on_inbound(inbound)
                    except Exception:
                        logger.exception("could not dispatch a message on %s", inbound.topic)
                reason: object = "the transport closed"
            except ConnectionLostError as exc:
                reason = exc
            if self._state is _State.CLOSED:
                return
            logger.warning(
                "lost the connection to %s:%s (%s); reconnecting", self.broker_address, self.port, reason
            )
            await self._reconnect()

    async def _reconnect(self) -> None:
        self._state = _State.RECONNECTING
        self._online = False
        attempt = 0
        for delay in backoff_delays(self.reconnect_initial_delay_s, self.reconnect_max_delay_s):
            await asyncio.sleep(delay)
            attempt += 1
            try:
                await self._open(self.connect_timeout_s)
                await self._renew_subscriptions()
                await self._flush_outbox()
            except AuthenticationError as exc:
                logger.error("reconnect attempt %d: %s", attempt, exc)
                continue
            except (BrokerUnavailableError, ConnectionLostError) as exc:
                logger.debug("reconnect attempt %d failed: %s", attempt, exc)
                continue
            except Exception:
                logger.exception("reconnect attempt %d failed unexpectedly", attempt)
                continue
            self._state = _State.CONNECTED
            self._online = True
            await self._say_online()
            logger.info("reconnected to %s:%s after %d attempts", self.broker_address, self.port, attempt)
            return

    async def _flush_outbox(self) -> None:
        """Send what was queued, in order, in windows of concurrent publishes."""
        while len(self._outbox):
            batch = self._outbox.take(FLUSH_BATCH)
            results = await asyncio.gather(
                *(self._transport.publish(message) for message in batch), return_exceptions=True
            )
            failed = []
            for message, result in zip(batch, results, strict=True):
                if isinstance(result, ConnectionLostError):
                    failed.append(message)
                elif isinstance(result, BaseException):  # refused by the broker: resending would not help
                    logger.error("dropped a queued publish on %s: %s", message.topic, result)
            if failed:
                # Receivers drop any of these that did arrive (same message id).
                self._outbox.put_front(failed)
                raise ConnectionLostError("connection lost while sending queued publishes")

    # --- publishing ---------------------------------------------------------------------------

    def _outbound(self, topic: str, message: Message | None, qos: int, retain: bool) -> Outbound:
        if message is None:
            return Outbound(topic, b"", qos, retain)
        correlation = message.correlation_id
        return Outbound(
            topic,
            message.to_json(),
            qos,
            retain,
            message.reply_to,
            correlation.encode() if correlation is not None else None,
            message.expires_at,
        )

    async def publish(
        self, topic: str, message: Message | None, *, qos: int | None = None, retain: bool = False
    ) -> None:
        """Publish ``message`` (``None``: an empty payload, which clears a retained message).

        Returns once the broker acknowledged it (QoS 1/2) or, while the broker is away, once it is
        queued in the outbox. Raises NotConnectedError before connect() or after disconnect().
        """
        self._require_open()
        outbound = self._outbound(topic, message, self.qos if qos is None else qos, retain)
        if not self._online:
            self._outbox.put(outbound)
            return
        try:
            async with asyncio.timeout(self.publish_timeout_s):
                await self._transport.publish(outbound)
        except ConnectionLostError:
            # Sent again after reconnecting; receivers drop a duplicate by its message id.
            self._outbox.put(outbound)
        except TimeoutError:
            raise MessagingError(
                f"the broker did not acknowledge a publish on {topic} within {self.publish_timeout_s:g}s"
            ) from None

    # --- subscribing --------------------------------------------------------------------------

    async def subscribe(
        self,
        topic_filter: str,
        handler: Handler[M],
        *,
        model: type[M] | None = None,
        qos: int | None = None,
        shared_group: str | None = None,
        on_empty: EmptyHandler | None = None,
    ) -> Subscription[M]:
        """Call ``handler`` with each valid message on ``topic_filter`` (MQTT wildcards allowed).

        Malformed, oversized and expired payloads are logged and dropped, as are duplicates. Empty
        payloads (cleared retained messages) go to ``on_empty`` with their topic, if given.
        """
        if self._state is _State.CLOSED:
            self._require_open()
        subscription: Subscription[M] = Subscription(
            topic_filter, handler, model, self.qos if qos is None else qos, shared_group, on_empty
        )
        self._subscriptions.append(subscription)
        if self._online:
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    await self._transport.subscribe(
                        subscription.broker_filter(self.protocol_version), subscription.qos
                    )
            except ConnectionLostError:
                pass  # renewed after reconnecting
            except MessagingError:
                self._subscriptions.remove(subscription)
                raise
            except TimeoutError:
                self._subscriptions.remove(subscription)
                raise MessagingError(
                    f"the broker did not confirm the subscription to {topic_filter} "
                    f"within {self.connect_timeout_s:g}s"
                ) from None
        await self._claim_backlog(subscription)
        return subscription

    async def unsubscribe(self, subscription: Subscription[Any]) -> None:
        if subscription not in self._subscriptions:
            return
        self._subscriptions.remove(subscription)
        broker_filter = subscription.broker_filter(self.protocol_version)
        still_used = any(s.broker_filter(self.protocol_version) == broker_filter for s in self._subscriptions)
        if self._online and not still_used:
            # The broker's confirmation is not needed to stop delivering: the handler is gone.
            with contextlib.suppress(ConnectionLostError, TimeoutError):
                async with asyncio.timeout(self.connect_timeout_s):
                    await self._transport.unsubscribe(broker_filter)

    async def _claim_backlog(self, subscription: Subscription[Any]) -> None:
        """Deliver messages a resumed session brought before this subscription existed."""
        if not self._unclaimed:
            return
        oldest = time.monotonic() - UNCLAIMED_MAX_AGE_S
        keep: deque[tuple[float, Inbound]] = deque(maxlen=UNCLAIMED_MAX)
        claimed: list[Inbound] = []
        for arrived, inbound in self._unclaimed:
            if arrived < oldest:
                continue
            if matches(subscription.topic_filter, inbound.topic):
                claimed.append(inbound)
            else:
                keep.append((arrived, inbound))
        self._unclaimed = keep
        for inbound in claimed:
            await self._deliver(inbound, [subscription])

    # --- receiving ----------------------------------------------------------------------------

    async def _on_inbound(self, inbound: Inbound) -> None:
        if inbound.topic == self.inbox:
            self._on_reply(inbound)
            return
        topic = inbound.topic
        targets = [s for s in self._subscriptions if matches(s.topic_filter, topic)]
        if not targets:
            self._unclaimed.append((time.monotonic(), inbound))
            return
        await self._deliver(inbound, targets)

    async def _deliver(self, inbound: Inbound, targets: list[Subscription[Any]]) -> None:
        topic, payload = inbound.topic, inbound.payload
        if not payload:
            for sub in targets:
                if sub.on_empty is not None:
                    await self._spawn(sub.on_empty(topic), topic)
            return
        if len(payload) > self.max_payload_bytes:
            logger.warning(
                "dropped a message on %s: %d bytes exceeds max_payload_bytes %d",
                topic,
                len(payload),
                self.max_payload_bytes,
            )
            return
        parsed: dict[type[Message] | None, Message] = {}
        for sub in targets:
            message = parsed.get(sub.model)
            if message is None:
                message = self._parse(inbound, sub.model, parsed)
                if message is None:
                    continue
                parsed[sub.model] = message
            # A retained delivery is the topic's current state, sent on every (re)subscription:
            # it is not a redelivered event, and skipping it could leave a stale state behind.
            if not inbound.retain and sub.recent.seen(message.id):
                logger.debug("dropped a duplicate of message %s on %s", message.id, topic)
                continue
            await self._spawn(sub.handler(message), topic)

    def _parse(
        self, inbound: Inbound, model: type[Message] | None, parsed: dict[type[Message] | None, Message]
    ) -> Message | None:
        message: Message | None = None
        if model is not None:
            generic = parsed.get(None)
            if isinstance(generic, model):
                message = generic
        try:
            if message is None:
                message = _parse(inbound.payload, model)
        except MalformedMessageError as exc:
            logger.warning("dropped a malformed message on %s: %s", inbound.topic, exc)
            return None
        if message.expired():
            logger.info(
                "dropped message %s on %s: expired at %s", message.id, inbound.topic, message.expires_at
            )
            return None
        if message.reply_to is None and inbound.response_topic:
            # An MQTT 5 sender that set only the Response Topic / Correlation Data properties.
            correlation = message.correlation_id
            if correlation is None and inbound.correlation_data is not None:
                correlation = inbound.correlation_data.decode(errors="replace")
            message = message.model_copy(
                update={"reply_to": inbound.response_topic, "correlation_id": correlation}
            )
        return message

    async def _spawn(self, work: Awaitable[None], topic: str) -> None:
        """Run one delivery in its own task; at most max_concurrent_handlers run at a time.

        The reading loop waits only when many deliveries are already queued for a slot. It must
        not wait for a slot itself: handlers that await replies (requests) would then block the
        very loop that delivers those replies.
        """
        backlog, running = self._backlog, self._slots
        assert backlog is not None and running is not None
        await backlog.acquire()
        task = asyncio.get_running_loop().create_task(self._guard(work, topic, running))
        self._handler_tasks.add(task)
        task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self._handler_tasks.discard(task)
        if self._backlog is not None:
            self._backlog.release()

    @staticmethod
    async def _guard(work: Awaitable[None], topic: str, running: asyncio.Semaphore) -> None:
        try:
            async with running:
                await work
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("a handler for %s raised; the subscription carries on", topic)

    def _on_reply(self, inbound: Inbound) -> None:
        payload = inbound.payload
        if len(payload) > self.max_payload_bytes:
            logger.warning("dropped an oversized reply on %s (%d bytes)", inbound.topic, len(payload))
            return
        message: Message | None
        correlation: str | None
        try:
            message = _parse(payload, None)
            correlation = message.correlation_id
            if message.expired():
                logger.info("dropped expired reply %s on %s", message.id, inbound.topic)
                return
        except MalformedMessageError as exc:
            # Maybe a message type only the requester's response_model knows: find its correlation id.
            message = None
            correlation = _raw_correlation(payload)
            if correlation is None:
                logger.warning("dropped a malformed reply on %s: %s", inbound.topic, exc)
                return
        if correlation is None and inbound.correlation_data is not None:
            correlation = inbound.correlation_data.decode(errors="replace")
        future = self._pending.get(correlation) if correlation is not None else None
        if future is None or future.done():
            logger.debug("dropped a reply on %s that no request waits for (%s)", inbound.topic, correlation)
            return
        future.set_result((message, payload))

    # --- request / response -------------------------------------------------------------------

    async def request(
        self,
        topic: str,
        message: Message,
        *,
        response_model: type[M] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (public API)
    ) -> M | ErrorReply:
        """Publish ``message`` as a request and wait for its reply (or an ErrorReply).

        Raises RequestTimeoutError when no reply comes in ``timeout`` seconds (default
        request_timeout_s), NotConnectedError if the Messager is disconnected meanwhile.
        """
        self._require_open()
        timeout = self.request_timeout_s if timeout is None else timeout
        # The message id is unique already: reusing it spares a uuid4 per request.
        correlation = message.correlation_id or message.id
        if correlation in self._pending:  # the same message requested twice at once
            correlation = new_id()
        expires_at = time.time() + timeout
        if message.expires_at is not None:
            expires_at = min(expires_at, message.expires_at)
        request = message.model_copy(
            update={"reply_to": self.inbox, "correlation_id": correlation, "expires_at": expires_at}
        )
        future: asyncio.Future[tuple[Message | None, bytes]] = asyncio.get_running_loop().create_future()
        self._pending[correlation] = future
        try:
            async with asyncio.timeout(timeout):
                await self.publish(topic, request)
                reply, payload = await future
        except TimeoutError:
            raise RequestTimeoutError(
                f"no reply to {type(message).__name__} {message.id} on {topic} within {timeout:g}s "
                "(is a responder subscribed and connected?)"
            ) from None
        finally:
            self._pending.pop(correlation, None)
        if isinstance(reply, ErrorReply):
            return reply
        if response_model is None:
            if reply is None:
                raise MalformedMessageError(f"the reply on {self.inbox} is not an argentic message")
            return reply  # type: ignore[return-value]
        if isinstance(reply, response_model):
            return reply
        return parse_message(payload, response_model)

    async def reply(self, request: Message, response: Message) -> None:
        """Send ``response`` to ``request.reply_to``, carrying the request's correlation id."""
        if request.reply_to is None:
            raise MessagingError(
                f"{type(request).__name__} {request.id} has no reply_to: it is not a request"
            )
        correlation = request.correlation_id or request.id
        if response.correlation_id != correlation:
            response = response.model_copy(update={"correlation_id": correlation})
        await self.publish(request.reply_to, response)


def _parse(payload: bytes, model: type[M] | None) -> M:
    """Validate straight from JSON bytes; on failure let parse_message say what is wrong."""
    try:
        if model is None:
            return MESSAGE_ADAPTER.validate_json(payload)  # type: ignore[return-value]
        return model.model_validate_json(payload)
    except ValidationError:
        return parse_message(payload, model)


def _raw_correlation(payload: bytes) -> str | None:
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    value = data.get("correlation_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None
