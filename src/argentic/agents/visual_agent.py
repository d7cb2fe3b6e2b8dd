"""An agent that sees: each question goes to the model with frames from a video source.

Frames are picked by a sampling policy (the latest frame; N frames over the last T seconds;
scene changes), scaled to fit the model's image size, JPEG-encoded in a worker thread, and sent
as image parts, never more than the model takes in one prompt (Gemma 3n on vLLM: one image
unless the server raises ``--limit-mm-per-prompt``). Earlier turns of a conversation keep their
text but not their images, so a long conversation stays within that limit and in memory.

Questions arrive over MQTT as for :class:`~argentic.agents.agent.Agent`, and tools work the same.
Watch mode asks a standing question every few seconds and/or whenever the scene changes, and
publishes each :class:`~argentic.protocol.Observation` on ``{ns}/agents/{role}/observations``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from argentic.agents.agent import Agent, AgentResult
from argentic.agents.loop import EventSink, NullEvents, ToolLoop
from argentic.config import AgentConfig, ArgenticConfig, VideoConfig
from argentic.errors import VideoError
from argentic.llm import ChatMessage, ChatRequest, ChatResponse, ImagePart, LLMProvider, OutputSpec, TextPart
from argentic.protocol import Observation, Question
from argentic.video.encode import EncodedFrame, encode_frames
from argentic.video.factory import source_from_config
from argentic.video.sampling import LatestFrame, SamplingPolicy, SceneChangeDetector, make_policy
from argentic.video.source import FrameSource

if TYPE_CHECKING:
    from argentic.messaging import Messager
    from argentic.tools import ToolManager

log = logging.getLogger(__name__)

EARLIER_FRAME_NOTE = "[a video frame shown earlier, no longer attached]"


@dataclass
class _Look:
    """What one question saw: set while the question runs (a context variable, so concurrent
    questions never mix their frames)."""

    policy: SamplingPolicy | None = None
    frames: list[EncodedFrame] = field(default_factory=list)
    message: ChatMessage | None = None


_look: contextvars.ContextVar[_Look | None] = contextvars.ContextVar("argentic_visual_look", default=None)


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
    last = max(
        (i for i, m in enumerate(messages) if isinstance(m.content, list) and _images(m)),
        default=None,
    )
    if last is None:
        return list(messages)
    result: list[ChatMessage] = []
    for i, message in enumerate(messages):
        if not isinstance(message.content, list) or not _images(message):
            result.append(message)
        elif i != last:
            result.append(_without_images(message))
        else:
            images = _images(message)
            if len(images) <= limit:
                # a copy: the question's own message loses its images once answered
                result.append(message.model_copy())
            else:
                drop = {id(part) for part in images[: len(images) - limit]}
                kept = [part for part in message.content if id(part) not in drop]
                result.append(message.model_copy(update={"content": kept}))
    return result


def _images(message: ChatMessage) -> list[ImagePart]:
    if not isinstance(message.content, list):
        return []
    return [part for part in message.content if isinstance(part, ImagePart)]


def _without_images(message: ChatMessage) -> ChatMessage:
    assert isinstance(message.content, list)
    parts: list[TextPart | ImagePart] = []
    for part in message.content:
        if isinstance(part, ImagePart):
            if not parts or not (isinstance(parts[-1], TextPart) and parts[-1].text == EARLIER_FRAME_NOTE):
                parts.append(TextPart(text=EARLIER_FRAME_NOTE))
        else:
            parts.append(part)
    return message.model_copy(update={"content": parts})


class VisualAgent(Agent):
    """An :class:`Agent` whose questions come with frames from ``driver`` (any frame source).

    ``max_images_per_prompt`` defaults to what the provider reports, else 1. ``frame_timeout_s``
    is how long a question waits for a first frame before it fails with :class:`VideoError`.
    """

    def __init__(
        self,
        llm: LLMProvider,
        messager: Messager | None = None,
        tool_manager: ToolManager | None = None,
        driver: FrameSource | None = None,
        role: str = "visual",
        system_prompt: str | None = None,
        *,
        source: FrameSource | None = None,
        policy: SamplingPolicy | None = None,
        max_images_per_prompt: int | None = None,
        max_image_side: int = 768,
        jpeg_quality: int = 80,
        frame_timeout_s: float = 5.0,
        **agent_options: Any,
    ) -> None:
        if system_prompt is None:
            system_prompt = (
                "You are a visual assistant. You see video frames attached to each question; "
                "answer from what they show. Use the tools when they help."
            )
        super().__init__(llm, messager, tool_manager, role, system_prompt, **agent_options)
        chosen = driver if driver is not None else source
        if chosen is None:
            raise ValueError(
                "VisualAgent needs a frame source: pass driver= (a WebRTCDriver, FileSource, ...)"
            )
        self.source: FrameSource = chosen
        self.sampling: SamplingPolicy = policy or LatestFrame()
        self._max_images = max_images_per_prompt
        self.max_image_side = max_image_side
        self.jpeg_quality = jpeg_quality
        self.frame_timeout_s = frame_timeout_s
        #: The frames sent with the most recent question (for logs, tests and benchmarks).
        self.last_frames: list[EncodedFrame] = []
        self.observations = 0
        self._watch_task: asyncio.Task[None] | None = None

    @property
    def driver(self) -> FrameSource:
        return self.source

    @property
    def image_limit(self) -> int:
        """Images one prompt may carry: the explicit setting, else the provider's, else 1."""
        if self._max_images is not None:
            return self._max_images
        return self.llm.max_images_per_prompt or 1

    @classmethod
    def from_config(
        cls,
        config: AgentConfig | ArgenticConfig,
        *,
        llm: LLMProvider,
        messager: Messager | None = None,
        tool_manager: ToolManager | None = None,
        driver: FrameSource | None = None,
        video: VideoConfig | None = None,
        **overrides: Any,
    ) -> VisualAgent:
        """A visual agent from the ``agent`` and ``video`` config sections (a whole config gives
        both). Without ``driver``, the source is the one ``video.source`` names."""
        if isinstance(config, ArgenticConfig):
            agent, video = config.agent, video or config.video
        else:
            agent, video = config, video or VideoConfig()
        if driver is None:
            driver = source_from_config(video, messager)
        options: dict[str, Any] = {
            "role": agent.role,
            "max_steps": agent.max_steps,
            "tool_choice": agent.tool_choice,
            "followup_tool_choice": agent.followup_tool_choice,
            "max_repeated_calls": agent.max_repeated_calls,
            "tool_timeout_s": agent.tool_timeout_s,
            "tool_names": agent.tools,
            "max_conversations": agent.max_conversations,
            "max_history_messages": agent.max_history_messages,
            **video_options(video, llm),
        }
        if agent.system_prompt != AgentConfig().system_prompt:
            options["system_prompt"] = agent.system_prompt  # a configured prompt; else the visual default
        options.update(overrides)
        return cls(llm, messager, tool_manager, driver, **options)

    # --- questions with video -----------------------------------------------------------------

    async def query_with_video(
        self,
        text: str,
        *,
        conversation_id: str | None = None,
        output: OutputSpec | None = None,
        policy: SamplingPolicy | None = None,
    ) -> Any:
        """Answer ``text`` about what the video shows now: the answer's text, or with ``output``
        the validated structured answer. Raises :class:`VideoError` when no frame arrives in time."""
        result = await self.ask_with_video(
            text, conversation_id=conversation_id, output=output, policy=policy
        )
        return result.data if output is not None else result.text

    async def ask_with_video(
        self,
        question: Question | str,
        *,
        conversation_id: str | None = None,
        output: OutputSpec | None = None,
        policy: SamplingPolicy | None = None,
        events: EventSink | None = None,
    ) -> AgentResult:
        """Like :meth:`Agent.ask`, with frames picked by ``policy`` (default: the agent's)."""
        token = _look.set(_Look(policy=policy))
        try:
            return await self.ask(question, conversation_id=conversation_id, output=output, events=events)
        finally:
            _look.reset(token)

    async def ask(
        self,
        question: Question | str,
        *,
        conversation_id: str | None = None,
        output: OutputSpec | None = None,
        events: EventSink | None = None,
    ) -> AgentResult:
        look = _look.get()
        token = _look.set(_Look()) if look is None else None
        try:
            return await super().ask(question, conversation_id=conversation_id, output=output, events=events)
        finally:
            current = _look.get()
            if current is not None and current.message is not None:
                # the history keeps the question's text, not its images (memory, per-prompt limit)
                current.message.content = _without_images(current.message).content
            if token is not None:
                _look.reset(token)

    async def sample_frames(self, policy: SamplingPolicy | None = None) -> list[EncodedFrame]:
        """Frames for one prompt, encoded; waits up to ``frame_timeout_s`` for a first frame."""
        if self.source.latest() is None:
            await self.source.wait_for_frame(self.frame_timeout_s)
        frames = await (policy or self.sampling).sample(self.source, self.image_limit)
        if not frames:
            raise VideoError("the video source has no frames to show the model")
        return await encode_frames(frames[: self.image_limit], self.max_image_side, self.jpeg_quality)

    async def build_user_message(self, question: Question) -> ChatMessage:
        look = _look.get()
        asked_at = time.time()
        encoded = await self.sample_frames(look.policy if look else None)
        message = ChatMessage.user(
            f"{question.text}\n\n{describe_frames(encoded, asked_at)}", images=[f.url for f in encoded]
        )
        self.last_frames = encoded
        if look is not None:
            look.frames = encoded
            look.message = message
        return message

    async def call_llm(self, request: ChatRequest, events: EventSink) -> ChatResponse:
        messages = strip_earlier_images(request.messages, self.image_limit)
        return await super().call_llm(request.model_copy(update={"messages": messages}), events)

    # --- watch mode ---------------------------------------------------------------------------

    async def observe(self, question: str, *, policy: SamplingPolicy | None = None) -> Observation:
        """Ask ``question`` about the current frames once and publish the observation on
        ``{ns}/agents/{role}/observations`` when there is a messager.

        Each observation stands alone: it has no conversation history and leaves none.
        """
        look = _Look(policy=policy)
        token = _look.set(look)
        try:
            user = await self.build_user_message(Question(text=question))
            loop = ToolLoop(self.call_llm, self.call_tool, self.tool_definitions(), self.policy, NullEvents())
            result = await loop.run([*self.system_messages(), user])
        finally:
            _look.reset(token)
        observation = Observation(
            role=self.role,
            question=question,
            text=result.text,
            frame_ts=look.frames[-1].frame.timestamp if look.frames else None,
            data={
                "frames": len(look.frames),
                "frame_index": look.frames[-1].frame.index if look.frames else None,
                "tool_calls": [call.model_dump(mode="json") for call in result.tool_calls],
            },
        )
        self.observations += 1
        if self.messager is not None:
            await self.messager.publish(self.messager.topics.agent_observations(self.role), observation)
        return observation

    async def watch(
        self,
        question: str,
        *,
        interval_s: float | None = 5.0,
        on_scene_change: bool = False,
        scene_threshold: float = 0.12,
        check_every_s: float = 0.2,
        max_observations: int | None = None,
        policy: SamplingPolicy | None = None,
    ) -> None:
        """Observe every ``interval_s`` seconds and/or when the scene changes, until cancelled
        (or after ``max_observations``). A failed observation (no frames, a model error) is
        logged and the watch goes on."""
        if interval_s is None and not on_scene_change:
            raise ValueError("watch needs interval_s, on_scene_change, or both")
        loop = asyncio.get_running_loop()
        detector = SceneChangeDetector(scene_threshold) if on_scene_change else None
        next_due = loop.time()
        last_index: int | None = None
        done = 0
        while max_observations is None or done < max_observations:
            due = interval_s is not None and loop.time() >= next_due
            changed = False
            if detector is not None and not due:
                frame = self.source.latest()
                if frame is not None and frame.index != last_index:
                    last_index = frame.index
                    changed = await asyncio.to_thread(detector.changed, frame)
            if not (due or changed):
                wait = check_every_s if detector is not None else max(0.0, next_due - loop.time())
                if interval_s is not None:
                    wait = min(wait, max(0.0, next_due - loop.time()))
                await asyncio.sleep(wait)
                continue
            try:
                observation = await self.observe(question, policy=policy)
                log.info(
                    "observation (%s): %s", "scene change" if changed else "interval", observation.text[:200]
                )
            except Exception as exc:
                log.warning("watch: no observation this time: %s", exc)
            done += 1
            if interval_s is not None:
                next_due = loop.time() + interval_s
            if detector is not None and (latest := self.source.latest()) is not None:
                # what the model just saw is the new reference scene
                last_index = latest.index
                await asyncio.to_thread(detector.changed, latest)

    def start_watch(self, question: str, **options: Any) -> asyncio.Task[None]:
        """Run :meth:`watch` in the background; :meth:`stop_watch` ends it."""
        if self._watch_task is not None and not self._watch_task.done():
            raise RuntimeError("this agent is already watching; stop_watch() first")
        self._watch_task = asyncio.create_task(self.watch(question, **options), name=f"watch-{self.role}")
        return self._watch_task

    async def stop_watch(self) -> None:
        task, self._watch_task = self._watch_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        await self.stop_watch()
        await super().stop()


def video_options(video: VideoConfig, llm: LLMProvider | None = None) -> dict[str, Any]:
    """VisualAgent keyword arguments from the ``video`` config section."""
    limit = video.max_images_per_prompt
    if llm is not None and llm.max_images_per_prompt is not None:
        limit = min(limit, llm.max_images_per_prompt)
    return {
        "policy": make_policy(
            video.sampling,
            frames=video.frames_per_prompt,
            window_s=video.window_s,
            threshold=video.scene_change_threshold,
        ),
        "max_images_per_prompt": limit,
        "max_image_side": video.max_image_side,
        "jpeg_quality": video.jpeg_quality,
        "frame_timeout_s": video.frame_timeout_s,
    }
