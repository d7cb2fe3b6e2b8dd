"""The visual agent's message builder: each question goes to the model with frames from a video source.

Frames are picked by a sampling policy, scaled to fit the model's image size, JPEG-encoded in a
worker thread, and sent as image parts, never more than the model takes in one prompt. Earlier
turns of a conversation keep their text but not their images, so a long conversation stays within
that limit and in memory.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from argentic.agents.messages import MessageBuilder
from argentic.errors import VideoError
from argentic.llm import ChatMessage, ImagePart, TextPart
from argentic.protocol import Question
from argentic.video.encode import EncodedFrame, encode_frames
from argentic.video.sampling import SamplingPolicy
from argentic.video.source import FrameSource

EARLIER_FRAME_NOTE = "[a video frame shown earlier, no longer attached]"


def describe_frames(frames: Sequence[EncodedFrame], asked_at: float) -> str:
    """The note that tells the model what the attached images are."""
    if len(frames) == 1:
        age = max(0.0, asked_at - frames[0].frame.timestamp)
        return f"(The image is the current video frame, captured {age:.1f} s ago.)"
    ages = ", ".join(f"{max(0.0, asked_at - f.frame.timestamp):.1f}" for f in frames)
    return f"(The {len(frames)} images are video frames in time order, captured {ages} s ago.)"


def strip_earlier_images(messages: Sequence[ChatMessage], limit: int) -> list[ChatMessage]:
    """``messages`` with images only in the newest message that has any, at most ``limit`` of them
    (the newest); earlier images become a short text note."""
    last = max((i for i, m in enumerate(messages) if _images(m)), default=None)
    if last is None:
        return list(messages)
    result: list[ChatMessage] = []
    for i, message in enumerate(messages):
        images = _images(message)
        if not images:
            result.append(message)
        elif i != last:
            result.append(without_images(message))
        elif len(images) <= limit:
            result.append(message)
        else:
            assert isinstance(message.content, list)
            drop = {id(part) for part in images[: len(images) - limit]}
            kept = [part for part in message.content if id(part) not in drop]
            result.append(message.model_copy(update={"content": kept}))
    return result


def without_images(message: ChatMessage) -> ChatMessage:
    """``message`` with each run of images replaced by a short note."""
    if not isinstance(message.content, list):
        return message
    parts: list[TextPart | ImagePart] = []
    for part in message.content:
        if isinstance(part, ImagePart):
            if not parts or not (isinstance(parts[-1], TextPart) and parts[-1].text == EARLIER_FRAME_NOTE):
                parts.append(TextPart(text=EARLIER_FRAME_NOTE))
        else:
            parts.append(part)
    return message.model_copy(update={"content": parts})


def _images(message: ChatMessage) -> list[ImagePart]:
    if not isinstance(message.content, list):
        return []
    return [part for part in message.content if isinstance(part, ImagePart)]


@dataclass(frozen=True)
class FrameMessages(MessageBuilder):
    """User messages with the frames ``policy`` picks from ``source``, at most ``image_limit``.

    ``frame_timeout_s`` is how long a question waits for a first frame before it fails with
    :class:`VideoError`. ``on_frames`` is told the frames of each message made.
    """

    source: FrameSource
    policy: SamplingPolicy
    image_limit: int = 1
    max_image_side: int = 768
    jpeg_quality: int = 80
    frame_timeout_s: float = 5.0
    on_frames: Callable[[list[EncodedFrame]], None] | None = None

    def with_policy(self, policy: SamplingPolicy | None) -> FrameMessages:
        """This builder picking frames by ``policy`` (itself when None)."""
        return self if policy is None else dataclasses.replace(self, policy=policy)

    async def sample(self) -> list[EncodedFrame]:
        """Frames for one prompt, encoded; waits up to ``frame_timeout_s`` for a first frame."""
        if self.source.latest() is None:
            await self.source.wait_for_frame(self.frame_timeout_s)
        frames = await self.policy.sample(self.source, self.image_limit)
        if not frames:
            raise VideoError("the video source has no frames to show the model")
        return await encode_frames(frames[: self.image_limit], self.max_image_side, self.jpeg_quality)

    async def look(self, text: str) -> tuple[ChatMessage, list[EncodedFrame]]:
        """A user message asking ``text`` about the frames sampled now, and those frames."""
        asked_at = time.time()
        encoded = await self.sample()
        message = ChatMessage.user(
            f"{text}\n\n{describe_frames(encoded, asked_at)}", images=[f.url for f in encoded]
        )
        if self.on_frames is not None:
            self.on_frames(encoded)
        return message, encoded

    async def build(self, question: Question) -> ChatMessage:
        message, _ = await self.look(question.text)
        return message

    def prepare(self, messages: list[ChatMessage]) -> list[ChatMessage]:
        return strip_earlier_images(messages, self.image_limit)

    def remember(self, message: ChatMessage) -> ChatMessage:
        # the history keeps the question's text, not its images (memory, the per-prompt limit)
        return without_images(message)
