"""The Messager's subscriptions as the broker holds them: adding, removing, and message streams.

Several subscriptions may share one broker filter; the broker is asked to unsubscribe only when
the last of them goes. A subscribe whose caller gave up (cancelled, or the broker too slow to
confirm) is undone: its handler is forgotten, and the broker filter it may already hold is
released, so nothing keeps delivering to a subscription its caller never received.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from argentic.errors import MessagingError
from argentic.messaging.connection import Connection
from argentic.messaging.dispatch import Dispatcher, Subscription
from argentic.messaging.stream import MessageStream

logger = logging.getLogger("argentic.messaging")


class Subscriptions:
    def __init__(self, dispatcher: Dispatcher, connection: Connection) -> None:
        self.dispatcher = dispatcher
        self.connection = connection
        self.streams: set[MessageStream[Any]] = set()
        self._releasing: set[asyncio.Task[None]] = set()  # broker filters of abandoned subscribes

    async def add(self, subscription: Subscription[Any]) -> None:
        """Subscribe (at once if connected, else at the next reconnection) and hand over the
        messages a resumed session brought for it. Raises MessagingError when the broker refuses
        or does not confirm within connect_timeout_s."""
        self.dispatcher.add(subscription)
        broker_filter = subscription.broker_filter(self.connection.protocol_version)
        try:
            await self.connection.subscribe(broker_filter, subscription.qos)
        except MessagingError:  # refused: the broker holds nothing for it
            self.dispatcher.remove(subscription)
            raise
        except TimeoutError:
            self._abandon(subscription)
            raise MessagingError(
                f"the broker did not confirm the subscription to {subscription.topic_filter} "
                f"within {self.connection.settings.connect_timeout_s:g}s"
            ) from None
        except asyncio.CancelledError:
            self._abandon(subscription)
            raise
        await self.dispatcher.claim_backlog(subscription)

    async def remove(self, subscription: Subscription[Any]) -> None:
        if self.dispatcher.remove(subscription):
            await self._release(subscription.broker_filter(self.connection.protocol_version))

    async def _release(self, broker_filter: str) -> None:
        # Checked and sent without a pause between: a subscribe of the same filter racing this
        # one is either seen here or sent after the UNSUBSCRIBE, which the broker handles in order.
        if not self.dispatcher.uses(broker_filter, self.connection.protocol_version):
            await self.connection.unsubscribe(broker_filter)

    def _abandon(self, subscription: Subscription[Any]) -> None:
        """Undo a subscribe whose caller left: its handler now, the broker filter (which the
        SUBSCRIBE may already hold) in a task, as a cancelled caller cannot wait for it."""
        if not self.dispatcher.remove(subscription):
            return
        broker_filter = subscription.broker_filter(self.connection.protocol_version)
        task = asyncio.get_running_loop().create_task(self._release(broker_filter))
        self._releasing.add(task)
        task.add_done_callback(self._released)

    def _released(self, task: asyncio.Task[None]) -> None:
        self._releasing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("could not release an abandoned subscription: %s", task.exception())

    async def attach(self, stream: MessageStream[Any]) -> None:
        await self.add(stream.subscription)
        self.streams.add(stream)

    async def detach(self, stream: MessageStream[Any]) -> None:
        self.streams.discard(stream)
        await self.remove(stream.subscription)

    def close(self) -> None:
        """End every stream (after what it already queued); stop releasing filters."""
        for stream in self.streams:
            stream.end()
        for task in list(self._releasing):
            task.cancel()
