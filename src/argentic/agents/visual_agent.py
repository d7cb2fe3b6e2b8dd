"""An agent that sees (and hears): each question goes to the model with frames from a video source,
and with ``audio_s`` the last seconds of its sound.

The frames come from the agent's message builder, :class:`~argentic.agents.frame_messages.FrameMessages`:
picked by a sampling policy (the latest frame; N frames over the last T seconds; scene changes),
scaled to fit the model's image size, JPEG-encoded in a worker thread, and sent as image parts,
never more than the model takes in one prompt (Gemma 3n on vLLM: one image unless the server
raises ``--limit-mm-per-prompt``). Earlier turns of a conversation keep their text but not their
images, so a long conversation stays within that limit and in memory.

Questions arrive over MQTT as for :class:`~argentic.agents.agent.Agent`, and tools work the same.
Watch mode asks a standing question every few seconds and/or whenever the scene changes and/or
when the sound gets loud, and publishes each :class:`~argentic.protocol.Observation` on
``{ns}/agents/{role}/observations``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from argentic.agents.agent import Agent, AgentResult
from argentic.agents.frame_messages import FrameMessages, Look
from argentic.agents.loop import EventSink, LoopPolicy, NullEvents
from argentic.config import AgentConfig, ArgenticConfig, VideoConfig
from argentic.errors import ArgumentError, UsageError
from argentic.llm import LLMProvider, OutputSpec
from argentic.llm.profiles import profile_for
from argentic.protocol import Observation, Question
from argentic.video.audio import AudioClip, AudioSource, SoundLevelDetector
from argentic.video.encode import EncodedFrame
from argentic.video.factory import audio_source_from_config, source_from_config
from argentic.video.frames import AudioBuffer
from argentic.video.sampling import LatestFrame, SamplingPolicy, SceneChangeDetector, make_policy
from argentic.video.source import FrameSource

if TYPE_CHECKING:
    from argentic.messaging import Messager
    from argentic.tools import ToolManager

log = logging.getLogger(__name__)


class VisualAgent(Agent):
    """An :class:`Agent` whose questions come with frames from ``driver`` (any frame source).

    ``max_images_per_prompt`` defaults to what the provider reports, else 1. ``frame_timeout_s``
    is how long a question waits for a first frame before it fails with :class:`VideoError`.
    With ``audio_s`` each question also carries the last ``audio_s`` seconds of sound, from
    ``audio_source`` or else the frame source's own (WebRTC, a video file's track, the test
    pattern), as one 16 kHz WAV clip; ``max_audio_per_prompt`` (default: the provider's limit,
    else 1) caps the clips, and 0 sends none.
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
        audio_s: float | None = None,
        audio_source: AudioSource | None = None,
        max_audio_per_prompt: int | None = None,
        **agent_options: Any,
    ) -> None:
        if system_prompt is None:
            system_prompt = (
                "You are a visual assistant. You see video frames attached to each question; "
                "answer from what they show. Use the tools when they help."
            )
        chosen = driver if driver is not None else source
        if chosen is None:
            raise ArgumentError(
                "VisualAgent needs a frame source: pass driver= (a WebRTCDriver, FileSource, ...)"
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

    @property
    def source(self) -> FrameSource:
        return self.frames.source

    @property
    def driver(self) -> FrameSource:
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
        owned_audio = None if "audio_source" in overrides else audio_source_from_config(video)
        if owned_audio is not None:
            overrides["audio_source"] = owned_audio
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
        visual = cls(llm, messager, tool_manager, driver, **options)
        visual._owned_audio = owned_audio  # built here from the config: the agent starts and stops it
        return visual

    async def _start_owned_audio(self) -> None:
        """Start the sound file source built from the config, once, and wait for its first sound."""
        owned = self._owned_audio
        if owned is None or self._owned_audio_started:
            return
        self._owned_audio_started = True
        await owned.start()
        if not len(owned.audio):
            with contextlib.suppress(TimeoutError):
                await owned.audio.wait(self.frames.frame_timeout_s)

    async def start(self) -> None:
        await self._start_owned_audio()
        await super().start()

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
        result = await self.ask_with_video(
            text, conversation_id=conversation_id, output=output, policy=policy, audio_s=audio_s
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
        audio_s: float | None = None,
    ) -> AgentResult:
        """Like :meth:`Agent.ask`, with frames picked by ``policy`` (default: the agent's) and
        ``audio_s`` seconds of sound (default: the agent's ``audio_s``)."""
        await self._start_owned_audio()
        await self.apply_profile()  # the model's image limit, before the builder is copied
        builder = self.frames.with_policy(policy).with_audio(audio_s)
        return await self.ask(
            question, conversation_id=conversation_id, output=output, events=events, builder=builder
        )

    async def sample_frames(self, policy: SamplingPolicy | None = None) -> list[EncodedFrame]:
        """Frames for one prompt, encoded; waits up to ``frame_timeout_s`` for a first frame."""
        return await self.frames.with_policy(policy).sample()

    async def sample_audio(self, seconds: float | None = None) -> AudioClip | None:
        """The last ``seconds`` (default: ``audio_s``) of the feed's sound at 16 kHz; None when no
        sound is asked for or allowed. Raises :class:`VideoError` when the source has no sound."""
        await self._start_owned_audio()
        return await self.frames.with_audio(seconds).sample_audio()

    # --- watch mode ---------------------------------------------------------------------------

    async def observe(
        self,
        question: str,
        *,
        policy: SamplingPolicy | None = None,
        audio_s: float | None = None,
        trigger: str | None = None,
    ) -> Observation:
        """Ask ``question`` about the current frames (and sound) once and publish the observation
        on ``{ns}/agents/{role}/observations`` when there is a messager. ``trigger`` (what set it
        off: "interval", "scene_change", "sound") is recorded in its data.

        Each observation stands alone: it has no conversation history and leaves none.
        """
        await self._start_owned_audio()
        await self.apply_profile()
        frames = self.frames.with_policy(policy).with_audio(audio_s)
        user, look = await frames.look(question)
        seen = look.frames
        result = await self.tool_loop(frames, NullEvents()).run([*self.system_messages(), user])
        observation = Observation(
            role=self.role,
            question=question,
            text=result.text,
            frame_ts=seen[-1].frame.timestamp if seen else None,
            data={
                "frames": len(seen),
                "frame_index": seen[-1].frame.index if seen else None,
                "tool_calls": [call.model_dump(mode="json") for call in result.tool_calls],
                "audio_s": round(look.clip.duration_s, 3) if look.clip is not None else None,
                "trigger": trigger,
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
        on_sound: bool = False,
        sound_threshold_dbfs: float = -30.0,
        sound_window_s: float = 0.5,
        audio_s: float | None = None,
    ) -> None:
        """Observe every ``interval_s`` seconds, and/or when the scene changes, and/or when the
        sound gets loud (its level over the last ``sound_window_s`` rises above
        ``sound_threshold_dbfs``), until cancelled (or after ``max_observations``). A failed
        observation (no frames, a model error) is logged and the watch goes on."""
        if interval_s is None and not on_scene_change and not on_sound:
            raise ArgumentError("watch needs interval_s, on_scene_change, on_sound, or a mix")
        await self._start_owned_audio()
        sound_buffer = self.audio_buffer
        if on_sound and sound_buffer is None:
            raise ArgumentError("watch(on_sound=True) needs a source with sound (or an audio_source)")
        loop = asyncio.get_running_loop()
        detector = SceneChangeDetector(scene_threshold) if on_scene_change else None
        hearing = SoundLevelDetector(sound_threshold_dbfs, sound_window_s) if on_sound else None
        polling = detector is not None or hearing is not None
        next_due = loop.time()
        last_index: int | None = None
        last_chunk = -1
        done = 0
        while max_observations is None or done < max_observations:
            due = interval_s is not None and loop.time() >= next_due
            changed = loud = False
            if detector is not None and not due:
                frame = self.source.latest()
                if frame is not None and frame.index != last_index:
                    last_index = frame.index
                    changed = await asyncio.to_thread(detector.changed, frame)
            new_sound = sound_buffer is not None and sound_buffer.pushed != last_chunk
            if hearing is not None and sound_buffer is not None and new_sound and not (due or changed):
                last_chunk = sound_buffer.pushed
                loud = await asyncio.to_thread(hearing.check, sound_buffer)
            if not (due or changed or loud):
                wait = check_every_s if polling else max(0.0, next_due - loop.time())
                if interval_s is not None:
                    wait = min(wait, max(0.0, next_due - loop.time()))
                await asyncio.sleep(wait)
                continue
            trigger = "scene_change" if changed else "sound" if loud else "interval"
            try:
                observation = await self.observe(question, policy=policy, audio_s=audio_s, trigger=trigger)
                log.info("observation (%s): %s", trigger, observation.text[:200])
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
            raise UsageError("this agent is already watching; stop_watch() first")
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
        if self._owned_audio is not None and self._owned_audio_started:
            self._owned_audio_started = False
            await self._owned_audio.stop()


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
    }
