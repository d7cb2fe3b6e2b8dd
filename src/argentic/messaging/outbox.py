"""Publishes held while the broker is away, sent in order once it is back."""

from __future__ import annotations

import time
from collections import deque

from argentic.errors import OutboxFullError
from argentic.messaging.transport import Outbound

__all__ = ["Outbox", "OutboxFullError"]  # OutboxFullError: importable here as before


class Outbox:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[Outbound] = deque()

    def put(self, message: Outbound) -> None:
        if len(self._items) >= self.capacity:
            raise OutboxFullError(
                f"the broker is unreachable and {self.capacity} publishes are already waiting "
                "(messaging.outbox_size); this one was not queued"
            )
        self._items.append(message)

    def put_front(self, messages: list[Outbound]) -> None:
        """Return messages that could not be sent, keeping their order ahead of the rest."""
        self._items.extendleft(reversed(messages))

    def take(self, limit: int) -> list[Outbound]:
        """Up to ``limit`` messages from the front, skipping the ones that expired while waiting."""
        now = time.time()
        batch: list[Outbound] = []
        while self._items and len(batch) < limit:
            message = self._items.popleft()
            if message.expires_at is None or message.expires_at > now:
                batch.append(message)
        return batch

    def __len__(self) -> int:
        return len(self._items)
