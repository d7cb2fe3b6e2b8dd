"""Watch mode as an async iterator of typed sightings, its older shims, the deprecated ``driver=``
spelling, and a visual agent opened from the config with what it runs on."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import BaseModel

from argentic import AgentClient
from argentic.agents.visual_agent import VisualAgent
from argentic.agents.visual_service import open_visual_agent
from argentic.agents.visual_watch import Sighting
from argentic.config import ArgenticConfig, MessagingConfig, VideoConfig
from argentic.errors import ArgumentError, UsageError, VideoError
from argentic.llm import ChatRequest, FunctionLLM, ImagePart, ScriptedLLM
from argentic.messaging import Messager
from argentic.protocol import Observation
from argentic.testing.mosquitto import MosquittoBroker
from argentic.video import FileSource, TestPatternSource, read_frame_code
from argentic.video.encode import decode_data_url

REPO = Path(__file__).resolve().parents[2]
MessagerFactory = Callable[[], Awaitable[Messager]]
VideoWriter = Callable[..., Path]


@pytest.fixture
async def pattern() -> AsyncIterator[TestPatternSource]:
    async with TestPatternSource(320, 240, fps=30) as source:
        await source.wait_for_frame(10)
        yield source


def shown_codes(request: ChatRequest) -> list[int]:
    codes = []
    for message in request.messages:
        for part in message.content if isinstance(message.content, list) else []:
            if isinstance(part, ImagePart):
                image = Image.open(io.BytesIO(decode_data_url(part.url))).convert("RGB")
                codes.append(read_frame_code(np.asarray(image)))
    return codes


async def collect(messager: Messager, role: str) -> list[Observation]:
    seen: list[Observation] = []

    async def record(observation: Observation) -> None:
        seen.append(observation)

    await messager.subscribe(messager.topics.agent_observations(role), record, model=Observation)
    return seen


async def test_async_for_gives_typed_sightings_and_still_publishes_them(
    pattern: TestPatternSource, messagers: MessagerFactory
) -> None:
    published = await collect(await messagers(), "eyes")
    llm = FunctionLLM(lambda request: f"frame {shown_codes(request)[0]}")
    agent = VisualAgent(llm=llm, messager=await messagers(), source=pattern, role="eyes")
    sightings: list[Sighting] = []
    async with asyncio.timeout(20):
        async for seen in agent.watch("Which frame?", interval_s=0.05, max_observations=3):
            sightings.append(seen)
    assert len(sightings) == 3 and agent.observations == 3
    for seen, request in zip(sightings, llm.requests, strict=True):
        assert isinstance(seen, Sighting)
        assert (seen.role, seen.question, seen.trigger) == ("eyes", "Which frame?", "interval")
        (code,) = shown_codes(request)
        assert seen.frame_indices == (code,) and seen.text == f"frame {code}"
        assert seen.frame_ts == seen.frame_timestamps[-1] and abs(time.time() - seen.frame_ts) < 20
    indices = [s.frame_indices[0] for s in sightings]
    assert indices == sorted(indices) and len(set(indices)) == 3, "each looks at a newer frame"
    # what other clients follow is unchanged: the same observations, in the same wire shape
    async with asyncio.timeout(20):
        while len(published) < 3:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert published == [s.message for s in sightings]
    first = published[0]
    assert first.text == sightings[0].text and first.frame_ts == sightings[0].frame_ts
    assert first.data == {
        "frames": 1,
        "frame_index": sightings[0].frame_indices[0],
        "tool_calls": [],
        "audio_s": None,
        "trigger": "interval",
    }


async def test_breaking_out_of_the_loop_stops_the_watch(pattern: TestPatternSource) -> None:
    llm = FunctionLLM(lambda request: "ok")
    agent = VisualAgent(llm=llm, source=pattern)
    watch = agent.watch("Still there?", interval_s=0.02)  # no limit of its own
    async with asyncio.timeout(20):
        async for _ in watch:
            if agent.observations == 2:
                break
    await asyncio.sleep(0.3)  # fifteen intervals: nothing runs between steps of the loop
    assert len(llm.requests) == 2
    # leaving ``async with`` closes it for good
    async with agent.watch("Again?", interval_s=0.02) as again:
        first = await anext(again)
        assert first.text == "ok"
    with pytest.raises(StopAsyncIteration):
        await anext(again)
    assert len(llm.requests) == 3


async def test_duration_bounds_a_watch_that_would_wait_for_ever() -> None:
    async with TestPatternSource(160, 120, fps=30) as still:  # no scene changes after the first
        await still.wait_for_frame(10)
        agent = VisualAgent(llm=FunctionLLM(lambda request: "a scene"), source=still)
        started = time.monotonic()
        async with asyncio.timeout(10):
            seen = [
                s.trigger
                async for s in agent.watch("New?", interval_s=None, on_scene_change=True, duration_s=0.6)
            ]
        took = time.monotonic() - started
    assert seen == ["scene_change"], "the first frame is a scene; the static pattern brings no other"
    assert 0.6 <= took < 5


async def test_a_slow_observation_times_out_and_the_watch_goes_on(pattern: TestPatternSource) -> None:
    async def slow_then_quick(request: ChatRequest) -> str:
        if len(llm.requests) == 1:
            await asyncio.sleep(30)
        return "in time"

    llm = FunctionLLM(slow_then_quick)
    agent = VisualAgent(llm=llm, source=pattern)
    watch = agent.watch("?", interval_s=0.01, max_observations=2, observation_timeout_s=0.3)
    async with asyncio.timeout(10):
        texts = [seen.text async for seen in watch]
    assert texts == ["in time"]
    assert (watch.failures, watch.observations, len(llm.requests)) == (1, 1, 2)


class Count(BaseModel):
    shapes: int


async def test_a_watch_with_output_gives_validated_data(
    pattern: TestPatternSource, messagers: MessagerFactory
) -> None:
    published = await collect(await messagers(), "counter")
    llm = ScriptedLLM(['{"shapes": 3}'], repeat_last=True)
    agent = VisualAgent(llm=llm, messager=await messagers(), source=pattern, role="counter")
    async with asyncio.timeout(20):
        (seen,) = [s async for s in agent.watch("How many shapes?", output=Count, max_observations=1)]
        while not published:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert seen.data == Count(shapes=3)
    assert published[0].data["answer"] == {"shapes": 3}


async def test_watch_arguments_are_checked_at_once(pattern: TestPatternSource) -> None:
    agent = VisualAgent(llm=ScriptedLLM([]), source=pattern)
    with pytest.raises(ArgumentError, match="interval_s, on_scene_change, on_sound"):
        agent.watch("?", interval_s=None)
    with pytest.raises(ArgumentError, match="duration_s must be positive"):
        agent.watch("?", duration_s=0)


async def test_the_configured_thresholds_are_the_watchs_defaults(pattern: TestPatternSource) -> None:
    config = ArgenticConfig(video=VideoConfig(scene_change_threshold=0.3, sound_threshold_dbfs=-12))
    agent = VisualAgent.from_config(config, llm=ScriptedLLM([]), source=pattern)
    watch = agent.watch("?", on_scene_change=True, on_sound=True)
    assert watch._detector is not None and watch._detector.threshold == 0.3
    assert watch._hearing is not None and watch._hearing.threshold_dbfs == -12
    own = agent.watch("?", on_scene_change=True, scene_threshold=0.05)
    assert own._detector is not None and own._detector.threshold == 0.05


async def test_start_watch_and_stop_watch_still_work(
    pattern: TestPatternSource, messagers: MessagerFactory
) -> None:
    published = await collect(await messagers(), "old")
    llm = FunctionLLM(lambda request: "seen")
    agent = VisualAgent(llm=llm, messager=await messagers(), source=pattern, role="old")
    task = agent.start_watch("Anything?", interval_s=0.02)
    with pytest.raises(UsageError, match="already watching"):
        agent.start_watch("Twice?")
    async with asyncio.timeout(20):
        while len(published) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    await agent.stop_watch()
    assert task.cancelled()
    made = len(llm.requests)
    await asyncio.sleep(0.2)
    assert len(llm.requests) == made, "stopped"
    assert all(o.text == "seen" and o.data["trigger"] == "interval" for o in published)


async def test_driver_is_a_deprecated_name_for_source(pattern: TestPatternSource) -> None:
    llm = ScriptedLLM([])
    with pytest.warns(DeprecationWarning, match=r"VisualAgent\(driver=\.\.\.\) is deprecated: pass source="):
        agent = VisualAgent(llm=llm, driver=pattern)
    assert agent.source is pattern
    with pytest.warns(DeprecationWarning, match="VisualAgent.driver is deprecated"):
        assert agent.driver is pattern
    with pytest.warns(DeprecationWarning, match=r"from_config\(driver=\.\.\.\) is deprecated"):
        built = VisualAgent.from_config(ArgenticConfig(), llm=llm, driver=pattern)
    assert built.source is pattern
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling warns about nothing
        assert VisualAgent(llm=llm, source=pattern).source is pattern
        assert VisualAgent(llm, None, None, pattern).source is pattern  # positional, as before
        assert VisualAgent.from_config(ArgenticConfig(), llm=llm, source=pattern).source is pattern
    other = TestPatternSource(160, 120)
    with pytest.warns(DeprecationWarning), pytest.raises(ArgumentError, match="not both"):
        VisualAgent(llm=llm, source=pattern, driver=other)


def test_a_missing_source_or_bad_sound_setting_is_a_config_error() -> None:
    with pytest.raises(ArgumentError, match="needs a frame source: pass source="):
        VisualAgent(llm=ScriptedLLM([]))
    with pytest.raises(ArgumentError, match="audio_s must be positive"):
        VisualAgent(llm=ScriptedLLM([]), source=TestPatternSource(160, 120), audio_s=0)


async def test_wait_for_feed_waits_for_frames_and_sound(pattern_video: VideoWriter) -> None:
    async with TestPatternSource(160, 120, fps=30) as source:
        agent = VisualAgent(llm=ScriptedLLM([]), source=source, audio_s=0.5)
        frame = await agent.wait_for_feed(10)
        assert frame.width == 160
        assert agent.audio_buffer is not None
        assert agent.audio_buffer.pushed >= 15, "half a second of the tone (a chunk a frame)"
    async with FileSource(pattern_video(frames=5), realtime=False) as silent:
        with pytest.raises(VideoError, match="FileSource has no sound"):
            await VisualAgent(llm=ScriptedLLM([]), source=silent, audio_s=0.5).wait_for_feed(10)


async def test_open_visual_agent_builds_it_from_the_config_and_stops_it(
    mosquitto: MosquittoBroker, namespace: str
) -> None:
    config = ArgenticConfig.model_validate(
        {
            "messaging": MessagingConfig(
                broker_address="127.0.0.1", port=mosquitto.port, namespace=namespace, persistent=False
            ).model_dump(),
            "llm": {"provider": "scripted"},
            "video": {"source": "test_pattern", "scene_change_threshold": 0.2},
        }
    )
    lines: list[str] = []
    async with open_visual_agent(config, role="cam", tools=True, progress=lines.append) as agent:
        assert agent.role == "cam" and isinstance(agent.source, TestPatternSource)
        assert agent.tool_manager is not None and agent.scene_threshold == 0.2
        await agent.wait_for_feed(10)
        assert agent.messager is not None
        answer = await AgentClient(agent.messager, "cam").ask("echo this")
        assert answer.startswith("echo this"), "the scripted provider echoes the question"
        assert agent.last_look.describe() == "1 frame(s), 640x480 JPEG"
        source = agent.source
    assert lines == [], "the broker answered: nothing was started"
    frames = source.frames_seen
    await asyncio.sleep(0.2)
    assert source.frames_seen == frames, "the source was stopped on exit"


async def test_the_watch_command_serves_watches_and_stops_on_sigint(
    mosquitto: MosquittoBroker, namespace: str, messagers: MessagerFactory
) -> None:
    published = await collect(await messagers(), "door")
    env = {
        **os.environ,
        "ARGENTIC_CONFIG": str(REPO / "config.yaml"),
        "ARGENTIC_LLM__PROVIDER": "scripted",
        "ARGENTIC_MESSAGING__BROKER_ADDRESS": "127.0.0.1",
        "ARGENTIC_MESSAGING__PORT": str(mosquitto.port),
        "ARGENTIC_MESSAGING__NAMESPACE": namespace,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "argentic.cli.main", "watch", "--role", "door", "-q", "Who is there?",
        "--interval", "0.2",
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(60):
            while len(published) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            client = await messagers()
            assert (await AgentClient(client, "door").ask("hello")).startswith("hello")
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()[-2000:]
    assert "observations on" in err.decode() and "Ctrl-C stops" in err.decode()
    assert all(o.role == "door" and o.question == "Who is there?" for o in published)
    assert published[0].text.startswith("Who is there?"), "the scripted provider echoes the question"


async def test_a_watch_is_still_a_coroutine_for_older_callers(pattern: TestPatternSource) -> None:
    llm = FunctionLLM(lambda request: "ran")
    agent = VisualAgent(llm=llm, source=pattern)
    task = asyncio.create_task(agent.watch("?", interval_s=0.02, max_observations=2))
    assert await asyncio.wait_for(task, 20) is None
    assert agent.observations == 2
    endless = asyncio.create_task(agent.watch("?", interval_s=0.02))
    async with asyncio.timeout(20):
        while agent.observations < 3:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    endless.cancel()
    with pytest.raises(asyncio.CancelledError):
        await endless
    made = len(llm.requests)
    await asyncio.sleep(0.2)
    assert len(llm.requests) == made, "cancelling the task stopped the watch"
