"""The Messager: typed publish/subscribe and request/response over MQTT, with its own reconnection.

One Messager is one MQTT client. It keeps its subscriptions and a bounded outbox across broker
outages: a lost connection is retried with jittered exponential backoff, subscriptions are
renewed, and publishes made meanwhile are sent in order once the broker is back. With a stable
``client_id`` and ``persistent=True`` the broker also keeps the session while the client is
away, so QoS 1 messages published meanwhile arrive when it returns; receivers drop a message id
they have already handled, so a redelivery never reaches a handler twice.

The work is shared by collaborators, each in its own module: the :class:`Connection`
(negotiation, reconnection, the outbox), the :class:`Dispatcher` (parsing, dropping, handler
concurrency, the unclaimed backlog), :class:`Subscriptions` (what the broker is subscribed to, and
message streams), :class:`Requests` (pending replies), :class:`Leaving` (what winds down before
a disconnect) and :class:`OwnStatus` (the client's online status and will); ``options`` maps the
configuration to the arguments. A :class:`MessageStream` is a subscription read with
``async for``. The Messager holds them together and is the one public face.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

from argentic.config import MessagingConfig, TLSConfig
from argentic.errors import ArgumentError, NotConnectedError
from argentic.messaging.connection import Connection, State, Will
from argentic.messaging.dispatch import Dispatcher, EmptyHandler, Handler, Subscription, delivery_topic
from argentic.messaging.leaving import Leaving, SharedPart
from argentic.messaging.limits import ReplyPolicy, check_topic
from argentic.messaging.options import config_options, connection_settings
from argentic.messaging.own_status import OwnStatus
from argentic.messaging.peers import Peers
from argentic.messaging.requests import Requests
from argentic.messaging.stream import DEFAULT_QUEUE_SIZE, Cleared, MessageStream
from argentic.messaging.subscriptions import Subscriptions
from argentic.messaging.transport import Inbound, Outbound, Transport
from argentic.observability import tracing
from argentic.protocol import ErrorReply, Message, Topics, topic_level

__all__ = ["Cleared", "MessageStream", "Messager", "SharedPart", "Subscription", "Will", "delivery_topic"]

M = TypeVar("M", bound=Message)
P = TypeVar("P", bound=SharedPart)


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
        self._status = OwnStatus(self.topics, self.client_id, will)
        self.will = will = self._status.will
        self._peers: Peers | None = None
        self.max_payload_bytes = max_payload_bytes
        self.request_timeout_s = request_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.publish_timeout_s = publish_timeout_s
        self.max_concurrent_handlers = max_concurrent_handlers
        self.reconnect_initial_delay_s = reconnect_initial_delay_s
        self.reconnect_max_delay_s = reconnect_max_delay_s
        self.max_inflight = max_inflight
        if transport is None:
            from argentic.messaging.mqtt_transport import MqttTransport

            transport = MqttTransport()
        self._leaving = Leaving()
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
        settings = connection_settings(
            self, generated_id=generated_id, password=password, max_queued_bytes=max_queued_bytes
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
        self._subscriptions = Subscriptions(self._dispatcher, self._connection)

    @classmethod
    def from_config(cls, config: MessagingConfig, **overrides: Any) -> Messager:
        values = config_options(config)
        values.update(overrides)
        return cls(**values)

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

    @property
    def roles(self) -> dict[str, int]:
        """The roles whose agents serve on this client, and how many agents each."""
        return dict(self._status.roles)

    async def announce_roles(self, roles: Mapping[str, int]) -> None:
        """Say in this client's retained status which roles its agents serve (``argentic status``
        counts every replica from it)."""
        await self._status.serve(roles, self.publish if self.is_connected else None)

    def shared(self, kind: type[P]) -> P:
        """The one ``kind(self)`` of this messager, built on first use, closed when it disconnects."""
        return self._leaving.shared(kind, self)

    @property
    def is_connected(self) -> bool:
        return self._connection.state is State.CONNECTED

    def reconnected_within(self, seconds: float) -> bool:
        """Whether the connection was lost or regained in the last ``seconds`` (or is down now)."""
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
        return self._leaving.before_disconnect(callback)

    async def _say_online(self) -> None:
        await self._status.announce(self.publish)

    async def disconnect(self) -> None:
        """Leave gracefully. Pending requests fail.

        First the ``before_disconnect`` callbacks run (newest first), then the will is published:
        a broker sends it only for clients that vanish, yet a process that exits without
        withdrawing what it announced (tools, presence) is just as gone.
        """
        if self._connection.state in (State.NEW, State.CLOSED):
            return
        await self._leaving.run(min(self.publish_timeout_s, 5.0))
        if self._connection.online:
            await self._status.farewell(self.publish, min(self.publish_timeout_s, 5.0))
        await self._connection.stop()
        self._subscriptions.close()
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
        if message is not None and message.reply_to is not None and message.traceparent is None:
            # A request carries the sender's trace context (events and replies need not).
            traceparent = tracing.current_traceparent()
            if traceparent is not None:
                message = message.model_copy(update={"traceparent": traceparent})
        outbound = Outbound.of(topic, message, self.qos if qos is None else qos, retain)
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
        dedupe_by_topic: bool = False,
        inline: bool = False,
    ) -> Subscription[M]:
        """Call ``handler`` with each valid message on ``topic_filter`` (MQTT wildcards allowed).

        Malformed, oversized and expired payloads are logged and dropped, as are duplicates (the
        same message again; with ``dedupe_by_topic``, again on the same topic). Empty payloads
        (cleared retained messages) go to ``on_empty`` with their topic, if given; the topic of a
        malformed one to ``on_invalid``. Inside the handler, :func:`delivery_topic` tells the
        topic the message came on. Each call runs in a task of its own, so that a handler may
        wait (for a reply, say); ``inline=True`` runs it in the reading loop instead, in order and
        without a task, for a handler that never waits.
        """
        subscription: Subscription[M] = Subscription(
            topic_filter,
            handler,
            model,
            self.qos if qos is None else qos,
            shared_group,
            on_empty,
            on_invalid=on_invalid,
            dedupe_by_topic=dedupe_by_topic,
            inline=inline,
        )
        await self._add(subscription)
        return subscription

    async def _add(self, subscription: Subscription[Any]) -> None:
        if self._connection.state is State.CLOSED:
            self._require_open()
        await self._subscriptions.add(subscription)

    async def unsubscribe(self, subscription: Subscription[Any]) -> None:
        await self._subscriptions.remove(subscription)

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
            detach=self._subscriptions.detach,
        )

    async def _attach_stream(self, stream: MessageStream[Any]) -> None:
        if self._connection.state is State.CLOSED:
            self._require_open()
        await self._subscriptions.attach(stream)

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
        (default a third of the timeout), then twice a beat: receivers drop a copy they already
        have (see also :meth:`resend`).

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

    async def resend(self, topics: Collection[str], ids: Collection[str] | None = None) -> None:
        """Send again, under the same ids, the requests waiting for a reply that went to ``topics``
        (only those of ``ids``, when given): a client that served them is gone (a replica killed
        while it held some). Receivers that already have one drop the copy; another replica
        answers what the gone one held."""
        await self._requests.resend(set(topics), None if ids is None else set(ids))

    async def reply(self, request: Message, response: Message) -> None:
        """Send ``response`` to ``request.reply_to``, carrying the request's correlation id."""
        await self._requests.reply(request, response)
