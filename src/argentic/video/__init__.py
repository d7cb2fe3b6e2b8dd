"""Video for agents: frame sources, WebRTC with MQTT signaling, frame sampling and JPEG encoding,
and the sound that comes with them (clips resampled for the model, as WAV)."""

from argentic.video.audio import (
    MODEL_SAMPLE_RATE,
    AudioClip,
    AudioSource,
    SoundLevelDetector,
    read_wav,
    recent_clip,
    wav_bytes,
)
from argentic.video.encode import EncodedFrame, encode_frame, encode_frames, encode_jpeg, fit_within
from argentic.video.factory import audio_source_from_config, source_from_config
from argentic.video.file_source import AudioFileSource, CameraSource, FileSource
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
from argentic.video.test_pattern import (
    TestPatternSource,
    read_frame_code,
    read_tone_indices,
    render_pattern,
    tone_frequency,
)
from argentic.video.webrtc_driver import WebRTCDriver
from argentic.video.webrtc_sender import WebRTCSender

__all__ = [
    "MODEL_SAMPLE_RATE",
    "AudioBuffer",
    "AudioChunk",
    "AudioClip",
    "AudioFileSource",
    "AudioSource",
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
    "SoundLevelDetector",
    "TestPatternSource",
    "WebRTCDriver",
    "WebRTCSender",
    "audio_source_from_config",
    "encode_frame",
    "encode_frames",
    "encode_jpeg",
    "fit_within",
    "make_policy",
    "read_frame_code",
    "read_tone_indices",
    "read_wav",
    "recent_clip",
    "render_pattern",
    "source_from_config",
    "tone_frequency",
    "wav_bytes",
]
