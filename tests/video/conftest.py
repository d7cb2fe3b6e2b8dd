"""Video test fixtures: real video files written with PyAV, messagers on the shared mosquitto."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from argentic.messaging import Messager
from argentic.testing.messagers import connected_messagers
from argentic.testing.mosquitto import MosquittoBroker
from argentic.video import render_pattern
from argentic.video.test_pattern import render_tone

VideoWriter = Callable[..., Path]


def write_pattern_video(
    path: Path,
    frames: int = 30,
    width: int = 320,
    height: int = 240,
    fps: int = 30,
    scene_every: int | None = None,
    audio_codec: str | None = None,
) -> Path:
    """An H.264 file whose frame i shows the test pattern of index i; with ``audio_codec`` (e.g.
    pcm_s16le in .mkv, aac in .mp4) a 48 kHz mono track whose sound during frame i is its tone."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast"}
        # every stream is added before the first packet is written
        audio = container.add_stream(audio_codec, rate=48_000, layout="mono") if audio_codec else None
        for index in range(frames):
            image = render_pattern(index, width, height, scene_every)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio is not None:
            _write_tone_track(container, audio, frames, fps)
    return path


def _write_tone_track(container: Any, audio: Any, frames: int, fps: int) -> None:
    rate = audio.codec_context.sample_rate
    phase = 0.0
    tones = []
    for index in range(frames):
        samples, phase = render_tone(index, rate, fps, phase)
        tones.append(samples)
    pcm = np.concatenate(tones)
    sample_format = audio.codec_context.format.name
    step = 1024
    for start in range(0, len(pcm), step):
        piece = pcm[start : start + step].reshape(1, -1)
        if sample_format.startswith("flt"):
            frame = av.AudioFrame.from_ndarray(
                (piece / 32768).astype(np.float32), format=sample_format, layout="mono"
            )
        else:
            frame = av.AudioFrame.from_ndarray(piece, format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        for packet in audio.encode(frame):
            container.mux(packet)
    for packet in audio.encode():
        container.mux(packet)


@pytest.fixture
def pattern_video(tmp_path: Path) -> VideoWriter:
    """Call with frames=, width=, height=, fps=, scene_every=, audio_codec= (and suffix=".mkv" for a
    PCM track) to get the path of a new video file."""
    counter = iter(range(1_000_000))

    def write(suffix: str = ".mp4", **kwargs: Any) -> Path:
        return write_pattern_video(tmp_path / f"pattern{next(counter)}{suffix}", **kwargs)

    return write


@pytest.fixture
async def messagers(
    mosquitto: MosquittoBroker, namespace: str
) -> AsyncIterator[Callable[[], Awaitable[Messager]]]:
    """Connected messagers on the shared broker, each a separate MQTT client, closed at the end."""

    def build() -> Messager:
        return Messager(
            "127.0.0.1", mosquitto.port, namespace=namespace, persistent=False, request_timeout_s=20
        )

    async with connected_messagers(build) as make:
        yield make
