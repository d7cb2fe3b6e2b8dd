"""The one lifecycle of every long-lived part: ``async with part:`` starts it and stops it.

Agents, tool services, tool managers and frame sources are :class:`Running` parts: entering starts
them (subscribe, announce, open the feed), leaving stops them (withdraw, unsubscribe, close),
even when the block raises. A start that fails half-way is undone: ``__aenter__`` calls ``stop()``
(whose own errors are logged, not raised) before the start's error propagates, so a part never
leaves behind what it managed to start. ``start()`` and ``stop()`` stay callable for code that
cannot use a ``with`` block; both are idempotent, and ``stop()`` must accept a part that was only
partly started.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)


class Running(ABC):
    """A part that is started on entering ``async with`` and stopped on leaving it."""

    @abstractmethod
    async def start(self) -> None:
        """Start (idempotent)."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop and withdraw what was announced (idempotent)."""

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            # Cancellation (Ctrl-C) too: whatever the start got to must not outlive it.
            try:
                await self.stop()
            except Exception:
                log.warning("stopping %r after its start failed also failed", self, exc_info=True)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
