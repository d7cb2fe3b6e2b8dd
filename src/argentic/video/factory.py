"""The frame source that ``video.source`` names: ``test_pattern``, ``webrtc``, ``camera`` (or
``camera:/dev/video1``), or a file path/URL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from argentic.config import VideoConfig
from argentic.errors import ConfigError
from argentic.video.file_source import AudioFileSource, CameraSource, FileSource
from argentic.video.source import FrameSource
from argentic.video.test_pattern import TestPatternSource
from argentic.video.webrtc_driver import WebRTCDriver

if TYPE_CHECKING:
    from argentic.messaging import Messager


def source_from_config(
    config: VideoConfig, messager: Messager | None = None, *, loop: bool = True
) -> FrameSource:
    """The configured source (not started). A file plays at its own rate and, with ``loop``, repeats."""
    if config.source == "test_pattern":
        return TestPatternSource(640, 480, fps=30, buffer_size=config.buffer_size, scene_every=150)
    if config.source == "camera" or config.source.startswith("camera:"):
        device = config.source.partition(":")[2] or "/dev/video0"
        return CameraSource(device, buffer_size=config.buffer_size)
    if config.source == "webrtc":
        if messager is None:
            raise ConfigError("video.source = 'webrtc' needs a messager for signaling")
        return WebRTCDriver.from_config(messager, config)
    return FileSource(config.source, realtime=True, loop=loop, buffer_size=config.buffer_size)


def audio_source_from_config(config: VideoConfig) -> AudioFileSource | None:
    """The sound file ``video.audio_source`` names (not started), played at its own rate and
    looping; None when the sound is the video source's own."""
    if config.audio_source is None:
        return None
    return AudioFileSource(config.audio_source, realtime=True, loop=True)
