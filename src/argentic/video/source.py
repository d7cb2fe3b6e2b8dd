"""The one small interface every frame source offers, and a base class that implements it."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from argentic.lifecycle import Running
from argentic.video.frames import Frame, FrameBuffer


@runtime_checkable
class FrameSource(Protocol):
    """Something that produces frames and keeps the newest ones.

    ``start`` begins producing (raising :class:`~argentic.errors.VideoError` when it cannot),
    ``stop`` ends it and releases what it holds; ``async with source:`` does both. The read
    methods never block.
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def latest(self) -> Frame | None: ...

    def recent(self, n: int | None = None, within_s: float | None = None) -> list[Frame]: ...

    async def wait_for_frame(self, timeout: float, newer_than: int | None = None) -> Frame: ...  # noqa: ASYNC109


class BufferedSource(Running):
    """Implements the read side of :class:`FrameSource` over a :class:`FrameBuffer`; a subclass
    starts and stops producing (``async with source:``)."""

    def __init__(self, buffer_size: int = 90) -> None:
        self.buffer = FrameBuffer(buffer_size)

    @property
    def frames_seen(self) -> int:
        """How many frames the source has produced since it was made."""
        return self.buffer.pushed

    def latest(self) -> Frame | None:
        return self.buffer.latest()

    def recent(self, n: int | None = None, within_s: float | None = None) -> list[Frame]:
        return self.buffer.recent(n, within_s)

    async def wait_for_frame(self, timeout: float, newer_than: int | None = None) -> Frame:  # noqa: ASYNC109 (the API takes plain timeouts)
        return await self.buffer.wait_for_frame(timeout, newer_than)
