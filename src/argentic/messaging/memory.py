"""An in-process MQTT broker and transport: the fast test tier, no sockets.

It keeps what the Messager relies on: wildcards, retained messages, persistent sessions that
queue QoS 1 messages while a client is away, last wills, shared subscriptions (round robin), and
outages (:meth:`MemoryBroker.stop` drops every connection; connects fail until :meth:`start`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from argentic.errors import (
    AuthenticationError,
    BrokerUnavailableError,
    ConnectionLostError,
    MessagingError,
)
from argentic.messaging.transport import (
    Connected,
    ConnectOptions,
    Inbound,
    Outbound,
    Transport,
    WillMessage,
)
from argentic.protocol import matches

_LOST = object()


@dataclass(eq=False)
class _Session:
    client_id: str
    persistent: bool
    subscriptions: dict[str, int] = field(default_factory=dict)
    queue: asyncio.Queue[Inbound | object] | None = None  # set while connected
    backlog: list[Inbound] = field(default_factory=list)  # QoS > 0 messages while away
    will: WillMessage | None = None


class MemoryBroker:
    def __init__(
        self, *, users: dict[str, str] | None = None, refused_filters: set[str] | None = None
    ) -> None:
        self.users = users
        self.refused_filters = refused_filters or set()  # as an ACL would refuse them
        self.running = True
        self.retained: dict[str, Inbound] = {}
        self._sessions: dict[str, _Session] = {}
        self._round_robin = itertools.count()

    def transport(self) -> MemoryTransport:
        return MemoryTransport(self)

    def stop(self) -> None:
        """An outage: every connection drops (wills are published), persistent sessions stay."""
        self.running = False
        for session in list(self._sessions.values()):
            if session.queue is not None:
                self.drop(session.client_id, publish_will=False)

    def start(self) -> None:
        self.running = True

    def open_session(self, options: ConnectOptions) -> tuple[_Session, bool]:
        """A client's CONNECT (what its transport calls): its session, and whether it was resumed."""
        if not self.running:
            raise BrokerUnavailableError(f"no MQTT broker answered at memory:{options.client_id}")
        if self.users is not None and self.users.get(options.username or "") != options.password:
            raise AuthenticationError(f"the memory broker refused the credentials of {options.username!r}")
        old = self._sessions.get(options.client_id)
        if old is not None and old.queue is not None:
            self.drop(old.client_id, publish_will=False)  # session takeover
        present = old is not None and not options.clean_start and old.persistent
        session = (
            old if present and old is not None else _Session(options.client_id, options.session_expiry_s > 0)
        )
        session.persistent = options.session_expiry_s > 0 or (
            options.protocol == "3.1.1" and not options.clean_start
        )
        session.will = options.will
        session.queue = asyncio.Queue()
        for inbound in session.backlog:
            session.queue.put_nowait(inbound)
        session.backlog.clear()
        self._sessions[options.client_id] = session
        return session, present

    def drop(self, client_id: str, *, publish_will: bool = True) -> None:
        """End a client's connection as if its socket died."""
        session = self._sessions.get(client_id)
        if session is None or session.queue is None:
            return
        session.queue.put_nowait(_LOST)
        session.queue = None
        will, session.will = session.will, None
        if not session.persistent:
            del self._sessions[client_id]
        if publish_will and will is not None:
            self.route(Outbound(will.topic, will.payload, will.qos, will.retain))

    def close(self, session: _Session) -> None:
        if session.queue is None:
            return
        session.queue = None
        session.will = None
        if not session.persistent:
            self._sessions.pop(session.client_id, None)

    def route(self, message: Outbound) -> None:
        inbound = Inbound(
            message.topic,
            message.payload,
            message.qos,
            False,
            message.response_topic,
            message.correlation_data,
        )
        if message.retain:
            if message.payload:
                self.retained[message.topic] = Inbound(
                    message.topic,
                    message.payload,
                    message.qos,
                    True,
                    message.response_topic,
                    message.correlation_data,
                )
            else:
                self.retained.pop(message.topic, None)
        groups: dict[tuple[str, str], list[tuple[_Session, int]]] = {}
        for session in self._sessions.values():
            best: int | None = None
            for topic_filter, qos in session.subscriptions.items():
                if not matches(topic_filter, message.topic):
                    continue
                if topic_filter.startswith("$share/"):
                    group = topic_filter.split("/", 2)[1]
                    groups.setdefault((group, topic_filter.split("/", 2)[2]), []).append((session, qos))
                    continue
                best = qos if best is None else max(best, qos)
            if best is not None:
                self._send(session, inbound, min(best, message.qos))
        for members in groups.values():
            online = [m for m in members if m[0].queue is not None] or members
            session, qos = online[next(self._round_robin) % len(online)]
            self._send(session, inbound, min(qos, message.qos))

    @staticmethod
    def _send(session: _Session, inbound: Inbound, qos: int) -> None:
        if session.queue is not None:
            session.queue.put_nowait(inbound)
        elif qos > 0 and session.persistent:
            session.backlog.append(inbound)

    def subscribe(self, session: _Session, topic_filter: str, qos: int) -> None:
        session.subscriptions[topic_filter] = qos
        if session.queue is None or topic_filter.startswith("$share/"):
            return
        for topic, retained in self.retained.items():
            if matches(topic_filter, topic):
                session.queue.put_nowait(retained)


class MemoryTransport(Transport):
    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self._session: _Session | None = None

    def _live(self) -> _Session:
        session = self._session
        if session is None or session.queue is None:
            raise ConnectionLostError("not connected to the memory broker")
        return session

    async def connect(self, options: ConnectOptions) -> Connected:
        await self.disconnect()
        self._session, present = self.broker.open_session(options)
        return Connected(protocol=options.protocol, session_present=present)

    async def disconnect(self, *, end_session: bool = False) -> None:
        session, self._session = self._session, None
        if session is not None:
            if end_session:
                session.persistent = False
            self.broker.close(session)

    async def publish(self, message: Outbound) -> None:
        self._live()
        self.broker.route(message)
        await asyncio.sleep(0)

    async def subscribe(self, topic_filter: str, qos: int) -> None:
        session = self._live()
        if topic_filter in self.broker.refused_filters:
            raise MessagingError(f"the broker refused the subscription to {topic_filter!r}: Not authorized")
        self.broker.subscribe(session, topic_filter, qos)

    async def unsubscribe(self, topic_filter: str) -> None:
        self._live().subscriptions.pop(topic_filter, None)

    async def messages(self) -> AsyncIterator[Inbound]:
        session = self._live()
        queue = session.queue
        assert queue is not None
        while True:
            item = await queue.get()
            if item is _LOST or not isinstance(item, Inbound):
                raise ConnectionLostError("the memory broker dropped the connection")
            yield item
