"""Watch mode of the visual agent: a standing question asked every few seconds, and/or when the
scene changes, and/or when the sound gets loud, as an async iterator of typed sightings::

    async for seen in agent.watch("Anything at the door?", interval_s=5, max_observations=10):
        print(seen.trigger, seen.text)

Nothing runs between two steps of the loop: the next observation is looked for only when the loop
asks for it. So breaking out of the loop (or leaving ``async with agent.watch(...) as watch:``)
stops the watch, and a slow consumer never has observations queued up behind it. The scene-change
reference stays the last scene the model saw, so a change that happened meanwhile is still seen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from argentic.errors import ArgumentError, UsageError
from argentic.llm import OutputSpec
from argentic.protocol import Observation, ToolCallRecord
from argentic.video.audio import SoundLevelDetector
from argentic.video.sampling import SamplingPolicy, SceneChangeDetector

if TYPE_CHECKING:
    from argentic.agents.visual_agent import VisualAgent

log = logging.getLogger(__name__)

Trigger = Literal["interval", "scene_change", "sound"]


@dataclass(frozen=True)
class Sighting:
    """One observation: the question, the model's answer, and what it was shown.

    ``message`` is the :class:`~argentic.protocol.Observation` published for it on
    ``{ns}/agents/{role}/observations`` (when the agent has a messager).
    """

    role: str
    question: str
    text: str
    #: What set it off; None for a single :meth:`VisualAgent.sight` outside a watch.
    trigger: Trigger | None
    #: Capture times (seconds since the epoch) and source indices of the frames sent, oldest first.
    frame_timestamps: tuple[float, ...]
    frame_indices: tuple[int, ...]
    message: Observation
    #: The validated structured answer when the watch was given ``output=``, else None.
    data: Any = None
    #: Seconds of sound sent with it (None: none).
    audio_s: float | None = None
    tool_calls: tuple[ToolCallRecord, ...] = ()

    @property
    def frame_ts(self) -> float | None:
        """When the newest frame shown was captured."""
        return self.frame_timestamps[-1] if self.frame_timestamps else None


class Watch(Coroutine[Any, Any, None]):
    """The observations of one standing question: ``async for seen in watch`` (each a
    :class:`Sighting`), ``async with watch:`` to close it on leaving the block, or ``await watch``
    to run it through (each observation is still published), until cancelled.

    ``watch`` was a coroutine function before it gave sightings: a Watch is still a coroutine
    (``await``, ``asyncio.create_task(agent.watch(...))``), which runs it through.

    It ends after ``max_observations`` attempts (a failed one counts: the watch stays bounded when
    the model keeps failing), after ``duration_s`` seconds, or on :meth:`aclose`. A failed
    observation (no frames, a model error, over ``observation_timeout_s``) is logged, counted in
    :attr:`failures`, and the watch goes on. Made by :meth:`VisualAgent.watch`.
    """

    def __init__(
        self,
        agent: VisualAgent,
        question: str,
        *,
        interval_s: float | None = 5.0,
        on_scene_change: bool = False,
        scene_threshold: float = 0.12,
        check_every_s: float = 0.2,
        max_observations: int | None = None,
        duration_s: float | None = None,
        policy: SamplingPolicy | None = None,
        on_sound: bool = False,
        sound_threshold_dbfs: float = -30.0,
        sound_window_s: float = 0.5,
        audio_s: float | None = None,
        output: OutputSpec | None = None,
        observation_timeout_s: float | None = None,
    ) -> None:
        if interval_s is None and not on_scene_change and not on_sound:
            raise ArgumentError("watch needs interval_s, on_scene_change, on_sound, or a mix")
        for name, value in (
            ("interval_s", interval_s),
            ("duration_s", duration_s),
            ("observation_timeout_s", observation_timeout_s),
        ):
            if value is not None and value <= 0:
                raise ArgumentError(f"watch: {name} must be positive seconds (or None), got {value}")
        self.agent = agent
        self.question = question
        self.interval_s = interval_s
        self.check_every_s = check_every_s
        self.max_observations = max_observations
        self.duration_s = duration_s
        self.policy = policy
        self.audio_s = audio_s
        self.output = output
        self.observation_timeout_s = observation_timeout_s
        self._detector = SceneChangeDetector(scene_threshold) if on_scene_change else None
        self._hearing = SoundLevelDetector(sound_threshold_dbfs, sound_window_s) if on_sound else None
        #: Observations made, and attempts that failed.
        self.observations = 0
        self.failures = 0
        self._attempts = 0
        self._closed = False
        self._busy = False
        self._started = False
        self._next_due = 0.0
        self._deadline: float | None = None
        self._last_index: int | None = None
        self._last_chunk = -1
        self._running: Coroutine[Any, Any, None] | None = None

    # --- the ways to use it -------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Sighting:
        if self._busy:
            raise UsageError("a watch has one consumer: its previous observation is still being made")
        self._busy = True
        try:
            while not self._finished():
                if not self._started:
                    await self._begin()
                trigger = await self._next_trigger()
                if trigger is None:
                    break
                seen = await self._attempt(trigger)
                if seen is not None:
                    return seen
            self._closed = True
            raise StopAsyncIteration
        finally:
            self._busy = False

    async def aclose(self) -> None:
        """End the watch: the loop over it stops (an observation being made is not interrupted)."""
        self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def run(self) -> None:
        """Make every observation (each published, as always) until the watch ends."""
        async for _ in self:
            pass

    # The coroutine face (the older, run-through form): made on first use, so a watch used as an
    # iterator leaves no never-awaited coroutine behind.
    def _runner(self) -> Coroutine[Any, Any, None]:
        if self._running is None:
            self._running = self.run()
        return self._running

    def __await__(self) -> Generator[Any, None, None]:
        return self._runner().__await__()

    def send(self, value: Any) -> Any:
        return self._runner().send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if val is None and tb is None:
            return self._runner().throw(typ)  # the one-argument form (the others are deprecated)
        return self._runner().throw(typ, val, tb)

    def close(self) -> None:
        if self._running is not None:
            self._running.close()

    # --- the steps ----------------------------------------------------------------------------

    def _finished(self) -> bool:
        return self._closed or (self.max_observations is not None and self._attempts >= self.max_observations)

    async def _begin(self) -> None:
        await self.agent.start_audio()
        if self._hearing is not None and self.agent.audio_buffer is None:
            raise ArgumentError("watch(on_sound=True) needs a source with sound (or an audio_source)")
        now = asyncio.get_running_loop().time()
        self._next_due = now  # the first observation comes at once
        if self.duration_s is not None:
            self._deadline = now + self.duration_s
        self._started = True

    async def _next_trigger(self) -> Trigger | None:
        """Wait for what sets off the next observation; None when ``duration_s`` is over."""
        loop = asyncio.get_running_loop()
        detector, hearing, sound = self._detector, self._hearing, self.agent.audio_buffer
        polling = detector is not None or hearing is not None
        while True:
            now = loop.time()
            if self._deadline is not None and now >= self._deadline:
                return None
            if self.interval_s is not None and now >= self._next_due:
                return "interval"
            if detector is not None:
                frame = self.agent.source.latest()
                if frame is not None and frame.index != self._last_index:
                    self._last_index = frame.index
                    if await asyncio.to_thread(detector.changed, frame):
                        return "scene_change"
            if hearing is not None and sound is not None and sound.pushed != self._last_chunk:
                self._last_chunk = sound.pushed
                if await asyncio.to_thread(hearing.check, sound):
                    return "sound"
            wait = self.check_every_s if polling else self._next_due - loop.time()
            if self.interval_s is not None:
                wait = min(wait, self._next_due - loop.time())
            if self._deadline is not None:
                wait = min(wait, self._deadline - loop.time())
            await asyncio.sleep(max(0.0, wait))

    async def _attempt(self, trigger: Trigger) -> Sighting | None:
        self._attempts += 1
        seen: Sighting | None = None
        try:
            async with asyncio.timeout(self.observation_timeout_s):
                seen = await self.agent.sight(
                    self.question,
                    policy=self.policy,
                    audio_s=self.audio_s,
                    trigger=trigger,
                    output=self.output,
                )
            self.observations += 1
            log.info("observation (%s): %s", trigger, seen.text[:200])
        except Exception as exc:
            self.failures += 1
            log.warning("watch: no observation this time: %s", exc)
        loop = asyncio.get_running_loop()
        if self.interval_s is not None:
            self._next_due = loop.time() + self.interval_s
        if self._detector is not None and (latest := self.agent.source.latest()) is not None:
            # what the model just saw is the new reference scene
            self._last_index = latest.index
            await asyncio.to_thread(self._detector.changed, latest)
        return seen
