"""Sampling policies and JPEG encoding, on test-pattern frames."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from argentic.video import (
    Frame,
    FramesOverWindow,
    LatestFrame,
    SceneChangeDetector,
    SceneChanges,
    TestPatternSource,
    encode_frame,
    encode_frames,
    fit_within,
    read_frame_code,
    render_pattern,
)
from argentic.video.encode import decode_data_url
from argentic.video.sampling import evenly_spaced


def pattern_frame(index: int, scene_every: int | None = None, size: tuple[int, int] = (320, 240)) -> Frame:
    return Frame(
        index=index, timestamp=time.time(), image=render_pattern(index, *size, scene_every=scene_every)
    )


def filled_source(count: int, scene_every: int | None = None) -> TestPatternSource:
    source = TestPatternSource(320, 240, fps=None, buffer_size=count)
    for index in range(count):
        source.buffer.push(pattern_frame(index, scene_every))
    return source


def test_evenly_spaced_includes_the_newest() -> None:
    frames = [pattern_frame(i) for i in range(10)]
    assert [f.index for f in evenly_spaced(frames, 3)] == [0, 4, 9]
    assert [f.index for f in evenly_spaced(frames, 1)] == [9]
    assert len(evenly_spaced(frames, 20)) == 10
    assert evenly_spaced(frames, 0) == []


async def test_policies_respect_the_limit() -> None:
    source = filled_source(30)
    assert [f.index for f in await LatestFrame().sample(source, 1)] == [29]
    assert [f.index for f in await FramesOverWindow(frames=5, window_s=60).sample(source, 2)] == [0, 29]
    assert len(await FramesOverWindow(frames=5, window_s=60).sample(source, 8)) == 5
    assert await LatestFrame().sample(TestPatternSource(160, 120), 1) == []  # no frames yet


async def test_scene_changes_pick_one_frame_per_scene() -> None:
    source = filled_source(40, scene_every=10)
    frames = await SceneChanges(frames=4, window_s=60).sample(source, 4)
    # scenes start at 0, 10, 20; the current scene is shown as it looks now (frame 39)
    assert [f.index for f in frames] == [0, 10, 20, 39]
    assert [f.index for f in await SceneChanges(frames=4, window_s=60).sample(source, 2)] == [20, 39]


def test_detector_ignores_motion_and_sees_cuts() -> None:
    detector = SceneChangeDetector(0.12)
    assert detector.changed(pattern_frame(0, 30))
    assert not any(detector.changed(pattern_frame(i, 30)) for i in range(1, 30))
    assert detector.changed(pattern_frame(30, 30))


@pytest.mark.parametrize(
    ("size", "limit", "expected"),
    [((640, 480), 768, (640, 480)), ((1920, 1080), 768, (768, 432)), ((480, 640), 256, (192, 256))],
)
def test_fit_within_keeps_the_aspect_ratio(
    size: tuple[int, int], limit: int, expected: tuple[int, int]
) -> None:
    assert fit_within(*size, limit) == expected


async def test_encoding_gives_valid_scaled_jpegs_for_arrays_and_av_frames() -> None:
    import av

    array_frame = pattern_frame(1234, size=(640, 480))
    av_frame = Frame(
        index=5,
        timestamp=0.0,
        image=av.VideoFrame.from_ndarray(render_pattern(5, 640, 480)).reformat(format="yuv420p"),
    )
    encoded = await encode_frames([array_frame, av_frame], max_side=320, quality=85)
    for item, code in zip(encoded, [1234, 5], strict=True):
        image = Image.open(io.BytesIO(decode_data_url(item.url)))
        assert image.format == "JPEG" and image.size == (320, 240) == (item.width, item.height)
        assert read_frame_code(np.asarray(image.convert("RGB"))) == code
    assert encode_frame(array_frame).width == 640
