"""Sound for the model: WAV encoding, PyAV resampling, the test pattern's tone, and audio from a
video file's track, a WAV file and a WebRTC peer, checked by the tone each frame's sound carries."""

from __future__ import annotations

import asyncio
import io
import itertools
import math
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from argentic.errors import VideoError
from argentic.llm import AudioPart, ChatMessage
from argentic.llm.wire import check_media_limits, message_to_wire
from argentic.messaging import Messager
from argentic.testing.waiting import wait_until
from argentic.video import (
    AudioFileSource,
    FileSource,
    SoundLevelDetector,
    TestPatternSource,
    WebRTCDriver,
    WebRTCSender,
    read_tone_indices,
    read_wav,
    wav_bytes,
)
from argentic.video.audio import clip_from_buffer, level_dbfs, resample
from argentic.video.frames import AudioBuffer
from argentic.video.test_pattern import TONE_STEPS, render_tone

VideoWriter = Callable[..., Path]
MessagerFactory = Callable[[], Awaitable[Messager]]
LOOPBACK = ["127.0.0.1"]


def expected_tones(first: int, last: int) -> list[int]:
    return [i % TONE_STEPS for i in range(first, last + 1)]


def sine_frames(
    freq: float, seconds: float, rate: int, layout: str = "stereo", fmt: str = "fltp", per_frame: int = 1024
) -> list[av.AudioFrame]:
    """A sine as av frames of ``fmt``/``layout``: planar float stereo is what AAC decoders give,
    packed 16-bit what WebRTC's Opus decoder gives."""
    total = int(seconds * rate)
    t = np.arange(total) / rate
    sine = 0.5 * np.sin(2 * np.pi * freq * t)
    values = (sine * 32767).astype(np.int16) if fmt == "s16" else sine.astype(np.float32)
    channels = 2 if layout == "stereo" else 1
    frames = []
    for start in range(0, total, per_frame):
        piece = values[start : start + per_frame]
        # planar: one row per channel; packed: one row, channels interleaved
        chunk = np.tile(piece, (channels, 1)) if fmt.endswith("p") else np.repeat(piece, channels)[None, :]
        frame = av.AudioFrame.from_ndarray(chunk, format=fmt, layout=layout)
        frame.sample_rate = rate
        frames.append(frame)
    return frames


def peak_hz(samples: npt.NDArray[np.int16], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.argmax(spectrum)) * rate / len(samples)


def best_aligned_tones(samples: npt.NDArray[np.int16], rate: int, fps: float) -> list[int]:
    """Tone indices read at the offset (within one frame) where they run most consecutively: audio
    that crossed a codec is not cut at frame boundaries."""
    frame_len = rate / fps
    best: list[int] = []
    best_score = -1
    for step in range(8):
        offset = round(step * frame_len / 8)
        tones = read_tone_indices(samples[offset:], rate, fps)
        score = sum((b - a) % TONE_STEPS == 1 for a, b in itertools.pairwise(tones))
        if score > best_score:
            best, best_score = tones, score
    return best


# --- WAV and resampling ---------------------------------------------------------------------


def test_wav_bytes_is_a_mono_16_bit_wav_that_other_readers_read() -> None:
    samples = (np.sin(np.arange(16_000) * 2 * np.pi * 440 / 16_000) * 10_000).astype(np.int16)
    data = wav_bytes(samples, 16_000)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    with wave.open(io.BytesIO(data)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, 16_000)
        assert reader.getnframes() == 16_000
    back, rate = read_wav(data)
    assert rate == 16_000 and np.array_equal(back, samples)
    # FFmpeg reads it too (as vLLM's audio loader would)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "pcm_s16le" and stream.sample_rate == 16_000
        decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)])
    assert np.array_equal(decoded, samples)


@pytest.mark.parametrize(
    ("rate", "layout", "fmt"),
    [(48_000, "stereo", "fltp"), (44_100, "mono", "s16"), (48_000, "stereo", "s16")],
)
def test_resampling_to_16_khz_mono_keeps_length_and_pitch(rate: int, layout: str, fmt: str) -> None:
    frames = sine_frames(1000.0, 2.0, rate, layout=layout, fmt=fmt)
    samples = resample(frames, 16_000)
    assert samples.dtype == np.int16
    assert abs(len(samples) - 32_000) <= 2, "2 s at 16 kHz"
    assert abs(peak_hz(samples, 16_000) - 1000.0) < 5
    assert -10 < level_dbfs(samples) < -8, "a 0.5-amplitude sine is about -9 dBFS"


def test_level_of_silence_is_minus_infinity() -> None:
    assert level_dbfs(np.zeros(100, dtype=np.int16)) == -math.inf
    assert level_dbfs(np.zeros(0, dtype=np.int16)) == -math.inf


# --- the test pattern's tone ----------------------------------------------------------------


def test_each_frames_tone_reads_back_as_its_index() -> None:
    phase = 0.0
    pieces = []
    for index in range(250, 310):
        samples, phase = render_tone(index, 16_000, 30, phase)
        pieces.append(samples)
    assert read_tone_indices(np.concatenate(pieces), 16_000, 30) == expected_tones(250, 309)


async def test_a_clip_of_the_test_pattern_holds_the_last_seconds_of_its_frames() -> None:
    source = TestPatternSource(64, 48, fps=None, limit=150)
    await source.start()
    with pytest.raises(VideoError, match="ended"):
        await source.buffer.wait_for_frame(30, newer_than=10_000)
    clip = clip_from_buffer(source.audio, 2.0)
    assert clip is not None
    assert clip.sample_rate == 16_000 and len(clip.samples) == 32_000
    assert (clip.first_index, clip.last_index) == (90, 149), "60 frames of sound at 30 fps"
    assert read_tone_indices(clip.samples, 16_000, 30) == expected_tones(90, 149)
    # through a WAV file and back, as it goes to the model
    samples, rate = read_wav(clip.to_wav())
    assert rate == 16_000 and read_tone_indices(samples, rate, 30) == expected_tones(90, 149)


async def test_a_short_buffer_gives_what_it_has() -> None:
    source = TestPatternSource(64, 48, fps=None, limit=15)
    await source.start()
    with pytest.raises(VideoError, match="ended"):
        await source.buffer.wait_for_frame(30, newer_than=10_000)
    clip = clip_from_buffer(source.audio, 5.0)
    assert clip is not None and abs(clip.duration_s - 0.5) < 0.01
    assert clip_from_buffer(AudioBuffer(4), 1.0) is None


async def test_sound_level_triggers_when_the_tone_starts_and_not_while_it_lasts() -> None:
    source = TestPatternSource(64, 48, fps=None, limit=30)
    source.muted = True
    detector = SoundLevelDetector(threshold_dbfs=-30, window_s=0.5)
    await source.start()
    with pytest.raises(VideoError, match="ended"):
        await source.buffer.wait_for_frame(30, newer_than=10_000)
    assert detector.check(source.audio) is False and detector.last_level == -math.inf
    source.muted = False
    source.limit = 30
    await source.start()  # 30 more frames, now with their tone
    with pytest.raises(VideoError, match="ended"):
        await source.buffer.wait_for_frame(30, newer_than=10_000)
    assert detector.check(source.audio) is True, "the tone started"
    assert -14 < detector.last_level < -8, "a 0.3-amplitude sine is about -13.5 dBFS"
    assert detector.check(source.audio) is False, "still loud: no new trigger"


# --- files ----------------------------------------------------------------------------------


async def drain(source: FileSource) -> None:
    await source.start()
    await wait_until(lambda: source.finished, 60, "the file to be decoded")
    await source.stop()  # joins the decode thread; its last pushes then run on the loop
    await asyncio.sleep(0)


async def test_a_video_files_audio_track_is_heard_with_its_frames(pattern_video: VideoWriter) -> None:
    path = pattern_video(suffix=".mkv", frames=90, width=160, height=120, audio_codec="pcm_s16le")
    source = FileSource(path, realtime=False)
    await drain(source)
    assert source.frames_seen == 90
    clip = clip_from_buffer(source.audio, 2.0)
    assert clip is not None and len(clip.samples) == 32_000
    assert read_tone_indices(clip.samples, 16_000, 30) == expected_tones(30, 89)


async def test_an_aac_track_is_heard_too(pattern_video: VideoWriter) -> None:
    path = pattern_video(frames=90, width=160, height=120, audio_codec="aac")
    source = FileSource(path, realtime=False)
    await drain(source)
    clip = clip_from_buffer(source.audio, 2.0)
    assert clip is not None and abs(len(clip.samples) - 32_000) <= 1
    tones = best_aligned_tones(clip.samples, 16_000, 30)
    # a lossy codec and its priming delay: the tones still run in order to the last frame's
    inner = tones[2:-2]
    assert sum((b - a) % TONE_STEPS == 1 for a, b in itertools.pairwise(inner)) >= len(inner) - 3
    assert (89 - tones[-1]) % TONE_STEPS <= 2


async def test_a_wav_file_is_an_audio_source(tmp_path: Path) -> None:
    phase = 0.0
    pieces = []
    for index in range(60):
        samples, phase = render_tone(index, 22_050, 30, phase)
        pieces.append(samples)
    path = tmp_path / "tone.wav"
    path.write_bytes(wav_bytes(np.concatenate(pieces), 22_050))
    source = AudioFileSource(path, realtime=False, loop=False)
    await drain(source)
    assert source.frames_seen == 0 and source.audio.pushed > 0
    clip = clip_from_buffer(source.audio, 1.0)
    assert clip is not None and len(clip.samples) == 16_000
    assert read_tone_indices(clip.samples, 16_000, 30) == expected_tones(30, 59)


async def test_a_file_without_sound_is_refused_as_an_audio_source(pattern_video: VideoWriter) -> None:
    with pytest.raises(VideoError, match="no audio stream"):
        await AudioFileSource(pattern_video(frames=5)).start()


# --- WebRTC ---------------------------------------------------------------------------------


async def test_the_test_patterns_tone_crosses_webrtc(messagers: MessagerFactory) -> None:
    driver = WebRTCDriver(await messagers(), "tone", host_addresses=LOOPBACK)
    await driver.start()
    source = TestPatternSource(160, 120, fps=30)
    await source.start()
    async with WebRTCSender(await messagers(), source, "tone", host_addresses=LOOPBACK, audio=True) as sender:
        await driver.wait_connected(20)
        await wait_until(lambda: driver.audio.pushed >= 150, 30, "3 s of 20 ms Opus frames")
        assert sender.audio_track is not None and sender.audio_track.chunks_sent > 0
    await source.stop()
    await driver.stop()
    clip = clip_from_buffer(driver.audio, 2.0)
    assert clip is not None and len(clip.samples) == 32_000
    tones = best_aligned_tones(clip.samples, 16_000, 30)
    inner = tones[2:-2]
    in_order = sum((b - a) % TONE_STEPS == 1 for a, b in itertools.pairwise(inner))
    assert in_order >= len(inner) - 5, f"the tones run in frame order after Opus: {tones}"


# --- the message and its wire form ----------------------------------------------------------


def test_an_audio_part_goes_out_as_input_audio() -> None:
    part = AudioPart.from_bytes(b"RIFF....WAVE")
    message = ChatMessage.user("What do you hear?", images=["data:image/jpeg;base64,AAAA"], audio=[part])
    assert message.audio == [part] and message.text == "What do you hear?"
    wire = message_to_wire(message)
    assert [p["type"] for p in wire["content"]] == ["image_url", "input_audio", "text"]
    assert wire["content"][1]["input_audio"] == {"data": part.data, "format": "wav"}
    assert part.to_bytes() == b"RIFF....WAVE"


def test_the_audio_limit_is_checked_like_the_image_limit() -> None:
    part = AudioPart.from_bytes(b"x")
    message = ChatMessage.user("?", audio=[part, part])
    assert check_media_limits([message], None, 2) is None
    assert check_media_limits([message], None, None) is None
    assert "2 audio clips" in (check_media_limits([message], 4, 1) or "")
    assert "at most 0" in (check_media_limits([message], None, 0) or "")
