"""The one lifecycle of every long-lived part: ``async with part:`` starts it and stops it.

Agents, tool services, tool managers and frame sources are :class:`Running` parts: entering starts
them (subscribe, announce, open the feed), leaving stops them (withdraw, unsubscribe, close),
even when the block raises. ``start()`` and ``stop()`` stay callable for code that cannot use a
``with`` block; both are idempotent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Running(ABC):
    """A part that is started on entering ``async with`` and stopped on leaving it."""

    @abstractmethod
    async def start(self) -> None:
        """Start (idempotent)."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop and withdraw what was announced (idempotent)."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
