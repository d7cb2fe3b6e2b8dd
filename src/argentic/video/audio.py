"""Sound for a multimodal model: the last seconds of a source's audio, resampled and sent as WAV.

A source that hears keeps its decoded ``av.AudioFrame`` chunks in an :class:`AudioBuffer` named
``audio`` (the WebRTC driver, a video file with an audio track, a WAV file, the test pattern).
:func:`recent_clip` takes the newest chunks covering the seconds asked for, resamples them with
PyAV to mono 16-bit PCM at the model's rate (16 kHz for Gemma 3n) and cuts exactly that many
seconds from the end; :meth:`AudioClip.to_wav` makes the file that goes in an audio part.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import math
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import av
import numpy as np
import numpy.typing as npt

from argentic.errors import ArgumentError, VideoError
from argentic.video.frames import AudioBuffer, AudioChunk

#: What Gemma 3n's audio encoder takes: 16 kHz mono (vLLM resamples other rates, but sending this
#: rate keeps the request small and the resampling in one known place).
MODEL_SAMPLE_RATE = 16_000
#: The longest clip Gemma 3n's feature extractor reads; longer audio is cut by the server.
MAX_CLIP_S = 30.0

Samples = npt.NDArray[np.int16]


@runtime_checkable
class AudioSource(Protocol):
    """A source that keeps the sound it receives (its frame source side is separate)."""

    audio: AudioBuffer

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class AudioClip:
    """Mono 16-bit samples at ``sample_rate``; ``first_index``/``last_index`` are the source's
    chunk indices it came from, ``end_timestamp`` the wall-clock arrival of the newest one."""

    samples: Samples
    sample_rate: int
    first_index: int
    last_index: int
    end_timestamp: float

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate

    def to_wav(self) -> bytes:
        return wav_bytes(self.samples, self.sample_rate)

    def level_dbfs(self) -> float:
        return level_dbfs(self.samples)


def wav_bytes(samples: Samples, sample_rate: int) -> bytes:
    """A mono 16-bit PCM WAV file of ``samples``."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(np.ascontiguousarray(samples, dtype="<i2").tobytes())
    return out.getvalue()


def read_wav(data: bytes) -> tuple[Samples, int]:
    """The samples (mono 16-bit) and rate of a WAV file made by :func:`wav_bytes`."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise ArgumentError(
                f"expected mono 16-bit WAV, got {wav.getnchannels()} channels of {wav.getsampwidth()} bytes"
            )
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)
    return samples, rate


def level_dbfs(samples: Samples) -> float:
    """RMS level in dB relative to full scale: 0 for a full-scale square wave, -inf for silence."""
    if len(samples) == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64) / 32768.0))))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def resample(frames: Sequence[Any], rate: int = MODEL_SAMPLE_RATE) -> Samples:
    """``av.AudioFrame`` s to one mono 16-bit array at ``rate``. Blocking (CPU work).

    A resampler is fed a run of frames of one format, layout and rate and then flushed, so no
    samples are left inside it; a source that changes format mid-way starts a new run.
    """
    pieces: list[Samples] = []

    def key(frame: Any) -> tuple[str, str, int]:
        return frame.format.name, frame.layout.name, frame.sample_rate

    for _, run in itertools.groupby(frames, key=key):
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        for frame in run:
            pieces += [_mono_s16(out) for out in resampler.resample(frame)]
        pieces += [_mono_s16(out) for out in resampler.resample(None)]
    if not pieces:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate(pieces).astype(np.int16, copy=False)


def _mono_s16(frame: Any) -> Samples:
    return np.asarray(frame.to_ndarray(), dtype=np.int16).reshape(-1)


def newest_chunks(buffer: AudioBuffer, seconds: float) -> list[AudioChunk]:
    """The newest chunks that together last at least ``seconds`` (all there are, if fewer), oldest first."""
    chunks: list[AudioChunk] = []
    total = 0.0
    for chunk in reversed(buffer.recent()):
        chunks.append(chunk)
        total += chunk.samples / chunk.sample_rate
        if total >= seconds - 1e-9:  # 30 frames of 1/30 s add up to a hair under 1.0
            break
    chunks.reverse()
    return chunks


def clip_from_buffer(buffer: AudioBuffer, seconds: float, rate: int = MODEL_SAMPLE_RATE) -> AudioClip | None:
    """The last ``seconds`` of ``buffer`` at ``rate`` (shorter when less was heard), None when it
    holds nothing. Blocking: :func:`recent_clip` runs it off the loop."""
    if seconds <= 0:
        raise ArgumentError(f"seconds must be positive, got {seconds}")
    chunks = newest_chunks(buffer, min(seconds, MAX_CLIP_S))
    if not chunks:
        return None
    samples = resample([chunk.frame for chunk in chunks], rate)
    wanted = round(min(seconds, MAX_CLIP_S) * rate)
    return AudioClip(
        samples=samples[-wanted:] if len(samples) > wanted else samples,
        sample_rate=rate,
        first_index=chunks[0].index,
        last_index=chunks[-1].index,
        end_timestamp=chunks[-1].timestamp,
    )


async def recent_clip(source: AudioSource, seconds: float, rate: int = MODEL_SAMPLE_RATE) -> AudioClip | None:
    """:func:`clip_from_buffer` of ``source``'s audio, in a worker thread."""
    return await asyncio.to_thread(clip_from_buffer, source.audio, seconds, rate)


def buffered_s(buffer: AudioBuffer) -> float:
    """How many seconds of sound ``buffer`` holds."""
    return sum(chunk.samples / chunk.sample_rate for chunk in buffer.recent())


async def wait_for_sound(buffer: AudioBuffer, seconds: float, timeout: float) -> None:  # noqa: ASYNC109 (the API takes plain timeouts)
    """Wait until ``buffer`` holds ``seconds`` of sound (a feed that just started has less);
    raises :class:`VideoError` after ``timeout`` seconds or when the source has ended."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while buffered_s(buffer) < seconds:
        remaining = deadline - loop.time()
        if buffer.closed_reason is not None or remaining <= 0:
            raise VideoError(
                f"{buffered_s(buffer):.1f} s of sound after {timeout:g} s, not {seconds:g} s"
                + (f" ({buffer.closed_reason})" if buffer.closed_reason else "")
            )
        with contextlib.suppress(TimeoutError):
            await buffer.wait(remaining)


def audio_of(source: object) -> AudioBuffer | None:
    """The audio buffer of ``source`` when it keeps one (a file known to have no audio track
    keeps none)."""
    if getattr(source, "has_audio", None) is False:
        return None
    buffer = getattr(source, "audio", None)
    return buffer if isinstance(buffer, AudioBuffer) else None


class SoundLevelDetector:
    """Tells when the sound gets loud: True when the level of the last ``window_s`` seconds rises
    above ``threshold_dbfs`` after having been below it (or at the first loud check)."""

    def __init__(self, threshold_dbfs: float = -30.0, window_s: float = 0.5) -> None:
        self.threshold_dbfs = threshold_dbfs
        self.window_s = window_s
        self.loud = False
        self.last_level = -math.inf

    def check(self, buffer: AudioBuffer) -> bool:
        """Blocking (resampling a short window): call it off the loop."""
        clip = clip_from_buffer(buffer, self.window_s) if len(buffer) else None
        self.last_level = clip.level_dbfs() if clip is not None else -math.inf
        was_loud, self.loud = self.loud, self.last_level > self.threshold_dbfs
        return self.loud and not was_loud
