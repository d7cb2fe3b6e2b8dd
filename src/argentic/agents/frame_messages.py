"""The visual agent's message builder: each question goes to the model with frames from a video
source, and, when asked for, the last seconds of its sound.

Frames are picked by a sampling policy, scaled to fit the model's image size, JPEG-encoded in a
worker thread, and sent as image parts, never more than the model takes in one prompt. Sound is
resampled to 16 kHz mono and sent as one WAV clip in an audio part, within the model's audio
limit. Earlier turns of a conversation keep their text but not their images or sound, so a long
conversation stays within those limits and in memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from argentic.agents.messages import MessageBuilder
from argentic.errors import VideoError
from argentic.llm import AudioPart, ChatMessage, ContentPart, ImagePart, TextPart
from argentic.protocol import Question
from argentic.video.audio import AudioClip, AudioSource, audio_of, recent_clip
from argentic.video.encode import EncodedFrame, encode_frames
from argentic.video.frames import AudioBuffer
from argentic.video.sampling import SamplingPolicy
from argentic.video.source import FrameSource

EARLIER_FRAME_NOTE = "[a video frame shown earlier, no longer attached]"
EARLIER_AUDIO_NOTE = "[a sound clip played earlier, no longer attached]"


def describe_frames(frames: Sequence[EncodedFrame], asked_at: float) -> str:
    """The note that tells the model what the attached images are."""
    if len(frames) == 1:
        age = max(0.0, asked_at - frames[0].frame.timestamp)
        return f"(The image is the current video frame, captured {age:.1f} s ago.)"
    ages = ", ".join(f"{max(0.0, asked_at - f.frame.timestamp):.1f}" for f in frames)
    return f"(The {len(frames)} images are video frames in time order, captured {ages} s ago.)"


def describe_audio(clip: AudioClip) -> str:
    """The note that tells the model what the attached sound is."""
    return f"(The audio is the last {clip.duration_s:.1f} s of sound from the same feed.)"


def strip_earlier_images(
    messages: Sequence[ChatMessage], limit: int, audio_limit: int | None = None
) -> list[ChatMessage]:
    """``messages`` with media (images, sound) only in the newest message that has any, at most
    ``limit`` images and ``audio_limit`` clips (the newest; None: no audio limit); earlier media
    become a short text note."""
    last = max((i for i, m in enumerate(messages) if _media(m)), default=None)
    if last is None:
        return list(messages)
    result: list[ChatMessage] = []
    for i, message in enumerate(messages):
        if not _media(message):
            result.append(message)
        elif i != last:
            result.append(without_media(message))
        else:
            assert isinstance(message.content, list)
            images = [p for p in message.content if isinstance(p, ImagePart)]
            clips = [p for p in message.content if isinstance(p, AudioPart)]
            drop = {id(part) for part in images[: max(0, len(images) - limit)]}
            if audio_limit is not None:
                drop |= {id(part) for part in clips[: max(0, len(clips) - audio_limit)]}
            if not drop:
                result.append(message)
                continue
            kept = [part for part in message.content if id(part) not in drop]
            result.append(message.model_copy(update={"content": kept}))
    return result


def without_media(message: ChatMessage) -> ChatMessage:
    """``message`` with each run of images, and of sound clips, replaced by a short note."""
    if not isinstance(message.content, list):
        return message
    parts: list[ContentPart] = []
    for part in message.content:
        note = (
            EARLIER_FRAME_NOTE
            if isinstance(part, ImagePart)
            else EARLIER_AUDIO_NOTE
            if isinstance(part, AudioPart)
            else None
        )
        if note is None:
            parts.append(part)
        elif not parts or not (isinstance(parts[-1], TextPart) and parts[-1].text == note):
            parts.append(TextPart(text=note))
    return message.model_copy(update={"content": parts})


def _media(message: ChatMessage) -> bool:
    return isinstance(message.content, list) and any(
        isinstance(part, (ImagePart, AudioPart)) for part in message.content
    )


@dataclass(frozen=True)
class Look:
    """What one user message carried: its frames and its sound clip (if any)."""

    frames: list[EncodedFrame]
    clip: AudioClip | None = None

    def describe(self) -> str:
        """What the message carried, for people and logs: ``1 frame(s), 640x480 JPEG and 1.5 s of
        16000 Hz WAV``."""
        size = f", {self.frames[0].width}x{self.frames[0].height} JPEG" if self.frames else ""
        clip = self.clip
        sound = f" and {clip.duration_s:.1f} s of {clip.sample_rate} Hz WAV" if clip is not None else ""
        return f"{len(self.frames)} frame(s){size}{sound}"


@dataclass(frozen=True)
class FrameMessages(MessageBuilder):
    """User messages with the frames ``policy`` picks from ``source``, at most ``image_limit``,
    and with ``audio_s`` set, the last ``audio_s`` seconds of sound from ``audio_source`` (else
    the frame source's own), at most ``audio_limit`` clips (0: none).

    ``frame_timeout_s`` is how long a question waits for a first frame before it fails with
    :class:`VideoError`. ``on_look`` is told what each message made carries.
    """

    source: FrameSource
    policy: SamplingPolicy
    image_limit: int = 1
    max_image_side: int = 768
    jpeg_quality: int = 80
    frame_timeout_s: float = 5.0
    audio_s: float | None = None
    audio_source: AudioSource | None = None
    audio_limit: int = 1
    on_look: Callable[[Look], None] | None = None

    def with_policy(self, policy: SamplingPolicy | None) -> FrameMessages:
        """This builder picking frames by ``policy`` (itself when None)."""
        return self if policy is None else dataclasses.replace(self, policy=policy)

    def with_audio(self, seconds: float | None) -> FrameMessages:
        """This builder adding ``seconds`` of sound (itself when None)."""
        return self if seconds is None else dataclasses.replace(self, audio_s=seconds)

    @property
    def audio_buffer(self) -> AudioBuffer | None:
        """The sound heard: ``audio_source``'s, else the frame source's, else None."""
        return audio_of(self.audio_source if self.audio_source is not None else self.source)

    async def sample(self) -> list[EncodedFrame]:
        """Frames for one prompt, encoded; waits up to ``frame_timeout_s`` for a first frame."""
        if self.source.latest() is None:
            await self.source.wait_for_frame(self.frame_timeout_s)
        frames = await self.policy.sample(self.source, self.image_limit)
        if not frames:
            raise VideoError("the video source has no frames to show the model")
        return await encode_frames(frames[: self.image_limit], self.max_image_side, self.jpeg_quality)

    async def sample_audio(self) -> AudioClip | None:
        """The last ``audio_s`` seconds of sound at 16 kHz; None when none is asked for or allowed.
        Raises :class:`VideoError` when the source has no sound or none has come yet."""
        if self.audio_s is None or self.audio_limit < 1:
            return None
        source = self.audio_source if self.audio_source is not None else self.source
        if self.audio_buffer is None:
            raise VideoError(
                f"{type(source).__name__} has no sound: give the agent an audio_source (an "
                "AudioFileSource for a WAV file) or a source that carries audio"
            )
        assert isinstance(source, AudioSource)
        clip = await recent_clip(source, self.audio_s)
        if clip is None:
            raise VideoError("no sound has arrived yet from the audio source")
        return clip

    async def look(self, text: str) -> tuple[ChatMessage, Look]:
        """A user message asking ``text`` about the frames (and sound) sampled now, and what it carries."""
        asked_at = time.time()
        encoded = await self.sample()
        clip = await self.sample_audio()
        note = describe_frames(encoded, asked_at)
        audio: list[AudioPart] = []
        if clip is not None:
            note += f"\n{describe_audio(clip)}"
            audio.append(AudioPart.from_bytes(await asyncio.to_thread(clip.to_wav)))
        message = ChatMessage.user(f"{text}\n\n{note}", images=[f.url for f in encoded], audio=audio)
        seen = Look(encoded, clip)
        if self.on_look is not None:
            self.on_look(seen)
        return message, seen

    async def build(self, question: Question) -> ChatMessage:
        message, _ = await self.look(question.text)
        return message

    def prepare(self, messages: list[ChatMessage]) -> list[ChatMessage]:
        return strip_earlier_images(messages, self.image_limit, self.audio_limit)

    def remember(self, message: ChatMessage) -> ChatMessage:
        # the history keeps the question's text, not its images or sound (memory, per-prompt limits)
        return without_media(message)
