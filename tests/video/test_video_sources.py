"""Frame sources: the test pattern, video files decoded with PyAV, the bounded buffer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from argentic.errors import ConfigError, VideoError
from argentic.video import (
    CameraSource,
    FileSource,
    Frame,
    FrameBuffer,
    FrameSource,
    TestPatternSource,
    read_frame_code,
)
from argentic.video.test_pattern import CODE_BITS, render_pattern

VideoWriter = Callable[..., Path]  # the pattern_video fixture


@pytest.mark.parametrize("index", [0, 1, 2, 77, 4095, (1 << CODE_BITS) - 1])
@pytest.mark.parametrize("size", [(320, 240), (640, 480), (160, 120)])
def test_frame_code_reads_back_exactly(index: int, size: tuple[int, int]) -> None:
    assert read_frame_code(render_pattern(index, *size)) == index


def test_frame_buffer_keeps_only_the_newest() -> None:
    buffer = FrameBuffer(5)
    for index in range(100):
        buffer.push(Frame(index=index, timestamp=1000.0 + index, image=np.zeros((2, 2, 3), np.uint8)))
    assert len(buffer) == 5
    assert [f.index for f in buffer.recent()] == [95, 96, 97, 98, 99]
    assert [f.index for f in buffer.recent(2)] == [98, 99]
    assert [f.index for f in buffer.recent(within_s=2.5, now=1099.0)] == [97, 98, 99]
    assert buffer.pushed == 100


async def test_wait_for_frame_times_out_with_a_clear_error() -> None:
    buffer = FrameBuffer(3)
    with pytest.raises(VideoError, match="no video frame arrived"):
        await buffer.wait_for_frame(0.05)


async def test_wait_for_frame_wakes_on_push_and_reports_the_end() -> None:
    buffer = FrameBuffer(3)
    waiter = asyncio.create_task(buffer.wait_for_frame(5.0))
    await asyncio.sleep(0)
    buffer.push(Frame(index=0, timestamp=0.0, image=np.zeros((2, 2, 3), np.uint8)))
    assert (await waiter).index == 0
    buffer.close("the feed ended")
    with pytest.raises(VideoError, match="the feed ended"):
        await buffer.wait_for_frame(5.0, newer_than=0)


async def test_test_pattern_source_produces_numbered_frames() -> None:
    source = TestPatternSource(160, 120, fps=None, buffer_size=4, limit=20)
    assert isinstance(source, FrameSource)
    await source.start()
    with pytest.raises(VideoError, match="ended after 20 frames"):
        while True:
            frame = await source.wait_for_frame(5.0, newer_than=(source.latest() or Frame(-1, 0, None)).index)
    frames = source.recent()
    assert [f.index for f in frames] == [16, 17, 18, 19]
    assert [read_frame_code(f.to_rgb()) for f in frames] == [16, 17, 18, 19]
    assert frame.index == 19
    await source.stop()


async def test_file_source_decodes_every_frame_in_order(pattern_video: VideoWriter) -> None:
    path = pattern_video(frames=40, width=320, height=240)
    source = FileSource(path, realtime=False, buffer_size=100)
    await source.start()
    with pytest.raises(VideoError, match="ended"):
        await source.wait_for_frame(10.0, newer_than=1_000)
    frames = source.recent()
    assert source.error is None
    assert [f.index for f in frames] == list(range(40))
    assert [read_frame_code(f.to_rgb()) for f in frames] == list(range(40))
    assert frames[0].width == 320 and frames[0].height == 240
    assert frames[10].media_time == pytest.approx(10 / 30, abs=1e-3)
    await source.stop()


async def test_file_source_keeps_a_bounded_buffer_of_the_newest(pattern_video: VideoWriter) -> None:
    path = pattern_video(frames=60)
    source = FileSource(path, realtime=False, buffer_size=8)
    await source.start()
    with pytest.raises(VideoError):
        await source.wait_for_frame(10.0, newer_than=1_000)
    assert [read_frame_code(f.to_rgb()) for f in source.recent()] == list(range(52, 60))
    assert source.frames_seen == 60


async def test_file_source_loops_with_continuing_indices(pattern_video: VideoWriter) -> None:
    path = pattern_video(frames=10)
    source = FileSource(path, realtime=False, loop=True, buffer_size=50)
    await source.start()
    frame = await source.wait_for_frame(10.0)
    while frame.index < 25:
        frame = await source.wait_for_frame(10.0, newer_than=frame.index)
    await source.stop()
    frames = source.recent()
    # the index keeps counting, the picture starts over
    assert all(read_frame_code(f.to_rgb()) == f.index % 10 for f in frames)


async def test_file_source_paced_in_real_time_delivers_the_newest(pattern_video: VideoWriter) -> None:
    path = pattern_video(frames=300, fps=30)  # ten seconds of video
    source = FileSource(path, realtime=True, buffer_size=10)
    await source.start()
    first = await source.wait_for_frame(10.0)
    second = await source.wait_for_frame(10.0, newer_than=first.index)
    await source.stop()
    # paced: a ten-second file is not finished after two frames, and stop ends it
    assert source.frames_seen < 300
    assert read_frame_code(second.to_rgb()) == second.index


async def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="does not exist"):
        await FileSource(tmp_path / "nope.mp4").start()


async def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.mp4"
    path.write_bytes(b"this is not a video at all" * 100)
    with pytest.raises(VideoError, match=r"cannot open video .*garbage\.mp4"):
        await FileSource(path).start()


async def test_truncated_file_ends_with_the_frames_it_had(pattern_video: VideoWriter, tmp_path: Path) -> None:
    whole = pattern_video(frames=60).read_bytes()
    path = tmp_path / "cut.mp4"
    # an MP4 whose index (moov, written last) is lost: unreadable; keep the header, lose the end
    path.write_bytes(whole[: len(whole) // 2])
    source = FileSource(path, realtime=False)
    try:
        await source.start()
    except VideoError as exc:
        assert "cut.mp4" in str(exc)
        return
    with pytest.raises(VideoError):
        await source.wait_for_frame(10.0, newer_than=10_000)
    assert source.finished


async def test_missing_camera_is_a_clear_error() -> None:
    with pytest.raises(VideoError, match="video device /dev/video-none does not exist"):
        await CameraSource("/dev/video-none").start()


def test_the_configured_source() -> None:
    from argentic.config import VideoConfig
    from argentic.video import source_from_config

    assert isinstance(source_from_config(VideoConfig()), TestPatternSource)
    assert isinstance(source_from_config(VideoConfig(source="camera:/dev/video3")), CameraSource)
    assert isinstance(source_from_config(VideoConfig(source="clip.mp4")), FileSource)
    with pytest.raises(ConfigError, match="needs a messager"):
        source_from_config(VideoConfig(source="webrtc"))
