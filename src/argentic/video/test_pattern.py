"""A synthetic video source whose frames carry their own index as a bar code.

The top of each frame holds two rows of black/white cells spelling the frame index in binary
(:data:`CODE_BITS` bits, most significant first). The cells are large blocks, so the code survives
VP8 and JPEG compression and scaling, and :func:`read_frame_code` recovers the index exactly. Below
it, a colour field that changes every ``scene_every`` frames (a scene change) and a bar that moves
a little each frame (motion that is not a scene change).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import numpy as np

from argentic.video.frames import Frame, RGBImage
from argentic.video.source import BufferedSource

log = logging.getLogger(__name__)

CODE_BITS = 20
_CELLS_PER_ROW = CODE_BITS // 2
_PALETTE = np.array(
    # alternating dark and bright, so every scene cut changes the brightness a lot
    [[200, 40, 40], [240, 240, 90], [30, 30, 160], [90, 220, 120], [110, 30, 120], [250, 200, 230]],
    dtype=np.uint8,
)


def _code_band(height: int) -> int:
    return max(8, (height // 6) // 2 * 2)


def render_pattern(
    index: int, width: int = 640, height: int = 480, scene_every: int | None = None
) -> RGBImage:
    """The test pattern for frame ``index`` as an RGB array."""
    if width < 2 * _CELLS_PER_ROW or height < 32:
        raise ValueError(f"test pattern needs at least {2 * _CELLS_PER_ROW}x32 pixels, got {width}x{height}")
    scene = index // scene_every if scene_every else 0
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = _PALETTE[scene % len(_PALETTE)]
    band = _code_band(height)
    bar_width = max(2, width // 32)
    x = (index * 2) % max(1, width - bar_width)
    image[band:, x : x + bar_width] = 235
    draw_frame_code(image, index)
    return image


def draw_frame_code(image: RGBImage, index: int) -> None:
    """Draw ``index`` into the top band of ``image`` (in place)."""
    height, width = image.shape[:2]
    band = _code_band(height)
    row_height = band // 2
    cell = width // _CELLS_PER_ROW
    value = index % (1 << CODE_BITS)
    for bit in range(CODE_BITS):
        on = (value >> (CODE_BITS - 1 - bit)) & 1
        row, col = divmod(bit, _CELLS_PER_ROW)
        image[row * row_height : (row + 1) * row_height, col * cell : (col + 1) * cell] = 255 if on else 0


def read_frame_code(image: RGBImage) -> int:
    """The index drawn by :func:`draw_frame_code`, read back from a (possibly compressed, scaled) image."""
    height, width = image.shape[:2]
    band = _code_band(height)
    row_height = band // 2
    cell = width // _CELLS_PER_ROW
    gray = image.astype(np.float32).mean(axis=2) if image.ndim == 3 else image.astype(np.float32)
    value = 0
    for bit in range(CODE_BITS):
        row, col = divmod(bit, _CELLS_PER_ROW)
        # the middle half of the cell: edges blur under compression
        y0, y1 = row * row_height + row_height // 4, (row + 1) * row_height - row_height // 4
        x0, x1 = col * cell + cell // 4, (col + 1) * cell - cell // 4
        value = (value << 1) | int(gray[y0:y1, x0:x1].mean() > 127)
    return value


class TestPatternSource(BufferedSource):
    """Frames of :func:`render_pattern` at ``fps`` (or as fast as the loop allows when ``fps`` is None).

    ``limit`` stops after that many frames; the buffer then reports the end to waiters.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        fps: float | None = 30.0,
        *,
        buffer_size: int = 90,
        scene_every: int | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(buffer_size)
        render_pattern(0, width, height)  # validate the size now, not in the task
        self.width = width
        self.height = height
        self.fps = fps
        self.scene_every = scene_every
        self.limit = limit
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self.buffer.reopen()
            self._task = asyncio.create_task(self._run(), name="test-pattern")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.buffer.close("the test pattern was stopped")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        index = self.buffer.pushed
        produced = 0
        start, scheduled = loop.time(), 0
        while self.limit is None or produced < self.limit:
            if self.fps:
                delay = start + scheduled / self.fps - loop.time()
                if delay < -1.0:  # fell far behind (a stalled loop): restart the schedule, do not burst
                    start, scheduled, delay = loop.time(), 0, 0.0
                await asyncio.sleep(max(0.0, delay))
            else:
                await asyncio.sleep(0)
            image = render_pattern(index, self.width, self.height, self.scene_every)
            media_time = (index / self.fps) if self.fps else None
            self.buffer.push(Frame(index=index, timestamp=time.time(), image=image, media_time=media_time))
            index += 1
            produced += 1
            scheduled += 1
        self.buffer.close(f"the test pattern ended after {self.limit} frames")
