"""One broker connection kept alive: protocol negotiation, reconnection, and the outbox.

A :class:`Connection` opens the transport (finding the MQTT version on the first connection),
reads messages and hands each to its receiver, and when the connection drops retries with
jittered exponential backoff, renews the subscriptions and sends, in order, the publishes
queued in the outbox meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from argentic.backoff import backoff_delays
from argentic.config import TLSConfig
from argentic.errors import (
    AuthenticationError,
    BrokerUnavailableError,
    ConnectionLostError,
    MessagingError,
    ProtocolRefusedError,
)
from argentic.messaging.limits import MAX_SEND_ATTEMPTS
from argentic.messaging.outbox import Outbox
from argentic.messaging.tls import build_ssl_context
from argentic.messaging.transport import (
    ConnectOptions,
    Inbound,
    Outbound,
    ProtocolVersion,
    Transport,
    WillMessage,
    known_protocol,
    remember_protocol,
)
from argentic.observability import metrics
from argentic.protocol import Message, new_id

logger = logging.getLogger("argentic.messaging")

FLUSH_BATCH = 100
V5_PROBE_TIMEOUT_S = 3.0
EPHEMERAL_SESSION_EXPIRY_S = 300


@dataclass
class Will:
    """The last will: what is true once this client is gone. The broker publishes it when the
    client vanishes; :meth:`Messager.disconnect` publishes it itself on a graceful exit."""

    topic: str
    message: Message | None
    retain: bool = True
    qos: int = 1


class State(enum.Enum):
    NEW = "new"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """What the connection needs to know, fixed when the Messager is built."""

    broker_address: str
    port: int
    client_id: str
    generated_id: bool  # nobody resumes a generated id's session after this process ends
    username: str | None
    password: str | None
    tls: TLSConfig | None
    protocol: Literal["auto", "5", "3.1.1"]
    keepalive: int
    session_expiry_s: int
    persistent: bool
    will: Will | None
    connect_timeout_s: float
    publish_timeout_s: float
    reconnect_initial_delay_s: float
    reconnect_max_delay_s: float
    max_inflight: int
    max_queued_bytes: int | None = None


Receiver = Callable[[Inbound], Awaitable[None]]
Wanted = Callable[[str], Iterable[tuple[str, int]]]  # given the protocol version spoken


class Connection:
    """The transport kept connected. ``receive`` gets every incoming message; ``wanted`` names the
    (filter, QoS) pairs to subscribe again after each reconnection, besides ``inbox``."""

    def __init__(
        self,
        transport: Transport,
        settings: ConnectionSettings,
        *,
        inbox: str,
        inbox_qos: int,
        outbox_size: int,
        receive: Receiver,
        wanted: Wanted,
        connected: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.transport = transport
        self.settings = settings
        self.inbox = inbox
        self.inbox_qos = inbox_qos
        self.outbox = Outbox(outbox_size)
        self.state = State.NEW
        self.online = False  # connected and the outbox flushed: publishes go straight out
        self.negotiated: ProtocolVersion | None = None
        self._receive = receive
        self._wanted = wanted
        self._connected = connected  # run after each (re)connection, once publishes go straight out
        self._runner: asyncio.Task[None] | None = None
        self._ssl: Any = None
        self._ever_connected = False
        #: When the connection was last lost or regained (monotonic seconds; 0: never).
        self.changed_at = 0.0

    @property
    def where(self) -> str:
        return f"{self.settings.broker_address}:{self.settings.port}"

    @property
    def protocol_version(self) -> str:
        return self.negotiated or self.settings.protocol

    # --- opening ------------------------------------------------------------------------------

    async def open(self, timeout: float) -> None:  # noqa: ASYNC109
        """Connect, subscribe, and start reading; raises BrokerUnavailableError or AuthenticationError."""
        settings = self.settings
        if settings.tls is not None and self._ssl is None:
            self._ssl = await asyncio.to_thread(build_ssl_context, settings.tls)
        await self._negotiate(timeout)
        try:
            await self._renew_subscriptions()
        except ConnectionLostError as exc:
            await self.transport.disconnect()
            raise BrokerUnavailableError(
                f"the MQTT broker at {self.where} dropped the connection: {exc}"
            ) from exc
        self.state = State.CONNECTED
        self.online = True
        self._runner = asyncio.create_task(self._run(), name=f"argentic-messager-{settings.client_id}")
        logger.info("connected to %s as %s (MQTT %s)", self.where, settings.client_id, self.negotiated)
        if self._connected is not None:
            await self._connected()

    def _options(self, protocol: ProtocolVersion, timeout: float) -> ConnectOptions:
        settings = self.settings
        # A generated id has no earlier session to resume; a stable one resumes its session.
        # After a lost connection, the session of this very client is resumed in both cases.
        resume = settings.persistent and (self._ever_connected or not settings.generated_id)
        will = None
        if settings.will is not None:
            payload = b""
            if settings.will.message is not None:
                # A fresh id per connection: each will the broker publishes is a new event, which
                # receivers must not drop as a duplicate of the one from an earlier connection.
                fresh = settings.will.message.model_copy(update={"id": new_id(), "ts": time.time()})
                payload = fresh.to_json()
            will = WillMessage(settings.will.topic, payload, settings.will.qos, settings.will.retain)
        return ConnectOptions(
            host=settings.broker_address,
            port=settings.port,
            client_id=settings.client_id,
            protocol=protocol,
            clean_start=not resume,
            session_expiry_s=self._session_expiry(),
            keepalive=settings.keepalive,
            timeout=timeout,
            username=settings.username,
            password=settings.password,
            tls_context=self._ssl,
            tls_insecure=bool(settings.tls and settings.tls.insecure),
            will=will,
            max_inflight=settings.max_inflight,
            max_queued_bytes=settings.max_queued_bytes,
            publish_timeout_s=settings.publish_timeout_s,
        )

    def _session_expiry(self) -> int:
        settings = self.settings
        if not settings.persistent:
            return 0
        if settings.generated_id:
            # Nobody resumes a generated id after this process ends, so its session only needs to
            # outlive a broker restart or a network blip; a longer one would keep queueing (and, in
            # a shared group, keep drawing) messages for a dead process.
            return min(settings.session_expiry_s, EPHEMERAL_SESSION_EXPIRY_S)
        return settings.session_expiry_s

    async def _negotiate(self, timeout: float) -> None:  # noqa: ASYNC109
        """Open the transport, negotiating the protocol version on the first connection."""
        settings = self.settings
        probe_timeout = timeout
        if self.negotiated is not None:
            candidates: list[ProtocolVersion] = [self.negotiated]
        elif settings.protocol != "auto":
            candidates = [settings.protocol]
        else:
            known = known_protocol(settings.broker_address, settings.port)
            if known is None:
                speaks5 = await self.transport.probe_mqtt5(
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
                await self.transport.connect(self._options(protocol, attempt_timeout))
            except AuthenticationError:
                raise
            except (ProtocolRefusedError, BrokerUnavailableError) as exc:
                error = exc
                continue
            if self.negotiated is None and settings.protocol == "auto":
                remember_protocol(settings.broker_address, settings.port, protocol)
                if protocol == "3.1.1":
                    logger.info(
                        "the broker at %s speaks MQTT 3.1.1 only: "
                        "no shared subscriptions or MQTT 5 properties",
                        self.where,
                    )
            self.negotiated = protocol
            self._ever_connected = True
            return
        if isinstance(error, BrokerUnavailableError):
            raise error
        raise BrokerUnavailableError(
            f"the MQTT broker at {self.where} refused every protocol version tried: {error}"
        )

    async def _renew_subscriptions(self) -> None:
        timeout = self.settings.connect_timeout_s
        wanted = set(self._wanted(self.protocol_version))
        try:
            async with asyncio.timeout(timeout):
                await self.transport.subscribe(self.inbox, self.inbox_qos)
                for broker_filter, qos in wanted:
                    try:
                        await self.transport.subscribe(broker_filter, qos)
                    except ConnectionLostError:
                        raise
                    except MessagingError as exc:  # refused (an ACL, say): retrying would not help
                        logger.error("%s", exc)
        except TimeoutError:
            raise ConnectionLostError(
                f"the broker did not confirm the subscriptions within {timeout:g}s"
            ) from None

    # --- while connected ----------------------------------------------------------------------

    async def publish(self, outbound: Outbound) -> None:
        """Send now, or queue in the outbox while the broker is away (OutboxFullError when full)."""
        if not self.online:
            self.outbox.put(outbound)
            return
        try:
            # The transport bounds the wait for the acknowledgement (publish_timeout_s).
            await self.transport.publish(outbound)
        except ConnectionLostError:
            # Sent again after reconnecting; receivers drop a duplicate by its message id.
            retry = self._again(outbound)
            if retry is None:
                raise MessagingError(
                    f"the publish on {outbound.topic[:120]} was dropped: the connection was lost at "
                    f"each of {MAX_SEND_ATTEMPTS} attempts (does the broker refuse it?)"
                ) from None
            self.outbox.put(retry)
        except TimeoutError:
            raise MessagingError(
                f"the broker did not acknowledge a publish on {outbound.topic} "
                f"within {self.settings.publish_timeout_s:g}s"
            ) from None

    async def subscribe(self, broker_filter: str, qos: int) -> None:
        """Subscribe now if online (otherwise the next reconnection does); raises TimeoutError when
        the broker does not confirm within connect_timeout_s, MessagingError when it refuses."""
        if not self.online:
            return
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                await self.transport.subscribe(broker_filter, qos)
        except ConnectionLostError:
            pass  # renewed after reconnecting

    async def unsubscribe(self, broker_filter: str) -> None:
        if not self.online:
            return
        # The broker's confirmation is not needed to stop delivering: the handler is gone.
        with contextlib.suppress(ConnectionLostError, TimeoutError):
            async with asyncio.timeout(self.settings.connect_timeout_s):
                await self.transport.unsubscribe(broker_filter)

    # --- closing ------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop reading and reconnecting; the transport stays open until :meth:`close`."""
        self.state = State.CLOSED
        self.online = False
        runner, self._runner = self._runner, None
        if runner is not None and runner is not asyncio.current_task():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    async def close(self) -> None:
        settings = self.settings
        # A generated id is never used again: its session would only hoard messages.
        await self.transport.disconnect(end_session=settings.generated_id or not settings.persistent)
        if len(self.outbox):
            logger.warning("disconnected with %d publishes still queued; they are dropped", len(self.outbox))
        logger.info("disconnected from %s", self.where)

    # --- reading and reconnecting -------------------------------------------------------------

    async def _run(self) -> None:
        """Read messages; when the connection drops, reconnect and read again."""
        while True:
            try:
                async for inbound in self.transport.messages():
                    try:
                        await self._receive(inbound)
                    except Exception:
                        logger.exception("could not dispatch a message on %s", inbound.topic)
                reason: object = "the transport closed"
            except ConnectionLostError as exc:
                reason = exc
            if self.state is State.CLOSED:
                return
            self.changed_at = time.monotonic()
            logger.warning("lost the connection to %s (%s); reconnecting", self.where, reason)
            await self._reconnect()

    async def _reconnect(self) -> None:
        settings = self.settings
        self.state = State.RECONNECTING
        self.online = False
        attempt = 0
        for delay in backoff_delays(settings.reconnect_initial_delay_s, settings.reconnect_max_delay_s):
            await asyncio.sleep(delay)
            attempt += 1
            try:
                await self._negotiate(settings.connect_timeout_s)
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
            self.state = State.CONNECTED
            self.online = True
            self.changed_at = time.monotonic()
            logger.info("reconnected to %s after %d attempts", self.where, attempt)
            metrics.reconnected()
            if self._connected is not None:
                await self._connected()
            return

    @staticmethod
    def _again(outbound: Outbound) -> Outbound | None:
        """``outbound`` to be sent once more, or None when the connection dropped at every attempt:
        a broker disconnects a client for a publish it refuses, so sending it forever would keep
        this client off the broker."""
        attempts = outbound.attempts + 1
        if attempts >= MAX_SEND_ATTEMPTS:
            logger.error(
                "dropped a publish on %s: the connection was lost at each of %d attempts",
                outbound.topic[:120],
                attempts,
            )
            return None
        return dataclasses.replace(outbound, attempts=attempts)

    async def _flush_outbox(self) -> None:
        """Send what was queued, in order, in windows of concurrent publishes."""
        while len(self.outbox):
            batch = self.outbox.take(FLUSH_BATCH)
            results = await asyncio.gather(
                *(self.transport.publish(message) for message in batch), return_exceptions=True
            )
            failed = []
            for message, result in zip(batch, results, strict=True):
                if isinstance(result, ConnectionLostError):
                    retry = self._again(message)
                    if retry is not None:
                        failed.append(retry)
                elif isinstance(result, BaseException):  # refused by the broker: resending would not help
                    logger.error("dropped a queued publish on %s: %s", message.topic, result)
            if failed:
                # Receivers drop any of these that did arrive (same message id).
                self.outbox.put_front(failed)
                raise ConnectionLostError("connection lost while sending queued publishes")
