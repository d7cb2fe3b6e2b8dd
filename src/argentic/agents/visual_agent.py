"""An agent that sees (and hears): each question goes to the model with frames from a video source,
and with ``audio_s`` the last seconds of its sound.

The frames come from the agent's message builder, :class:`~argentic.agents.frame_messages.FrameMessages`:
picked by a sampling policy (the latest frame; N frames over the last T seconds; scene changes),
scaled to fit the model's image size, JPEG-encoded in a worker thread, and sent as image parts,
never more than the model takes in one prompt (Gemma 3n on vLLM: one image unless the server
raises ``--limit-mm-per-prompt``). Earlier turns of a conversation keep their text but not their
images, so a long conversation stays within that limit and in memory.

Questions arrive over MQTT as for :class:`~argentic.agents.agent.Agent`, and tools work the same.
Watch mode (:mod:`argentic.agents.visual_watch`) asks a standing question every few seconds and/or
whenever the scene changes and/or when the sound gets loud: ``async for seen in agent.watch(...)``
gives each :class:`~argentic.agents.visual_watch.Sighting`, and each is also published as an
:class:`~argentic.protocol.Observation` on ``{ns}/agents/{role}/observations``.

The frame source is ``source=``; ``driver=`` is its older, deprecated name. As on an ``Agent``,
``query_with_video`` gives the answer's value and ``answer_with_video`` the whole result
(``ask_with_video`` is its older, deprecated name).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING, Any, cast

from pydantic_core import to_jsonable_python

from argentic.agents.agent import Agent, AgentResult
from argentic.agents.frame_messages import FrameMessages, Look
from argentic.agents.loop import EventSink, LoopPolicy, NullEvents
from argentic.agents.visual_watch import Sighting, Trigger, Watch
from argentic.config import DEFAULT_SYSTEM_PROMPT, AgentConfig, ArgenticConfig, VideoConfig
from argentic.deprecation import deprecated, renamed
from argentic.errors import ArgumentError, UsageError, VideoError
from argentic.llm import LLMProvider, OutputSpec
from argentic.llm.profiles import profile_for
from argentic.protocol import Observation, Question
from argentic.video.audio import AudioClip, AudioSource, wait_for_sound
from argentic.video.encode import EncodedFrame
from argentic.video.factory import audio_source_from_config, source_from_config
from argentic.video.frames import AudioBuffer, Frame
from argentic.video.sampling import LatestFrame, SamplingPolicy, make_policy
from argentic.video.source import FrameSource

if TYPE_CHECKING:
    from argentic.messaging import Messager
    from argentic.tools import ToolManager

log = logging.getLogger(__name__)


class VisualAgent(Agent):
    """An :class:`Agent` whose questions come with frames from ``source`` (any frame source: a
    WebRTC driver, a video file, a camera, the test pattern).

    ``max_images_per_prompt`` defaults to what the provider reports, else 1. ``frame_timeout_s``
    is how long a question waits for a first frame before it fails with :class:`VideoError`.
    With ``audio_s`` each question also carries the last ``audio_s`` seconds of sound, from
    ``audio_source`` or else the frame source's own (WebRTC, a video file's track, the test
    pattern), as one 16 kHz WAV clip; ``max_audio_per_prompt`` (default: the provider's limit,
    else 1) caps the clips, and 0 sends none. ``scene_threshold`` and ``sound_threshold_dbfs`` are
    what a watch takes for a scene change and for loud unless it is given its own.

    ``driver=`` is the older name of ``source=``: it still works, with a ``DeprecationWarning``.
    """

    def __init__(
        self,
        llm: LLMProvider,
        messager: Messager | None = None,
        tool_manager: ToolManager | None = None,
        source: FrameSource | None = None,
        role: str = "visual",
        system_prompt: str | None = None,
        *,
        driver: FrameSource | None = None,
        policy: SamplingPolicy | None = None,
        max_images_per_prompt: int | None = None,
        max_image_side: int = 768,
        jpeg_quality: int = 80,
        frame_timeout_s: float = 5.0,
        audio_s: float | None = None,
        audio_source: AudioSource | None = None,
        max_audio_per_prompt: int | None = None,
        scene_threshold: float = 0.12,
        sound_threshold_dbfs: float = -30.0,
        **agent_options: Any,
    ) -> None:
        given = agent_options.get("options")
        if system_prompt is None and (given is None or given.system_prompt == DEFAULT_SYSTEM_PROMPT):
            system_prompt = (
                "You are a visual assistant. You see video frames attached to each question; "
                "answer from what they show. Use the tools when they help."
            )
        chosen = source_or_driver(source, driver, "VisualAgent")
        if chosen is None:
            raise ArgumentError(
                "VisualAgent needs a frame source: pass source= (a WebRTCDriver, FileSource, "
                "TestPatternSource, ...)"
            )
        if audio_s is not None and audio_s <= 0:
            raise ArgumentError(f"audio_s must be positive seconds (or None for no sound), got {audio_s}")
        limit = max_images_per_prompt if max_images_per_prompt is not None else llm.max_images_per_prompt
        audio_limit = max_audio_per_prompt if max_audio_per_prompt is not None else llm.max_audio_per_prompt
        self._limit_known = limit is not None  # else the model's profile may say, once it is known
        #: The message builder that attaches the frames (per question: ``frames.with_policy(...)``).
        self.frames = FrameMessages(
            chosen,
            policy or LatestFrame(),
            image_limit=limit or 1,
            max_image_side=max_image_side,
            jpeg_quality=jpeg_quality,
            frame_timeout_s=frame_timeout_s,
            audio_s=audio_s,
            audio_source=audio_source,
            audio_limit=1 if audio_limit is None else audio_limit,
            on_look=self._saw,
        )
        super().__init__(
            llm, messager, tool_manager, role, system_prompt, message_builder=self.frames, **agent_options
        )
        #: The frames sent with the most recent question (for logs, tests and benchmarks).
        self.last_frames: list[EncodedFrame] = []
        #: The sound sent with the most recent question, if any.
        self.last_audio: AudioClip | None = None
        #: Both: what the most recent question carried (``last_look.describe()`` says it in words).
        self.last_look = Look([])
        self.scene_threshold = scene_threshold
        self.sound_threshold_dbfs = sound_threshold_dbfs
        #: Observations made so far (over every watch and :meth:`sight`).
        self.observations = 0
        self._watch_task: asyncio.Task[None] | None = None
        self._owned_audio: AudioSource | None = None
        self._owned_audio_started = False

    async def apply_profile(self) -> LoopPolicy:
        """The agent's profile, and the model profile's image limit when none was set or reported."""
        policy = await super().apply_profile()
        if not self._limit_known:
            self._limit_known = True
            limit = profile_for(await self.llm.resolve_model()).max_images_per_prompt
            if limit is not None and limit != self.frames.image_limit:
                self.frames = dataclasses.replace(self.frames, image_limit=limit)
                self.message_builder = self.frames
        return policy

    def _saw(self, look: Look) -> None:
        self.last_frames = look.frames
        self.last_audio = look.clip
        self.last_look = look

    @property
    def source(self) -> FrameSource:
        return self.frames.source

    @property
    def driver(self) -> FrameSource:
        """Deprecated: the older name of :attr:`source`."""
        deprecated("VisualAgent.driver is deprecated: use VisualAgent.source")
        return self.frames.source

    @property
    def sampling(self) -> SamplingPolicy:
        return self.frames.policy

    @property
    def image_limit(self) -> int:
        """Images one prompt may carry: the explicit setting, else the provider's, else 1."""
        return self.frames.image_limit

    @property
    def max_image_side(self) -> int:
        return self.frames.max_image_side

    @property
    def audio_s(self) -> float | None:
        """Seconds of sound added to each question (None: no sound)."""
        return self.frames.audio_s

    @property
    def audio_source(self) -> AudioSource | None:
        return self.frames.audio_source

    @property
    def audio_limit(self) -> int:
        """Audio clips one prompt may carry: the explicit setting, else the provider's, else 1."""
        return self.frames.audio_limit

    @property
    def audio_buffer(self) -> AudioBuffer | None:
        """The sound the agent hears: ``audio_source``'s, else the frame source's, else None."""
        return self.frames.audio_buffer

    @classmethod
    def from_config(
        cls,
        config: AgentConfig | ArgenticConfig,
        *,
        llm: LLMProvider,
        messager: Messager | None = None,
        tool_manager: ToolManager | None = None,
        source: FrameSource | None = None,
        video: VideoConfig | None = None,
        driver: FrameSource | None = None,
        **overrides: Any,
    ) -> VisualAgent:
        """A visual agent from the ``agent`` and ``video`` config sections (a whole config gives
        both). Without ``source``, the source is the one ``video.source`` names (not started: see
        :func:`~argentic.agents.visual_service.open_visual_agent` for one with everything it runs
        on). ``driver=`` is the deprecated older name of ``source=``."""
        if isinstance(config, ArgenticConfig):
            agent, video = config.agent, video or config.video
        else:
            agent, video = config, video or VideoConfig()
        source = source_or_driver(source, driver, "VisualAgent.from_config")
        if source is None:
            source = source_from_config(video, messager)
        owned_audio = None if "audio_source" in overrides else audio_source_from_config(video)
        if owned_audio is not None:
            overrides["audio_source"] = owned_audio
        # The agent section's options; its general default prompt gives way to the visual one.
        options: dict[str, Any] = {"role": agent.role, "options": agent, **video_options(video, llm)}
        options.update(overrides)
        visual = cls(llm, messager, tool_manager, source, **options)
        visual._owned_audio = owned_audio  # built here from the config: the agent starts and stops it
        return visual

    async def start_audio(self) -> None:
        """Start the sound file source :meth:`from_config` built (``video.audio_source``), once,
        and wait for its first sound; nothing to do otherwise. Asking and watching call it."""
        owned = self._owned_audio
        if owned is None or self._owned_audio_started:
            return
        self._owned_audio_started = True
        await owned.start()
        if not len(owned.audio):
            with contextlib.suppress(TimeoutError):
                await owned.audio.wait(self.frames.frame_timeout_s)

    async def start(self) -> None:
        await self.start_audio()
        await super().start()

    async def wait_for_feed(self, timeout: float) -> Frame:  # noqa: ASYNC109
        """Wait for the source's first frame (up to ``timeout``) and, with ``audio_s``, for that
        many seconds of sound (a feed that just started has less; up to ``audio_s + timeout``).
        Returns the newest frame. Raises :class:`VideoError` when they do not come in time, or
        when sound is asked for and neither the source nor an ``audio_source`` has any."""
        frame = await self.source.wait_for_frame(timeout)
        if self.audio_s:
            await self.start_audio()
            buffer = self.audio_buffer
            if buffer is None:
                raise VideoError(
                    f"{type(self.source).__name__} has no sound: set video.audio_source (a WAV file) "
                    "or use a source that carries audio"
                )
            await wait_for_sound(buffer, self.audio_s, timeout=self.audio_s + timeout)
        return self.source.latest() or frame

    # --- questions with video -----------------------------------------------------------------

    async def query_with_video(
        self,
        text: str,
        *,
        conversation_id: str | None = None,
        output: OutputSpec | None = None,
        policy: SamplingPolicy | None = None,
        audio_s: float | None = None,
    ) -> Any:
        """Answer ``text`` about what the video shows now: the answer's text, or with ``output``
        the validated structured answer. Raises :class:`VideoError` when no frame arrives in time.
        ``audio_s`` adds that many seconds of sound to this question (default: the agent's)."""
        result = await self.answer_with_video(
            text, conversation_id=conversation_id, output=output, policy=policy, audio_s=audio_s
        )
        return result.data if output is not None else result.text

    async def answer_with_video(
        self,
        question: Question | str,
        *,
        conversation_id: str | None = None,
        output: OutputSpec | None = None,
        policy: SamplingPolicy | None = None,
        events: EventSink | None = None,
        audio_s: float | None = None,
    ) -> AgentResult:
        """The whole result, as :meth:`Agent.answer`, with frames picked by ``policy`` (default:
        the agent's) and ``audio_s`` seconds of sound (default: the agent's ``audio_s``);
        :meth:`query_with_video` gives the value."""
        await self.start_audio()
        await self.apply_profile()  # the model's image limit, before the builder is copied
        builder = self.frames.with_policy(policy).with_audio(audio_s)
        return await self.answer(
            question, conversation_id=conversation_id, output=output, events=events, builder=builder
        )

    async def ask_with_video(self, question: Question | str, **options: Any) -> AgentResult:
        """Deprecated: the older name of :meth:`answer_with_video` (same arguments, same result)."""
        deprecated("VisualAgent.ask_with_video() is deprecated: use answer_with_video()")
        return await self.answer_with_video(question, **options)

    async def sample_frames(self, policy: SamplingPolicy | None = None) -> list[EncodedFrame]:
        """Frames for one prompt, encoded; waits up to ``frame_timeout_s`` for a first frame."""
        return await self.frames.with_policy(policy).sample()

    async def sample_audio(self, seconds: float | None = None) -> AudioClip | None:
        """The last ``seconds`` (default: ``audio_s``) of the feed's sound at 16 kHz; None when no
        sound is asked for or allowed. Raises :class:`VideoError` when the source has no sound."""
        await self.start_audio()
        return await self.frames.with_audio(seconds).sample_audio()

    # --- watch mode ---------------------------------------------------------------------------

    async def sight(
        self,
        question: str,
        *,
        policy: SamplingPolicy | None = None,
        audio_s: float | None = None,
        trigger: Trigger | None = None,
        output: OutputSpec | None = None,
    ) -> Sighting:
        """Ask ``question`` about the current frames (and sound) once, publish the observation on
        ``{ns}/agents/{role}/observations`` when there is a messager, and return it, typed.
        ``trigger`` (what set it off) is recorded; with ``output`` the answer is also validated
        against it (``Sighting.data``, and ``data.answer`` on the wire).

        Each observation stands alone: it has no conversation history and leaves none.
        """
        await self.start_audio()
        await self.apply_profile()
        frames = self.frames.with_policy(policy).with_audio(audio_s)
        user, look = await frames.look(question)
        seen = look.frames
        result = await self.tool_loop(frames, NullEvents()).run(
            [*self.system_messages(), user], output=output
        )
        heard = round(look.clip.duration_s, 3) if look.clip is not None else None
        data: dict[str, Any] = {
            "frames": len(seen),
            "frame_index": seen[-1].frame.index if seen else None,
            "tool_calls": [call.model_dump(mode="json") for call in result.tool_calls],
            "audio_s": heard,
            "trigger": trigger,
        }
        if output is not None:
            data["answer"] = to_jsonable_python(result.data)
        observation = Observation(
            role=self.role,
            question=question,
            text=result.text,
            frame_ts=seen[-1].frame.timestamp if seen else None,
            data=data,
        )
        self.observations += 1
        if self.messager is not None:
            await self.messager.publish(self.messager.topics.agent_observations(self.role), observation)
        return Sighting(
            role=self.role,
            question=question,
            text=result.text,
            trigger=trigger,
            frame_timestamps=tuple(f.frame.timestamp for f in seen),
            frame_indices=tuple(f.frame.index for f in seen),
            message=observation,
            data=result.data,
            audio_s=heard,
            tool_calls=tuple(result.tool_calls),
        )

    async def observe(
        self,
        question: str,
        *,
        policy: SamplingPolicy | None = None,
        audio_s: float | None = None,
        trigger: str | None = None,
    ) -> Observation:
        """:meth:`sight`, returning the wire :class:`~argentic.protocol.Observation` it published
        (kept for older callers)."""
        # recorded as given, as before (a caller's own trigger names included)
        seen = await self.sight(
            question, policy=policy, audio_s=audio_s, trigger=cast("Trigger | None", trigger)
        )
        return seen.message

    def watch(
        self,
        question: str,
        *,
        interval_s: float | None = 5.0,
        on_scene_change: bool = False,
        scene_threshold: float | None = None,
        check_every_s: float = 0.2,
        max_observations: int | None = None,
        duration_s: float | None = None,
        policy: SamplingPolicy | None = None,
        on_sound: bool = False,
        sound_threshold_dbfs: float | None = None,
        sound_window_s: float = 0.5,
        audio_s: float | None = None,
        output: OutputSpec | None = None,
        observation_timeout_s: float | None = None,
    ) -> Watch:
        """Ask ``question`` every ``interval_s`` seconds, and/or when the scene changes, and/or
        when the sound gets loud (its level over the last ``sound_window_s`` rises above
        ``sound_threshold_dbfs``; both thresholds default to the agent's, which :meth:`from_config`
        takes from ``video.scene_change_threshold`` and ``video.sound_threshold_dbfs``)::

            async for seen in agent.watch("What changed?", on_scene_change=True, max_observations=5):
                print(seen.trigger, seen.text, seen.frame_ts)

        Each :class:`~argentic.agents.visual_watch.Sighting` is also published on
        ``{ns}/agents/{role}/observations``. Leaving the loop stops the watch; it also ends after
        ``max_observations`` attempts or ``duration_s`` seconds. Each observation may take up to
        ``observation_timeout_s`` (default: the frame and model timeouts bound it). A failed
        observation (no frames, a model error) is logged and the watch goes on.
        ``await agent.watch(...)`` (the older form) runs it through without giving the sightings.
        """
        return Watch(
            self,
            question,
            interval_s=interval_s,
            on_scene_change=on_scene_change,
            scene_threshold=self.scene_threshold if scene_threshold is None else scene_threshold,
            check_every_s=check_every_s,
            max_observations=max_observations,
            duration_s=duration_s,
            policy=policy,
            on_sound=on_sound,
            sound_threshold_dbfs=self.sound_threshold_dbfs
            if sound_threshold_dbfs is None
            else sound_threshold_dbfs,
            sound_window_s=sound_window_s,
            audio_s=audio_s,
            output=output,
            observation_timeout_s=observation_timeout_s,
        )

    def start_watch(self, question: str, **options: Any) -> asyncio.Task[None]:
        """Older form: run :meth:`watch` in a background task (observations are published, not
        returned); :meth:`stop_watch` or :meth:`stop` ends it. Prefer ``async for`` over
        :meth:`watch`, which needs no task."""
        if self._watch_task is not None and not self._watch_task.done():
            raise UsageError("this agent is already watching; stop_watch() first")
        watch = self.watch(question, **options)
        self._watch_task = asyncio.create_task(watch.run(), name=f"watch-{self.role}")
        return self._watch_task

    async def stop_watch(self) -> None:
        """Older form: end the watch :meth:`start_watch` began (nothing when none runs)."""
        task, self._watch_task = self._watch_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        await self.stop_watch()
        await super().stop()
        if self._owned_audio is not None and self._owned_audio_started:
            self._owned_audio_started = False
            await self._owned_audio.stop()


def source_or_driver(
    source: FrameSource | None, driver: FrameSource | None, where: str
) -> FrameSource | None:
    """``source``, or ``driver`` (its deprecated older name) with a warning; not both."""
    # called from VisualAgent's __init__ or from_config: the warning points at their caller
    return renamed(source, driver, where=where, name="source", older_name="driver", stacklevel=5)


def video_options(video: VideoConfig, llm: LLMProvider | None = None) -> dict[str, Any]:
    """VisualAgent keyword arguments from the ``video`` config section."""
    limit = video.max_images_per_prompt
    if llm is not None and llm.max_images_per_prompt is not None:
        limit = min(limit, llm.max_images_per_prompt)
    return {
        "audio_s": video.audio_s,
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
        "scene_threshold": video.scene_change_threshold,
        "sound_threshold_dbfs": video.sound_threshold_dbfs,
    }
