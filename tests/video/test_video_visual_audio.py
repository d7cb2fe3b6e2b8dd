"""The VisualAgent's sound with a recording model: the right seconds of the feed as a 16 kHz WAV,
within the audio limit, earlier clips dropped from the history, and watch mode set off by sound."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from argentic.agents.frame_messages import EARLIER_AUDIO_NOTE, strip_earlier_images
from argentic.agents.visual_agent import VisualAgent
from argentic.errors import VideoError
from argentic.llm import AudioPart, ChatMessage, ImagePart, ScriptedLLM, TextPart
from argentic.testing.waiting import wait_until
from argentic.video import (
    AudioFileSource,
    FileSource,
    TestPatternSource,
    read_tone_indices,
    read_wav,
    wav_bytes,
)
from argentic.video.test_pattern import TONE_STEPS, render_tone

VideoWriter = Callable[..., Path]


def audio_in(message: ChatMessage) -> list[AudioPart]:
    return message.audio


@pytest.fixture
async def pattern() -> Any:
    source = TestPatternSource(160, 120, fps=30)
    await source.start()
    await source.wait_for_frame(10, newer_than=40)  # more than a second of sound
    yield source
    await source.stop()


async def test_a_question_carries_the_last_second_of_the_feeds_sound(pattern: TestPatternSource) -> None:
    llm = ScriptedLLM(["I hear a tone."])
    agent = VisualAgent(llm=llm, source=pattern, audio_s=1.0)
    assert await agent.query_with_video("What do you hear?") == "I hear a tone."
    user = llm.requests[0].messages[-1]
    (part,) = audio_in(user)
    samples, rate = read_wav(part.to_bytes())
    assert rate == 16_000 and len(samples) == 16_000
    clip = agent.last_audio
    assert clip is not None and clip.last_index - clip.first_index == 29
    assert read_tone_indices(samples, rate, 30) == [
        i % TONE_STEPS for i in range(clip.first_index, clip.last_index + 1)
    ]
    assert "last 1.0 s of sound" in user.text
    assert isinstance(user.content, list) and isinstance(user.content[0], ImagePart)


async def test_one_question_can_ask_for_sound_the_agent_does_not_add(pattern: TestPatternSource) -> None:
    llm = ScriptedLLM(["no sound", "sound"])
    agent = VisualAgent(llm=llm, source=pattern)
    await agent.query_with_video("What do you see?")
    await agent.query_with_video("What do you hear?", audio_s=0.5)
    assert [len(audio_in(r.messages[-1])) for r in llm.requests] == [0, 1]
    assert agent.last_audio is not None and agent.last_audio.duration_s == 0.5


async def test_a_conversation_keeps_only_the_newest_clip(pattern: TestPatternSource) -> None:
    llm = ScriptedLLM(["one", "two"])
    agent = VisualAgent(llm=llm, source=pattern, audio_s=0.5)
    await agent.query_with_video("First?", conversation_id="c")
    await agent.query_with_video("Second?", conversation_id="c")
    second = llm.requests[1].messages
    assert sum(len(audio_in(m)) for m in second) == 1 and audio_in(second[-1])
    earlier = next(m for m in second if m.role == "user" and "First?" in m.text)
    assert EARLIER_AUDIO_NOTE in earlier.text


async def test_an_audio_limit_of_zero_sends_no_sound(pattern: TestPatternSource) -> None:
    llm = ScriptedLLM(["fine"])
    agent = VisualAgent(llm=llm, source=pattern, audio_s=1.0, max_audio_per_prompt=0)
    await agent.query_with_video("What do you hear?")
    assert audio_in(llm.requests[0].messages[-1]) == [] and agent.last_audio is None


async def test_a_source_without_sound_is_a_clear_error_and_a_wav_file_fills_in(
    pattern_video: VideoWriter, tmp_path: Path
) -> None:
    video = FileSource(pattern_video(frames=30), realtime=False, loop=True)
    await video.start()
    await video.wait_for_frame(10)
    llm = ScriptedLLM(["heard"])
    try:
        with pytest.raises(VideoError, match="has no sound"):
            await VisualAgent(llm=llm, source=video, audio_s=1.0).query_with_video("What do you hear?")

        phase, pieces = 0.0, []
        for index in range(90):
            samples, phase = render_tone(index, 16_000, 30, phase)
            pieces.append(samples)
        wav = tmp_path / "tone.wav"
        wav.write_bytes(wav_bytes(np.concatenate(pieces), 16_000))
        sound = AudioFileSource(wav, realtime=False, loop=False)
        await sound.start()
        await wait_until(lambda: sound.finished, 30, "the WAV file to be read")
        agent = VisualAgent(llm=llm, source=video, audio_source=sound, audio_s=1.0)
        assert await agent.query_with_video("What do you hear?") == "heard"
        (part,) = audio_in(llm.requests[-1].messages[-1])
        samples, rate = read_wav(part.to_bytes())
        assert read_tone_indices(samples, rate, 30) == [i % TONE_STEPS for i in range(60, 90)]
        await sound.stop()
    finally:
        await video.stop()


async def test_watch_asks_when_the_sound_gets_loud() -> None:
    source = TestPatternSource(160, 120, fps=30)
    source.muted = True
    await source.start()
    llm = ScriptedLLM(["a tone started"] * 3)
    agent = VisualAgent(llm=llm, source=source)
    watch = agent.start_watch(
        "What do you hear?",
        interval_s=None,
        on_sound=True,
        check_every_s=0.02,
        max_observations=1,
        audio_s=0.5,
    )
    try:
        first = source.frames_seen
        await source.wait_for_frame(10, newer_than=first + 30)  # a second of silence, watched
        assert agent.observations == 0 and not watch.done()
        source.muted = False
        await asyncio.wait_for(watch, 30)
        assert agent.observations == 1
        (request,) = llm.requests
        assert len(audio_in(request.messages[-1])) == 1
    finally:
        await agent.stop()
        await source.stop()


async def test_watch_on_sound_needs_a_source_with_sound(pattern_video: VideoWriter) -> None:
    video = FileSource(pattern_video(frames=5), realtime=False)
    await video.start()  # now it knows the file has no audio track
    agent = VisualAgent(llm=ScriptedLLM([]), source=video)
    try:
        with pytest.raises(ValueError, match="source with sound"):
            await asyncio.wait_for(agent.watch("?", interval_s=None, on_sound=True), 10)
    finally:
        await video.stop()


def test_strip_keeps_the_newest_clips_within_the_audio_limit() -> None:
    a, b, c = (AudioPart.from_bytes(bytes([n])) for n in range(3))
    old = ChatMessage.user("old", audio=[a])
    new = ChatMessage.user("new", images=["data:image/jpeg;base64,AA=="], audio=[b, c])
    stripped = strip_earlier_images([old, ChatMessage.assistant("ok"), new], limit=1, audio_limit=1)
    assert stripped[0].content == [TextPart(text=EARLIER_AUDIO_NOTE), TextPart(text="old")]
    assert stripped[2].audio == [c] and len(stripped[2].images) == 1
    assert new.audio == [b, c], "the question's own message is not changed"
