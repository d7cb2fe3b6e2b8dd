"""The Messager: typed publish/subscribe and request/response over MQTT, with its own reconnection.

One Messager is one MQTT client. It keeps its subscriptions and a bounded outbox across broker
outages: a lost connection is retried with jittered exponential backoff, subscriptions are
renewed, and publishes made meanwhile are sent in order once the broker is back. With a stable
``client_id`` and ``persistent=True`` the broker also keeps the session while the client is
away, so QoS 1 messages published meanwhile arrive when it returns; receivers drop a message id
they have already handled, so a redelivery never reaches a handler twice.

The work is shared by three collaborators, each in its own module: the :class:`Connection`
(negotiation, reconnection, the outbox), the :class:`Dispatcher` (parsing, dropping, handler
concurrency, the unclaimed backlog) and :class:`Requests` (pending replies); a
:class:`MessageStream` is a subscription read with ``async for``. The Messager holds them together
and is the one public face.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar, overload

from argentic.config import MessagingConfig, TLSConfig
from argentic.errors import ArgumentError, MessagingError, NotConnectedError
from argentic.messaging.connection import Connection, ConnectionSettings, State, Will
from argentic.messaging.dispatch import Dispatcher, EmptyHandler, Handler, Subscription, delivery_topic
from argentic.messaging.limits import ReplyPolicy, check_topic
from argentic.messaging.peers import Peers
from argentic.messaging.requests import Requests
from argentic.messaging.stream import DEFAULT_QUEUE_SIZE, Cleared, MessageStream
from argentic.messaging.transport import Inbound, Outbound, Transport
from argentic.protocol import ClientStatus, ErrorReply, Message, Topics, new_id, topic_level

__all__ = ["Cleared", "MessageStream", "Messager", "Subscription", "Will", "delivery_topic"]

logger = logging.getLogger("argentic.messaging")

M = TypeVar("M", bound=Message)
P = TypeVar("P", bound="SharedPart")


class SharedPart(Protocol):
    """A part every component on one messager shares (a task board, a directory of roles): built
    from the messager on first use, closed by its disconnect."""

    def __init__(self, messager: Messager) -> None: ...

    async def close(self) -> None: ...


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
        reply_topics: Sequence[str] | None = None,
        max_queued_bytes: int = 64 * 1024 * 1024,
        transport: Transport | None = None,
    ) -> None:
        if qos not in (0, 1, 2):
            raise ArgumentError(f"qos must be 0, 1 or 2, got {qos!r}")
        # Read-only after construction: the collaborators below take their copies now.
        self.broker_address = broker_address
        self.port = port
        self.topics = Topics(namespace)
        generated_id = client_id is None
        self.client_id = (
            topic_level(client_id, "client id") if client_id else f"argentic-{uuid.uuid4().hex[:16]}"
        )
        self.inbox = self.topics.client_inbox(self.client_id)
        #: Where replies may go (``messaging.reply_topics``; default: the clients' inboxes).
        self.replies = ReplyPolicy.of(reply_topics, namespace)
        self.username = username
        self.tls = tls if tls is not None and tls.enabled else None
        self.protocol = protocol
        self.qos = qos
        self.keepalive = keepalive
        self.session_expiry_s = session_expiry_s
        self.persistent = persistent
        # Without a will of the caller's, the will says this client is gone (see messaging.peers):
        # it covers whatever the agents and tool services on this messager announced.
        self._status_will = will is None
        will = will or Will(
            topic=self.topics.client_status(self.client_id),
            message=ClientStatus(client_id=self.client_id, online=False),
        )
        self.will = will
        self._peers: Peers | None = None
        self._shared: dict[type[Any], Any] = {}
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
        self._leaving: list[Callable[[], Awaitable[None]]] = []
        self._streams: set[MessageStream[Any]] = set()
        self._dispatcher = Dispatcher(
            max_payload_bytes=max_payload_bytes,
            max_concurrent_handlers=max_concurrent_handlers,
            replies=self.replies,
            max_pending_bytes=max_queued_bytes,
            on_repeat=self._replay,
        )
        self._requests = Requests(
            inbox=self.inbox,
            max_payload_bytes=max_payload_bytes,
            publish=self._send,
            replies=self.replies,
            unsettled=self.reconnected_within,
        )
        settings = ConnectionSettings(
            broker_address=broker_address,
            port=port,
            client_id=self.client_id,
            generated_id=generated_id,
            username=username,
            password=password,
            tls=self.tls,
            protocol=protocol,
            keepalive=keepalive,
            session_expiry_s=session_expiry_s,
            persistent=persistent,
            will=will,
            connect_timeout_s=connect_timeout_s,
            publish_timeout_s=publish_timeout_s,
            reconnect_initial_delay_s=reconnect_initial_delay_s,
            reconnect_max_delay_s=reconnect_max_delay_s,
            max_inflight=max_inflight,
            max_queued_bytes=max_queued_bytes,
        )
        self._connection = Connection(
            transport,
            settings,
            inbox=self.inbox,
            inbox_qos=max(qos, 1),
            outbox_size=outbox_size,
            receive=self._receive,
            wanted=self._dispatcher.wanted,
            connected=self._say_online,
        )

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
            "reply_topics": config.reply_topics,
            "max_queued_bytes": config.max_queued_bytes,
        }
        values.update(overrides)
        return cls(**values)

    # --- state --------------------------------------------------------------------------------

    @property
    def protocol_version(self) -> str:
        """The MQTT version spoken: "5" or "3.1.1" once connected."""
        return self._connection.protocol_version

    @property
    def peers(self) -> Peers:
        """Which other clients the broker reports gone (shared by every component on this messager)."""
        if self._peers is None:
            self._peers = Peers(self)
        return self._peers

    def shared(self, kind: type[P]) -> P:
        """The one ``kind(self)`` of this messager, built on first use and closed (newest first)
        when the messager disconnects: what components on one messager share, it owns."""
        part = self._shared.get(kind)
        if part is None:
            part = self._shared[kind] = kind(self)
        return part

    @property
    def is_connected(self) -> bool:
        return self._connection.state is State.CONNECTED

    def reconnected_within(self, seconds: float) -> bool:
        """Whether the connection was lost or regained in the last ``seconds`` (or is down now):
        a broker restart then explains what the broker said meanwhile, such as clients' wills."""
        changed = self._connection.changed_at
        return not self.is_connected or (changed > 0 and time.monotonic() - changed < seconds)

    @property
    def pending_requests(self) -> int:
        """Requests waiting for their reply."""
        return len(self._requests)

    @property
    def queued_publishes(self) -> int:
        """Publishes held in the outbox until the broker is back."""
        return len(self._connection.outbox)

    def _require_open(self) -> None:
        state = self._connection.state
        if state is State.NEW:
            raise NotConnectedError("the Messager is not connected: await messager.connect() first")
        if state is State.CLOSED:
            raise NotConnectedError("the Messager was disconnected; create a new one or connect() again")

    # --- connection ---------------------------------------------------------------------------

    async def connect(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (public API)
        """Connect to the broker; raises BrokerUnavailableError or AuthenticationError."""
        if self._connection.state in (State.CONNECTED, State.RECONNECTING):
            return
        self._dispatcher.prepare()
        await self._connection.open(timeout if timeout is not None else self.connect_timeout_s)

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
        if self._connection.state in (State.NEW, State.CLOSED):
            return
        for callback in reversed(list(self._leaving)):
            try:
                async with asyncio.timeout(min(self.publish_timeout_s, 5.0)):
                    await callback()
            except Exception as exc:  # leaving must not fail because one component could not
                logger.warning("while disconnecting, %r failed: %s", callback, exc)
        self._leaving.clear()
        shared, self._shared = list(self._shared.values()), {}
        for part in reversed(shared):
            try:
                async with asyncio.timeout(min(self.publish_timeout_s, 5.0)):
                    await part.close()
            except Exception as exc:
                logger.warning("while disconnecting, closing %r failed: %s", part, exc)
        if self.will is not None and self._connection.online:
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
        await self._connection.stop()
        for stream in self._streams:
            stream.end()
        self._requests.fail_all(NotConnectedError("the Messager disconnected while waiting for a reply"))
        self._dispatcher.cancel_handlers()
        await self._connection.close()

    async def __aenter__(self) -> Messager:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.disconnect()

    async def _replay(self, request: Message) -> None:
        await self._requests.replay(request)

    async def _receive(self, inbound: Inbound) -> None:
        if inbound.topic == self.inbox:
            self._requests.on_reply(inbound)
        else:
            await self._dispatcher.dispatch(inbound)

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
        await self._send(topic, message, qos=qos, retain=retain)

    async def _send(
        self, topic: str, message: Message | None, *, qos: int | None = None, retain: bool = False
    ) -> int:
        """:meth:`publish`, returning the size of the payload sent."""
        self._require_open()
        check_topic(topic)  # a topic the broker refuses would drop the connection, not just this publish
        outbound = self._outbound(topic, message, self.qos if qos is None else qos, retain)
        await self._connection.publish(outbound)
        return len(outbound.payload)

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
        on_invalid: EmptyHandler | None = None,
    ) -> Subscription[M]:
        """Call ``handler`` with each valid message on ``topic_filter`` (MQTT wildcards allowed).

        Malformed, oversized and expired payloads are logged and dropped, as are duplicates. Empty
        payloads (cleared retained messages) go to ``on_empty`` with their topic, if given; the
        topic of a malformed one to ``on_invalid``. Inside the handler, :func:`delivery_topic`
        tells the topic the message came on.
        """
        subscription: Subscription[M] = Subscription(
            topic_filter,
            handler,
            model,
            self.qos if qos is None else qos,
            shared_group,
            on_empty,
            on_invalid=on_invalid,
        )
        await self._add(subscription)
        return subscription

    async def _add(self, subscription: Subscription[Any]) -> None:
        if self._connection.state is State.CLOSED:
            self._require_open()
        self._dispatcher.add(subscription)
        try:
            await self._connection.subscribe(
                subscription.broker_filter(self.protocol_version), subscription.qos
            )
        except MessagingError:
            self._dispatcher.remove(subscription)
            raise
        except TimeoutError:
            self._dispatcher.remove(subscription)
            raise MessagingError(
                f"the broker did not confirm the subscription to {subscription.topic_filter} "
                f"within {self.connect_timeout_s:g}s"
            ) from None
        await self._dispatcher.claim_backlog(subscription)

    async def unsubscribe(self, subscription: Subscription[Any]) -> None:
        if not self._dispatcher.remove(subscription):
            return
        broker_filter = subscription.broker_filter(self.protocol_version)
        if not self._dispatcher.uses(broker_filter, self.protocol_version):
            await self._connection.unsubscribe(broker_filter)

    @overload
    def messages(
        self,
        topic_filter: str,
        *,
        model: type[M],
        qos: int | None = None,
        shared_group: str | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        include_empty: Literal[False] = False,
    ) -> MessageStream[M]: ...

    @overload
    def messages(
        self,
        topic_filter: str,
        *,
        model: type[M],
        qos: int | None = None,
        shared_group: str | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        include_empty: Literal[True],
    ) -> MessageStream[M | Cleared]: ...

    @overload
    def messages(
        self,
        topic_filter: str,
        *,
        model: None = None,
        qos: int | None = None,
        shared_group: str | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        include_empty: Literal[False] = False,
    ) -> MessageStream[Message]: ...

    @overload
    def messages(
        self,
        topic_filter: str,
        *,
        model: None = None,
        qos: int | None = None,
        shared_group: str | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        include_empty: Literal[True],
    ) -> MessageStream[Message | Cleared]: ...

    def messages(
        self,
        topic_filter: str,
        *,
        model: type[Message] | None = None,
        qos: int | None = None,
        shared_group: str | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        include_empty: bool = False,
    ) -> MessageStream[Any]:
        """The messages on ``topic_filter`` as an async iterator, subscribed while inside ``async with``.

        The same messages a :meth:`subscribe` handler would get (malformed, oversized, expired and
        duplicate ones dropped), in arrival order, through a queue of ``queue_size``: when the
        reader falls that far behind, the oldest is dropped. ``include_empty`` also yields a
        :class:`Cleared` for each empty payload (a cleared retained message).
        """
        return MessageStream(
            topic_filter,
            model=model,
            qos=self.qos if qos is None else qos,
            shared_group=shared_group,
            queue_size=queue_size,
            include_empty=include_empty,
            attach=self._attach_stream,
            detach=self._detach_stream,
        )

    async def _attach_stream(self, stream: MessageStream[Any]) -> None:
        await self._add(stream.subscription)
        self._streams.add(stream)

    async def _detach_stream(self, stream: MessageStream[Any]) -> None:
        self._streams.discard(stream)
        await self.unsubscribe(stream.subscription)

    # --- request / response -------------------------------------------------------------------

    async def request(
        self,
        topic: str,
        message: Message,
        *,
        response_model: type[M] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (public API)
        retry_after: float | None = None,
    ) -> M | ErrorReply:
        """Publish ``message`` as a request and wait for its reply (or an ErrorReply).

        The same request (same id) is sent again after ``retry_after`` seconds without a reply
        (default a third of the timeout): a replica that died holding it cannot answer, and
        receivers drop a copy they already have (see also :meth:`resend`). Replicas with a
        short session expiry stop drawing requests soon after they die.

        Raises RequestTimeoutError when no reply comes in ``timeout`` seconds (default
        request_timeout_s), NotConnectedError if the Messager is disconnected meanwhile.
        """
        self._require_open()
        timeout = self.request_timeout_s if timeout is None else timeout
        await self.peers.start()
        return await self._requests.request(
            topic,
            message,
            response_model=response_model,
            timeout=timeout,
            retry_after=retry_after if retry_after is not None else max(timeout / 3, 1.0),
        )

    async def resend(self, topics: Collection[str]) -> None:
        """Send again, under the same ids, the requests waiting for a reply that went to ``topics``:
        a client that served them is gone (a replica killed while it held some). Receivers that
        already have one drop the copy; another replica answers what the gone one held."""
        await self._requests.resend(set(topics))

    async def reply(self, request: Message, response: Message) -> None:
        """Send ``response`` to ``request.reply_to``, carrying the request's correlation id."""
        await self._requests.reply(request, response)
