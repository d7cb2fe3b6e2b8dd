"""What the gateway sees on the broker: the roles online (presences with their cards and replicas)
and every task event, relayed to the live view's listeners."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from argentic.messaging import Messager, Subscription, delivery_topic
from argentic.protocol import Message, Presence, Progress, TaskStatus, Token

log = logging.getLogger(__name__)

LISTENER_QUEUE = 1024


class Roster:
    """Follows ``{ns}/agents/+/status`` and ``{ns}/agents/+/events/+``; ``async with``."""

    def __init__(self, messager: Messager) -> None:
        self.messager = messager
        #: role -> the latest presence from an online client (online or not).
        self.presences: dict[str, Presence] = {}
        #: role -> the clients that said the role is online (its replicas).
        self.replicas: dict[str, set[str]] = {}
        self._listeners: set[asyncio.Queue[dict[str, Any]]] = set()
        # (role, question id) -> the callbacks following that question's events (see follow).
        self._followers: dict[tuple[str, str], list[Callable[[Message], Awaitable[None]]]] = {}
        self._subscriptions: list[Subscription[Any]] = []
        self._unwatch: Any = None

    async def __aenter__(self) -> Roster:
        topics = self.messager.topics
        await self.messager.peers.start()
        self._unwatch = self.messager.peers.watch(self._on_client_gone)
        self._subscriptions.append(
            await self.messager.subscribe(
                topics.agent_status_all(), self._on_presence, model=Presence, inline=True
            )
        )
        self._subscriptions.append(
            await self.messager.subscribe(topics.agent_events_every_role(), self._on_event, inline=True)
        )
        # The same broker subscription (no second copy of each event): a task followed through
        # the gateway also gets the statuses its sub-tasks pass up, which repeat a message the
        # live view already saw on the sub-task's own topic.
        self._subscriptions.append(
            await self.messager.subscribe(
                topics.agent_events_every_role(), self._to_followers, dedupe_by_topic=True, inline=True
            )
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._unwatch is not None:
            self._unwatch()
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await self.messager.unsubscribe(subscription)
        self._subscriptions.clear()

    def online(self, role: str) -> Presence | None:
        """The role's presence if a replica of it is online now."""
        presence = self.presences.get(role)
        if presence is None or not presence.online or not self.replicas.get(role):
            return None
        return presence

    def snapshot(self) -> dict[str, Any]:
        roles = []
        for role, presence in sorted(self.presences.items()):
            if self.online(role) is None:
                continue
            roles.append(
                {
                    "role": role,
                    "replicas": sorted(self.replicas.get(role, ())),
                    "card": presence.card.model_dump() if presence.card else None,
                }
            )
        return {"kind": "roles", "roles": roles}

    def listen(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=LISTENER_QUEUE)
        self._listeners.add(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._listeners.discard(queue)

    def _send(self, item: dict[str, Any]) -> None:
        for queue in self._listeners:
            # A slow page loses events rather than holding the broker's.
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(item)

    async def _on_presence(self, presence: Presence) -> None:
        replicas = self.replicas.setdefault(presence.role, set())
        # A presence is believed unless its client was reported gone (its status may come later).
        if presence.online and presence.client_id and not self.messager.peers.gone(presence.client_id):
            replicas.add(presence.client_id)
            self.presences[presence.role] = presence
        elif not presence.online:
            replicas.discard(presence.client_id or "")
            if not replicas:
                self.presences[presence.role] = presence
        self._send(self.snapshot())

    async def _on_client_gone(self, client_id: str) -> None:
        changed = False
        for replicas in self.replicas.values():
            if client_id in replicas:
                replicas.discard(client_id)
                changed = True
        if changed:
            self._send(self.snapshot())

    def follow(
        self, role: str, question_id: str, callback: Callable[[Message], Awaitable[None]]
    ) -> Callable[[], None]:
        """Call ``callback`` with each event on ``role``'s events topic of ``question_id`` (an
        :data:`~argentic.agents.client.EventFeed`): the gateway's tasks take their events from the
        roster's subscription, which covers them, instead of subscribing each for its own."""
        key = (role, question_id)
        self._followers.setdefault(key, []).append(callback)

        def stop() -> None:
            callbacks = self._followers.get(key, [])
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks:
                self._followers.pop(key, None)

        return stop

    async def _to_followers(self, event: Message) -> None:
        levels = (delivery_topic() or "").split("/")
        if len(levels) >= 3:
            for callback in list(self._followers.get((levels[-3], levels[-1]), ())):
                await callback(event)

    async def _on_event(self, event: Message) -> None:
        if not isinstance(event, TaskStatus | Token | Progress) or not self._listeners:
            return
        topic = delivery_topic() or ""
        levels = topic.split("/")
        role = levels[-3] if len(levels) >= 3 else ""
        item = {"kind": event.type, "topic_role": role, **event.model_dump(mode="json", exclude_none=True)}
        self._send(item)
