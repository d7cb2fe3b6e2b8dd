"""Remembers the last message ids seen, so a redelivered message is handled once."""

from __future__ import annotations

from collections import OrderedDict


class RecentIds:
    """A bounded LRU set of message ids."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def seen(self, message_id: str) -> bool:
        """True if ``message_id`` was seen before; records it either way."""
        ids = self._ids
        if message_id in ids:
            ids.move_to_end(message_id)
            return True
        ids[message_id] = None
        if len(ids) > self.capacity:
            ids.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._ids)
