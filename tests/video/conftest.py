"""Video test fixtures: real video files written with PyAV, messagers on the shared mosquitto."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import av
import pytest

from argentic.messaging import Messager
from argentic.testing.messagers import connected_messagers
from argentic.testing.mosquitto import MosquittoBroker
from argentic.video import render_pattern

VideoWriter = Callable[..., Path]


def write_pattern_video(
    path: Path,
    frames: int = 30,
    width: int = 320,
    height: int = 240,
    fps: int = 30,
    scene_every: int | None = None,
) -> Path:
    """An H.264 file whose frame i shows the test pattern of index i."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast"}
        for index in range(frames):
            image = render_pattern(index, width, height, scene_every)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def pattern_video(tmp_path: Path) -> VideoWriter:
    """Call with frames=, width=, height=, fps=, scene_every= to get the path of a new video file."""
    counter = iter(range(1_000_000))

    def write(**kwargs: int | None) -> Path:
        return write_pattern_video(tmp_path / f"pattern{next(counter)}.mp4", **kwargs)  # type: ignore[arg-type]

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
