"""Frames and the bounded buffer that keeps the newest of them."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from argentic.errors import ArgumentError, VideoError

RGBImage = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Frame:
    """One video frame as a source delivered it.

    ``image`` is an ``av.VideoFrame`` (WebRTC keeps the decoder's frame, converting only the ones
    that are sampled) or an RGB ``uint8`` array of shape (height, width, 3).
    ``timestamp`` is the wall-clock time (Unix seconds) the frame reached this process;
    ``media_time`` is its position in the stream (seconds) when the source knows it.
    """

    index: int
    timestamp: float
    image: Any
    media_time: float | None = None

    @property
    def width(self) -> int:
        if isinstance(self.image, np.ndarray):
            return int(self.image.shape[1])
        return int(self.image.width)

    @property
    def height(self) -> int:
        if isinstance(self.image, np.ndarray):
            return int(self.image.shape[0])
        return int(self.image.height)

    def to_rgb(self, width: int | None = None, height: int | None = None) -> RGBImage:
        """The image as RGB, scaled to ``width`` x ``height`` if given. CPU work: call it off the loop."""
        if isinstance(self.image, np.ndarray):
            rgb: RGBImage = self.image
            if width is None or height is None or (width, height) == (self.width, self.height):
                return rgb
            from PIL import Image

            resized = Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR)
            return np.asarray(resized, dtype=np.uint8)
        if width is not None and height is not None and (width, height) != (self.width, self.height):
            return self.image.reformat(width=width, height=height, format="rgb24").to_ndarray()  # type: ignore[no-any-return]
        return self.image.to_ndarray(format="rgb24")  # type: ignore[no-any-return]

    def to_gray_thumbnail(self, width: int = 64, height: int = 48) -> npt.NDArray[np.float32]:
        """A small grayscale copy in 0..1, for comparing scenes cheaply."""
        if isinstance(self.image, np.ndarray):
            ys = np.linspace(0, self.height - 1, height).astype(np.intp)
            xs = np.linspace(0, self.width - 1, width).astype(np.intp)
            small = self.image[ys][:, xs].astype(np.float32)
            gray = small @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        else:
            gray = (
                self.image.reformat(width=width, height=height, format="gray").to_ndarray().astype(np.float32)
            )
        return gray / 255.0


T = TypeVar("T")


class RingBuffer(Generic[T]):
    """A bounded buffer that keeps the newest ``capacity`` items and wakes waiters on each push.

    Pushing never blocks and never grows memory past ``capacity``: old items fall out. Call
    :meth:`push` on the event loop (threads use ``loop.call_soon_threadsafe``).
    """

    def __init__(self, capacity: int, timestamp_of: Callable[[T], float]) -> None:
        if capacity < 1:
            raise ArgumentError("buffer capacity must be at least 1")
        self.capacity = capacity
        self.timestamp_of = timestamp_of
        self._items: deque[T] = deque(maxlen=capacity)
        self._waiters: list[asyncio.Future[None]] = []
        self.pushed = 0
        self.closed_reason: str | None = None

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: T) -> None:
        self._items.append(item)
        self.pushed += 1
        self._wake()

    def close(self, reason: str) -> None:
        """No more items will come (end of file, failure); waiters get a :class:`VideoError`."""
        self.closed_reason = reason
        self._wake()

    def reopen(self) -> None:
        self.closed_reason = None

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def latest(self) -> T | None:
        return self._items[-1] if self._items else None

    def recent(
        self, n: int | None = None, within_s: float | None = None, now: float | None = None
    ) -> list[T]:
        """The newest items, oldest first: at most ``n``, and no older than ``within_s`` seconds."""
        items = list(self._items)
        if within_s is not None:
            cutoff = (time.time() if now is None else now) - within_s
            items = [item for item in items if self.timestamp_of(item) >= cutoff]
        if n is not None:
            items = items[-n:] if n > 0 else []
        return items

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 (the API takes plain timeouts)
        """Wait until the next push (or close); raises ``TimeoutError`` after ``timeout`` seconds."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)


class FrameBuffer(RingBuffer[Frame]):
    """The newest frames of one source."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity, _frame_timestamp)

    async def wait_for_frame(self, timeout: float, newer_than: int | None = None) -> Frame:  # noqa: ASYNC109 (the API takes plain timeouts)
        """The newest frame with an index above ``newer_than`` (any frame when None).

        Returns at once when the buffer already holds one; raises :class:`VideoError` when none
        arrives within ``timeout`` seconds or the source has ended.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = self.latest()
            if frame is not None and (newer_than is None or frame.index > newer_than):
                return frame
            if self.closed_reason is not None:
                raise VideoError(f"no new frame: {self.closed_reason}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise VideoError(
                    f"no video frame arrived within {timeout:g} s: is the source started and sending?"
                )
            try:
                await self.wait(remaining)
            except TimeoutError:
                continue  # the loop raises the VideoError above


def _frame_timestamp(frame: Frame) -> float:
    return frame.timestamp


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """One decoded audio frame (an ``av.AudioFrame``) from a WebRTC peer."""

    index: int
    timestamp: float
    frame: Any

    @property
    def sample_rate(self) -> int:
        return int(self.frame.sample_rate)

    @property
    def samples(self) -> int:
        return int(self.frame.samples)


class AudioBuffer(RingBuffer[AudioChunk]):
    """The newest audio frames of one peer."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity, _chunk_timestamp)


def _chunk_timestamp(chunk: AudioChunk) -> float:
    return chunk.timestamp
