"""Subscribing as ``async for``: the messages of one subscription through a bounded queue.

Made by :meth:`Messager.messages`. The reading loop puts each valid message into the stream's
queue without waiting: it also carries replies to requests and every other subscription, so a
slow reader must not hold it up. When the queue is full the oldest message is dropped (counted in
:attr:`MessageStream.dropped`, with a warning when dropping starts): a reader that has fallen
behind is better served by what is newest (the current presence, the latest frame or status)
than by what it missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

from argentic.errors import ArgumentError, UsageError
from argentic.messaging.dispatch import Subscription
from argentic.protocol import Message

logger = logging.getLogger("argentic.messaging")

T = TypeVar("T")

DEFAULT_QUEUE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Cleared:
    """An empty payload on ``topic``: the retained message there was cleared."""

    topic: str


class MessageStream(Generic[T]):
    """``async with messager.messages(...) as messages: async for message in messages: ...``

    Entering subscribes, leaving unsubscribes. Iteration ends when the ``async with`` block is
    left or the Messager disconnects (after what was already queued); across a reconnection it
    carries on, as the subscription is renewed.
    """

    def __init__(
        self,
        topic_filter: str,
        *,
        model: type[Message] | None,
        qos: int,
        shared_group: str | None,
        queue_size: int,
        include_empty: bool,
        attach: Callable[[MessageStream[Any]], Awaitable[None]],
        detach: Callable[[MessageStream[Any]], Awaitable[None]],
    ) -> None:
        if queue_size < 1:
            raise ArgumentError(f"queue_size must be at least 1, got {queue_size!r}")
        self.topic_filter = topic_filter
        self.queue_size = queue_size
        self.dropped = 0  # messages dropped because the reader fell behind
        self.subscription: Subscription[Any] = Subscription(
            topic_filter,
            self._on_message,
            model,
            qos,
            shared_group,
            self._on_empty if include_empty else None,
            inline=True,
        )
        self._attach = attach
        self._detach = detach
        self._items: deque[Any] = deque()
        self._ready = asyncio.Event()
        self._overflowing = False
        self._entered = False
        self._ended = False

    async def __aenter__(self) -> MessageStream[T]:
        if self._entered:
            raise UsageError("a message stream can be entered once; call messager.messages() again")
        await self._attach(self)
        self._entered = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.end()
        await self._detach(self)

    def __aiter__(self) -> MessageStream[T]:
        return self

    async def __anext__(self) -> T:
        if not self._entered:
            raise UsageError("enter the stream first: async with messager.messages(...) as messages")
        while not self._items:
            if self._ended:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        item: T = self._items.popleft()
        return item

    @property
    def waiting(self) -> int:
        """Messages received and not read yet."""
        return len(self._items)

    def end(self) -> None:
        """Stop the iteration once what is queued has been read."""
        self._ended = True
        self._ready.set()

    async def _on_message(self, message: Message) -> None:
        self._put(message)

    async def _on_empty(self, topic: str) -> None:
        self._put(Cleared(topic))

    def _put(self, item: object) -> None:
        if len(self._items) >= self.queue_size:
            self._items.popleft()
            self.dropped += 1
            if not self._overflowing:
                self._overflowing = True
                logger.warning(
                    "the message stream on %s is full (%d waiting): dropping the oldest; "
                    "read faster or raise queue_size",
                    self.topic_filter,
                    self.queue_size,
                )
        elif self._overflowing and len(self._items) < self.queue_size // 2:
            self._overflowing = False  # caught up: warn again if it falls behind again
        self._items.append(item)
        self._ready.set()
