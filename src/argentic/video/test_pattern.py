"""A synthetic video source whose frames carry their own index as a bar code, and its sound a tone.

The top of each frame holds two rows of black/white cells spelling the frame index in binary
(:data:`CODE_BITS` bits, most significant first). The cells are large blocks, so the code survives
VP8 and JPEG compression and scaling, and :func:`read_frame_code` recovers the index exactly. Below
it, a colour field that changes every ``scene_every`` frames (a scene change) and a bar that moves
a little each frame (motion that is not a scene change).

The sound is one sine tone per frame, whose pitch spells the frame index modulo
:data:`TONE_STEPS` (:func:`tone_frequency`); :func:`read_tone_indices` reads the indices back
from a clip, so a test can tell which frames' sound went to the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import math
import time

import av
import numpy as np
import numpy.typing as npt

from argentic.errors import ArgumentError
from argentic.video.frames import AudioBuffer, AudioChunk, Frame, RGBImage
from argentic.video.source import BufferedSource

log = logging.getLogger(__name__)

CODE_BITS = 20
_CELLS_PER_ROW = CODE_BITS // 2
_PALETTE = np.array(
    # alternating dark and bright, so every scene cut changes the brightness a lot
    [[200, 40, 40], [240, 240, 90], [30, 30, 160], [90, 220, 120], [110, 30, 120], [250, 200, 230]],
    dtype=np.uint8,
)


#: The tone of frame i is TONE_BASE_HZ + (i % TONE_STEPS) * TONE_STEP_HZ: 400 to 6700 Hz, under
#: the 8 kHz that survives resampling to 16 kHz, and steps far apart for a 1/30 s window.
TONE_BASE_HZ = 400.0
TONE_STEP_HZ = 100.0
TONE_STEPS = 64
TONE_AMPLITUDE = 0.3
#: The rate the test pattern's sound is made at (WebRTC's Opus rate).
PATTERN_SAMPLE_RATE = 48_000


def tone_frequency(index: int) -> float:
    return TONE_BASE_HZ + (index % TONE_STEPS) * TONE_STEP_HZ


def frame_sample_bounds(index: int, rate: int, fps: float) -> tuple[int, int]:
    """Where frame ``index``'s sound starts and ends, in samples from frame 0 (rounded, so frames
    of a rate that fps does not divide still tile the timeline exactly)."""
    return round(index * rate / fps), round((index + 1) * rate / fps)


def render_tone(index: int, rate: int, fps: float, phase: float = 0.0) -> tuple[npt.NDArray[np.int16], float]:
    """Frame ``index``'s tone as 16-bit samples, starting at ``phase`` (radians), and the phase it
    ends at (so consecutive frames join without a click)."""
    start, end = frame_sample_bounds(index, rate, fps)
    step = 2 * np.pi * tone_frequency(index) / rate
    phases = phase + step * np.arange(end - start)
    samples = np.round(TONE_AMPLITUDE * 32767 * np.sin(phases)).astype(np.int16)
    return samples, float((phase + step * (end - start)) % (2 * np.pi))


def read_tone_indices(samples: npt.NDArray[np.int16], rate: int, fps: float) -> list[int]:
    """The tone index (frame index modulo :data:`TONE_STEPS`) of each frame-long stretch of
    ``samples``, which must start at a frame boundary; silent stretches read as -1."""
    indices: list[int] = []
    count = int(len(samples) * fps / rate + 1e-6)
    for k in range(count):
        start, end = frame_sample_bounds(k, rate, fps)
        quarter = (end - start) // 4
        # the middle half: the edges may hold the neighbours' tones after resampling
        window = samples[start + quarter : end - quarter].astype(np.float64)
        if len(window) < 8 or np.sqrt(np.mean(window**2)) < 100:
            indices.append(-1)
            continue
        spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window)), n=16384))
        peak_hz = float(np.argmax(spectrum)) * rate / 16384
        indices.append(round((peak_hz - TONE_BASE_HZ) / TONE_STEP_HZ) % TONE_STEPS)
    return indices


def _code_band(height: int) -> int:
    return max(8, (height // 6) // 2 * 2)


def render_pattern(
    index: int, width: int = 640, height: int = 480, scene_every: int | None = None
) -> RGBImage:
    """The test pattern for frame ``index`` as an RGB array."""
    if width < 2 * _CELLS_PER_ROW or height < 32:
        least = f"{2 * _CELLS_PER_ROW}x32"
        raise ArgumentError(f"test pattern needs at least {least} pixels, got {width}x{height}")
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

    ``limit`` stops after that many frames; the buffer then reports the end to waiters. With
    ``tone`` each frame also brings its tone (:func:`render_tone`, mono at 48 kHz, 1/fps seconds
    long) to the ``audio`` buffer, which keeps ``audio_buffer_s`` seconds; ``muted`` makes it silence.
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
        tone: bool = True,
        audio_buffer_s: float = 30.0,
    ) -> None:
        super().__init__(buffer_size)
        render_pattern(0, width, height)  # validate the size now, not in the task
        self.width = width
        self.height = height
        self.fps = fps
        self.scene_every = scene_every
        self.limit = limit
        self.tone = tone
        self.muted = False
        self.audio = AudioBuffer(max(1, math.ceil(audio_buffer_s * (fps or 30.0))))
        self._phase = 0.0
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
            now = time.time()
            self.buffer.push(Frame(index=index, timestamp=now, image=image, media_time=media_time))
            if self.tone:
                self.audio.push(AudioChunk(index=index, timestamp=now, frame=self._tone_frame(index)))
            index += 1
            produced += 1
            scheduled += 1
        self.buffer.close(f"the test pattern ended after {self.limit} frames")

    def _tone_frame(self, index: int) -> av.AudioFrame:
        samples, self._phase = render_tone(index, PATTERN_SAMPLE_RATE, self.fps or 30.0, self._phase)
        if self.muted:
            samples[:] = 0
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = PATTERN_SAMPLE_RATE
        frame.pts = frame_sample_bounds(index, PATTERN_SAMPLE_RATE, self.fps or 30.0)[0]
        frame.time_base = fractions.Fraction(1, PATTERN_SAMPLE_RATE)
        return frame
