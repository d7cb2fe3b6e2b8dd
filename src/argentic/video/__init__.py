"""Video for agents: frame sources, WebRTC with MQTT signaling, frame sampling and JPEG encoding."""

from argentic.video.encode import EncodedFrame, encode_frame, encode_frames, encode_jpeg, fit_within
from argentic.video.factory import source_from_config
from argentic.video.file_source import CameraSource, FileSource
from argentic.video.frames import AudioBuffer, AudioChunk, Frame, FrameBuffer, RingBuffer
from argentic.video.sampling import (
    FramesOverWindow,
    LatestFrame,
    SamplingPolicy,
    SceneChangeDetector,
    SceneChanges,
    make_policy,
)
from argentic.video.source import BufferedSource, FrameSource
from argentic.video.test_pattern import TestPatternSource, read_frame_code, render_pattern
from argentic.video.webrtc_driver import WebRTCDriver
from argentic.video.webrtc_sender import WebRTCSender

__all__ = [
    "AudioBuffer",
    "AudioChunk",
    "BufferedSource",
    "CameraSource",
    "EncodedFrame",
    "FileSource",
    "Frame",
    "FrameBuffer",
    "FrameSource",
    "FramesOverWindow",
    "LatestFrame",
    "RingBuffer",
    "SamplingPolicy",
    "SceneChangeDetector",
    "SceneChanges",
    "TestPatternSource",
    "WebRTCDriver",
    "WebRTCSender",
    "encode_frame",
    "encode_frames",
    "encode_jpeg",
    "fit_within",
    "make_policy",
    "read_frame_code",
    "render_pattern",
    "source_from_config",
]
