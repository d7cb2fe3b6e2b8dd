"""Incoming messages to their subscriptions: parsing, dropping, and bounded handler concurrency.

A message is parsed once per model, dropped if malformed, oversized, expired or already handled
by that subscription, and each handler runs in its own task under a bound. Messages a resumed
session brings before the matching subscription exists wait, briefly, in the unclaimed backlog.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from argentic.errors import InvalidTopicError, MalformedMessageError
from argentic.messaging.decoding import decode
from argentic.messaging.dedupe import RecentIds
from argentic.messaging.limits import ReplyPolicy
from argentic.messaging.transport import Inbound
from argentic.observability import metrics
from argentic.protocol import Message, matches, shared

logger = logging.getLogger("argentic.messaging")

M = TypeVar("M", bound=Message)
Handler = Callable[[M], Awaitable[None]]
EmptyHandler = Callable[[str], Awaitable[None]]

UNCLAIMED_MAX = 1000  # messages that arrived before a matching subscribe() (a resumed session's backlog)
UNCLAIMED_MAX_AGE_S = 60.0
BACKLOG_FACTOR = 16  # deliveries allowed to wait for a handler slot, per slot

_TOPIC: contextvars.ContextVar[str | None] = contextvars.ContextVar("argentic_delivery_topic", default=None)


def delivery_topic() -> str | None:
    """Inside a handler: the topic the message came on (a payload may name anything; the topic is
    what the broker's ACL vouches for)."""
    return _TOPIC.get()


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
    # Awaited in the reading loop rather than in a task of its own, so deliveries keep their
    # order; only for handlers that never wait (a message stream's queue).
    inline: bool = False
    # Called with the topic when a payload there is not a valid message (so an owner can repair it).
    on_invalid: EmptyHandler | None = None
    # A duplicate is the same message on the same topic: a copy passed on to another topic (a
    # sub-task's status passed up to its asker's events) is delivered there too.
    dedupe_by_topic: bool = False

    def broker_filter(self, protocol: str) -> str:
        # $share needs MQTT 5; on 3.1.1 every member receives every message.
        if self.shared_group is not None and protocol == "5":
            return shared(self.topic_filter, self.shared_group)
        return self.topic_filter


def _wildcard(topic_filter: str) -> bool:
    return "+" in topic_filter or "#" in topic_filter or topic_filter.startswith("$share/")


class Dispatcher:
    """Hands incoming messages to the subscriptions whose filters match their topic."""

    def __init__(
        self,
        *,
        max_payload_bytes: int,
        max_concurrent_handlers: int,
        replies: ReplyPolicy | None = None,
        max_pending_bytes: int | None = None,
        on_repeat: Callable[[Message], Awaitable[None]] | None = None,
    ) -> None:
        self.on_repeat = on_repeat  # a request seen before: its reply may need sending again
        self.max_payload_bytes = max_payload_bytes
        self.replies = replies
        # Payload bytes held by deliveries not yet handled; beyond it deliveries are shed (a
        # requester's retry brings a request back). Waiting instead would stall the reading loop,
        # which also carries the replies those handlers may be waiting for.
        self.max_pending_bytes = max_pending_bytes
        self.pending_bytes = 0
        self.shed = 0
        self.max_concurrent_handlers = max_concurrent_handlers
        self.subscriptions: list[Subscription[Any]] = []
        # The same subscriptions by filter without wildcards, and those with, each numbered in the
        # order it was made (the order deliveries keep).
        self._exact: dict[str, list[tuple[int, Subscription[Any]]]] = {}
        self._wild: list[tuple[int, Subscription[Any]]] = []
        self._made = 0
        self._turns: dict[tuple[str, str], int] = {}  # (share group, filter) -> deliveries so far
        self._unclaimed: deque[tuple[float, Inbound]] = deque(maxlen=UNCLAIMED_MAX)
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None  # handlers running
        self._backlog: asyncio.Semaphore | None = None  # deliveries running or waiting for a slot

    def prepare(self) -> None:
        if self._slots is None:  # once: handler tasks of an earlier connection release into them
            self._slots = asyncio.Semaphore(self.max_concurrent_handlers)
            self._backlog = asyncio.Semaphore(self.max_concurrent_handlers * BACKLOG_FACTOR)

    def wanted(self, protocol: str) -> set[tuple[str, int]]:
        """The broker subscriptions these subscriptions need: (filter, QoS) pairs."""
        return {(sub.broker_filter(protocol), sub.qos) for sub in self.subscriptions}

    def add(self, subscription: Subscription[Any]) -> None:
        self.subscriptions.append(subscription)
        self._made += 1
        entry = (self._made, subscription)
        if _wildcard(subscription.topic_filter):
            self._wild.append(entry)
        else:
            self._exact.setdefault(subscription.topic_filter, []).append(entry)

    def remove(self, subscription: Subscription[Any]) -> bool:
        """Forget ``subscription``; False if it was not there."""
        if subscription not in self.subscriptions:
            return False
        self.subscriptions.remove(subscription)
        if _wildcard(subscription.topic_filter):
            self._wild = [entry for entry in self._wild if entry[1] is not subscription]
        else:
            entries = self._exact.get(subscription.topic_filter, [])
            entries[:] = [entry for entry in entries if entry[1] is not subscription]
            if not entries:
                self._exact.pop(subscription.topic_filter, None)
        return True

    def _targets(self, topic: str) -> list[Subscription[Any]]:
        """The subscriptions whose filters match ``topic``, in the order they were made. Filters
        without wildcards are found by the topic itself: a client with a subscription per task in
        flight (a gateway) would otherwise match every message against each of them."""
        found = self._exact.get(topic, [])
        matching = [entry for entry in self._wild if matches(entry[1].topic_filter, topic)]
        if matching:
            found = sorted([*found, *matching], key=lambda entry: entry[0])
        return [sub for _, sub in found]

    def uses(self, broker_filter: str, protocol: str) -> bool:
        return any(s.broker_filter(protocol) == broker_filter for s in self.subscriptions)

    def cancel_handlers(self) -> None:
        current = asyncio.current_task()
        for task in list(self._handler_tasks):
            if task is not current:
                task.cancel()

    # --- delivering ---------------------------------------------------------------------------

    async def dispatch(self, inbound: Inbound) -> None:
        topic = inbound.topic
        targets = self._targets(topic)
        if not targets:
            self._unclaimed.append((time.monotonic(), inbound))
            return
        await self._deliver(inbound, self._one_per_share_group(targets))

    def _one_per_share_group(self, targets: list[Subscription[Any]]) -> list[Subscription[Any]]:
        """Members of one share group in this client (replicas on one messager) take turns: the
        broker delivers a shared message once per client, and it is for one of them."""
        if all(s.shared_group is None for s in targets):
            return targets
        chosen: list[Subscription[Any]] = []
        groups: dict[tuple[str, str], list[Subscription[Any]]] = {}
        for sub in targets:
            if sub.shared_group is None:
                chosen.append(sub)
            else:
                groups.setdefault((sub.shared_group, sub.topic_filter), []).append(sub)
        for key, members in groups.items():
            turn = self._turns.get(key, 0)
            self._turns[key] = turn + 1
            chosen.append(members[turn % len(members)])
        return chosen

    async def claim_backlog(self, subscription: Subscription[Any]) -> None:
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
        if claimed and subscription.shared_group is not None:
            # Requests a shared group handed to an earlier run of this client (a replica that was
            # killed and started again): their senders sent them again when the broker reported
            # that run gone, so another replica may have answered them already.
            logger.info(
                "left %d requests held for an earlier run of this client on %s to their senders' resends",
                len(claimed),
                subscription.topic_filter,
            )
            return
        for inbound in claimed:
            await self._deliver(inbound, [subscription])

    async def _deliver(self, inbound: Inbound, targets: list[Subscription[Any]]) -> None:
        topic, payload = inbound.topic, inbound.payload
        if not payload:
            for sub in targets:
                if sub.on_empty is not None:
                    await self._run(sub, sub.on_empty(topic), topic)
            return
        if len(payload) > self.max_payload_bytes:
            metrics.dropped("oversized")
            logger.warning(
                "dropped a message on %s: %d bytes exceeds max_payload_bytes %d",
                topic,
                len(payload),
                self.max_payload_bytes,
            )
            return
        size = len(payload)
        if (
            self.max_pending_bytes is not None
            and self.pending_bytes
            and self.pending_bytes + size > self.max_pending_bytes
        ):
            self.shed += 1
            metrics.dropped("overloaded")
            if self.shed == 1 or self.shed % 100 == 0:
                logger.warning(
                    "dropped a message on %s: %d payload bytes already wait for handlers "
                    "(messaging.max_queued_bytes %d; %d dropped so far)",
                    topic,
                    self.pending_bytes,
                    self.max_pending_bytes,
                    self.shed,
                )
            return
        parsed: dict[type[Message] | None, Message] = {}
        malformed: set[type[Message] | None] = set()
        for sub in targets:
            message = parsed.get(sub.model)
            if message is None:
                message = self._parse(inbound, sub.model, parsed, malformed)
                if message is None:
                    if sub.model in malformed and sub.on_invalid is not None:
                        await self._run(sub, sub.on_invalid(topic), topic)
                    continue
                parsed[sub.model] = message
            # A retained delivery is the topic's current state, sent on every (re)subscription:
            # it is not a redelivered event, and skipping it could leave a stale state behind.
            key = f"{topic}\x00{sender_key(message)}" if sub.dedupe_by_topic else sender_key(message)
            if not inbound.retain and sub.recent.seen(key):
                logger.debug("dropped a duplicate of message %s on %s", message.id, topic)
                if message.reply_to is not None and self.on_repeat is not None:
                    await _guard(self.on_repeat(message), topic, None)
                continue
            await self._run(sub, sub.handler(message), topic, size)

    def _parse(
        self,
        inbound: Inbound,
        model: type[Message] | None,
        parsed: dict[type[Message] | None, Message],
        malformed: set[type[Message] | None],
    ) -> Message | None:
        message: Message | None = None
        if model is not None:
            generic = parsed.get(None)
            if isinstance(generic, model):
                message = generic
        try:
            if message is None:
                message = decode(inbound.payload, model)
        except MalformedMessageError as exc:
            logger.warning("dropped a malformed message on %s: %s", inbound.topic, str(exc)[:500])
            metrics.dropped("malformed")
            malformed.add(model)
            return None
        if message.expired():
            metrics.dropped("expired")
            logger.info(
                "dropped message %s on %s: expired at %s", message.id, inbound.topic, message.expires_at
            )
            return None
        if message.reply_to is None and inbound.response_topic:
            # An MQTT 5 sender that set only the Response Topic / Correlation Data properties.
            correlation = message.correlation_id
            if correlation is None and inbound.correlation_data is not None:
                correlation = inbound.correlation_data.decode(errors="replace")[:256]
            message = message.model_copy(
                update={"reply_to": inbound.response_topic, "correlation_id": correlation}
            )
        if message.traceparent is None and inbound.traceparent is not None:
            message = message.model_copy(update={"traceparent": inbound.traceparent[:256]})
        if message.reply_to is not None and self.replies is not None:
            # Checked before anyone acts on the request: its answer could go nowhere else.
            try:
                self.replies.check(message.reply_to)
            except InvalidTopicError as exc:
                logger.warning("dropped message %s on %s: %s", str(message.id)[:64], inbound.topic, exc)
                metrics.dropped("reply_to_refused")
                return None
        return message

    # --- handler concurrency ------------------------------------------------------------------

    async def _run(
        self, subscription: Subscription[Any], work: Awaitable[None], topic: str, size: int = 0
    ) -> None:
        token = _TOPIC.set(topic)  # a spawned task copies it with the rest of the context
        try:
            if subscription.inline:
                await _guard(work, topic, None)
            else:
                await self._spawn(work, topic, size)
        finally:
            _TOPIC.reset(token)

    async def _spawn(self, work: Awaitable[None], topic: str, size: int = 0) -> None:
        """Run one delivery in its own task; at most max_concurrent_handlers run at a time.

        The reading loop waits only when many deliveries are already queued for a slot. It must
        not wait for a slot itself: handlers that await replies (requests) would then block the
        very loop that delivers those replies.
        """
        backlog, running = self._backlog, self._slots
        assert backlog is not None and running is not None
        await backlog.acquire()
        task = asyncio.get_running_loop().create_task(_guard(work, topic, running))
        self._handler_tasks.add(task)
        self.pending_bytes += size
        task.add_done_callback(lambda done: self._handler_done(done, size))

    def _handler_done(self, task: asyncio.Task[None], size: int) -> None:
        self._handler_tasks.discard(task)
        self.pending_bytes -= size
        if self._backlog is not None:
            self._backlog.release()


def sender_key(message: Message) -> str:
    """What a duplicate shares with the original: its id, per sender. A request's sender is known
    by its reply topic, so two clients that happen to pick the same id are both answered."""
    return f"{message.reply_to or ''}\x00{message.id}"


async def _guard(work: Awaitable[None], topic: str, running: asyncio.Semaphore | None) -> None:
    try:
        if running is None:
            await work
        else:
            async with running:
                await work
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("a handler for %s raised; the subscription carries on", topic)
