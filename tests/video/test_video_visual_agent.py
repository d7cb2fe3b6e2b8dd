"""The VisualAgent with a recording model: the right frames, as valid JPEGs, within the image limit."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from argentic.agents.frame_messages import EARLIER_FRAME_NOTE, strip_earlier_images
from argentic.agents.visual_agent import VisualAgent
from argentic.errors import VideoError
from argentic.llm import ChatMessage, ChatRequest, FunctionLLM, ImagePart, ScriptedLLM, TextPart, tool_call
from argentic.llm.profiles import ModelProfile, register_profile
from argentic.messaging import Messager
from argentic.protocol import Answer, ErrorReply, Observation, Question
from argentic.tools import ToolManager, ToolService, tool
from argentic.video import FileSource, FramesOverWindow, TestPatternSource, read_frame_code
from argentic.video.encode import decode_data_url

MessagerFactory = Callable[[], Awaitable[Messager]]
VideoWriter = Callable[..., Path]


def images_of(message: ChatMessage) -> list[ImagePart]:
    return (
        [p for p in message.content if isinstance(p, ImagePart)] if isinstance(message.content, list) else []
    )


def decode_jpeg(url: str) -> np.ndarray:
    assert url.startswith("data:image/jpeg;base64,")
    image = Image.open(io.BytesIO(decode_data_url(url)))
    assert image.format == "JPEG"
    return np.asarray(image.convert("RGB"))


def request_images(request: ChatRequest) -> list[np.ndarray]:
    return [decode_jpeg(part.url) for m in request.messages for part in images_of(m)]


def recording_llm(reply: str = "I see a test pattern.", **options: Any) -> FunctionLLM:
    return FunctionLLM(lambda request: reply, **options)


@pytest.fixture
async def pattern() -> Any:
    source = TestPatternSource(320, 240, fps=30)
    await source.start()
    await source.wait_for_frame(10)
    yield source
    await source.stop()


async def test_query_sends_the_latest_frame_as_one_jpeg(pattern: TestPatternSource) -> None:
    llm = recording_llm()
    agent = VisualAgent(llm=llm, source=pattern)
    answer = await agent.query_with_video("What frame number is shown?")
    assert answer == "I see a test pattern."
    request = llm.last_request
    user = request.messages[-1]
    assert user.role == "user" and len(images_of(user)) == 1
    assert any(isinstance(p, TextPart) and "What frame number" in p.text for p in user.content or [])
    (image,) = request_images(request)
    assert image.shape == (240, 320, 3)
    sent = agent.last_frames[0].frame
    assert read_frame_code(image) == sent.index


async def test_frames_over_a_window_are_capped_by_the_image_limit(pattern: TestPatternSource) -> None:
    await pattern.wait_for_frame(10, newer_than=20)
    llm = recording_llm()
    agent = VisualAgent(
        llm=llm, source=pattern, policy=FramesOverWindow(frames=6, window_s=30), max_images_per_prompt=3
    )
    await agent.query_with_video("What changed?")
    images = request_images(llm.last_request)
    assert len(images) == 3
    codes = [read_frame_code(image) for image in images]
    assert codes == sorted(codes) and len(set(codes)) == 3
    assert codes == [f.frame.index for f in agent.last_frames]


async def test_the_provider_limit_applies_and_images_are_scaled(pattern: TestPatternSource) -> None:
    await pattern.wait_for_frame(10, newer_than=5)
    llm = recording_llm(max_images_per_prompt=2)
    agent = VisualAgent(
        llm=llm, source=pattern, policy=FramesOverWindow(frames=5, window_s=30), max_image_side=160
    )
    assert agent.image_limit == 2
    await agent.query_with_video("Describe.")
    images = request_images(llm.last_request)
    assert [image.shape for image in images] == [(120, 160, 3), (120, 160, 3)]
    assert [read_frame_code(image) for image in images] == [f.frame.index for f in agent.last_frames]


async def test_a_conversation_carries_only_the_newest_frame(pattern: TestPatternSource) -> None:
    llm = recording_llm()
    agent = VisualAgent(llm=llm, source=pattern)
    await agent.answer_with_video("First look.", conversation_id="c1")
    first_index = agent.last_frames[0].frame.index
    await pattern.wait_for_frame(10, newer_than=first_index)
    await agent.answer_with_video("And now?", conversation_id="c1")
    request = llm.last_request
    with_images = [m for m in request.messages if images_of(m)]
    assert len(with_images) == 1 and with_images[0] is request.messages[-1]
    assert read_frame_code(request_images(request)[0]) > first_index
    earlier = request.messages[-3]  # the first question, its answer, then the new question
    assert earlier.role == "user" and any(
        isinstance(p, TextPart) and p.text == EARLIER_FRAME_NOTE for p in earlier.content or []
    )
    # the stored history holds no image data
    assert not any(images_of(m) for m in agent.conversations.history("c1"))


async def test_concurrent_questions_keep_their_own_frame_policy(pattern: TestPatternSource) -> None:
    await pattern.wait_for_frame(10, newer_than=20)
    both_in_model = asyncio.Barrier(2)

    async def reply(request: ChatRequest) -> str:
        await both_in_model.wait()  # the two questions are answered at the same time
        return f"{len(request_images(request))} images"

    agent = VisualAgent(llm=FunctionLLM(reply), source=pattern, max_images_per_prompt=3)
    window = FramesOverWindow(frames=3, window_s=30)
    one, three = await asyncio.gather(
        agent.answer_with_video("Latest?", conversation_id="a"),
        agent.answer_with_video("Over time?", conversation_id="b", policy=window),
    )
    assert (one.text, three.text) == ("1 images", "3 images")
    assert not any(images_of(m) for c in ("a", "b") for m in agent.conversations.history(c))


def test_strip_earlier_images_keeps_the_newest_within_the_limit() -> None:
    old = ChatMessage.user("old", images=["data:image/jpeg;base64,AA=="])
    new = ChatMessage.user("new", images=[f"data:image/jpeg;base64,{c}A==" for c in "BCD"])
    stripped = strip_earlier_images([old, ChatMessage.assistant("ok"), new], limit=2)
    assert images_of(stripped[0]) == []
    assert [p.url for p in images_of(stripped[2])] == [
        "data:image/jpeg;base64,CA==",
        "data:image/jpeg;base64,DA==",
    ]
    assert images_of(new) and len(images_of(new)) == 3, "the input is not changed"


async def test_no_frames_yet_is_a_clear_error_and_the_agent_keeps_serving() -> None:
    source = TestPatternSource(160, 120, fps=30)  # not started yet: no frames
    llm = recording_llm()
    agent = VisualAgent(llm=llm, source=source, frame_timeout_s=0.2)
    with pytest.raises(VideoError, match="no video frame arrived"):
        await agent.query_with_video("Anything?")
    assert llm.requests == []
    await source.start()
    try:
        assert await agent.query_with_video("Anything now?") == "I see a test pattern."
    finally:
        await source.stop()


async def test_a_video_file_feeds_the_agent(pattern_video: VideoWriter) -> None:
    source = FileSource(pattern_video(frames=20), realtime=False, buffer_size=30)
    await source.start()
    llm = recording_llm()
    agent = VisualAgent(
        llm=llm, source=source, policy=FramesOverWindow(frames=4, window_s=3600), max_images_per_prompt=4
    )
    with pytest.raises(VideoError):  # let the whole file decode
        await source.wait_for_frame(10, newer_than=1000)
    await agent.query_with_video("What happens?")
    codes = [read_frame_code(image) for image in request_images(llm.last_request)]
    assert codes == [0, 6, 13, 19]


async def test_questions_over_mqtt_get_answers_with_frames(
    pattern: TestPatternSource, messagers: MessagerFactory
) -> None:
    llm = recording_llm("a coloured test card")
    agent = VisualAgent(llm=llm, messager=await messagers(), source=pattern, role="eye")
    await agent.async_init()
    client = await messagers()
    reply = await client.request(
        client.topics.agent_questions("eye"), Question(text="What do you see?"), timeout=20
    )
    assert isinstance(reply, Answer) and reply.text == "a coloured test card"
    (image,) = request_images(llm.last_request)
    assert read_frame_code(image) == agent.last_frames[0].frame.index
    await agent.stop()


async def test_no_frames_over_mqtt_is_an_error_reply_then_service_resumes(messagers: MessagerFactory) -> None:
    source = TestPatternSource(160, 120, fps=30)
    agent = VisualAgent(
        llm=recording_llm(), messager=await messagers(), source=source, role="blind", frame_timeout_s=0.2
    )
    await agent.async_init()
    client = await messagers()
    topic = client.topics.agent_questions("blind")
    reply = await client.request(topic, Question(text="What do you see?"), timeout=20)
    assert isinstance(reply, ErrorReply)
    assert reply.error.code == "no_frames"
    assert "no video frame arrived" in reply.error.message
    await source.start()
    reply = await client.request(topic, Question(text="And now?"), timeout=20)
    assert isinstance(reply, Answer)
    await agent.stop()
    await source.stop()


@tool
def frame_parity(index: int) -> str:
    """Say whether a frame number is even or odd."""
    return "even" if index % 2 == 0 else "odd"


async def test_tools_work_as_for_agent(pattern: TestPatternSource, messagers: MessagerFactory) -> None:
    service = ToolService(await messagers(), [frame_parity], "video-tools")
    await service.start()
    manager = ToolManager(await messagers())
    await manager.async_init()
    await manager.wait_for_tools("frame_parity")

    def decide(request: ChatRequest) -> Any:
        messages = request.messages
        if messages[-1].role == "tool":
            return f"the frame is {messages[-1].content}"
        (image,) = [decode_jpeg(p.url) for m in messages for p in images_of(m)]
        return tool_call("frame_parity", {"index": read_frame_code(image)})

    llm = ScriptedLLM([decide, decide])
    agent = VisualAgent(llm=llm, tool_manager=manager, source=pattern)
    result = await agent.answer_with_video("Is the frame number even?")
    index = agent.last_frames[0].frame.index
    assert [(c.name, c.arguments, c.ok) for c in result.tool_calls] == [
        ("frame_parity", {"index": index}, True)
    ]
    assert result.tool_calls[0].result == ("even" if index % 2 == 0 else "odd")
    await service.stop()
    await manager.close()


async def test_watch_publishes_observations_on_an_interval(
    pattern: TestPatternSource, messagers: MessagerFactory
) -> None:
    watcher = await messagers()
    seen: list[Observation] = []

    async def record(observation: Observation) -> None:
        seen.append(observation)

    await watcher.subscribe(watcher.topics.agent_observations("watcher"), record, model=Observation)
    llm = recording_llm("all quiet")
    agent = VisualAgent(llm=llm, messager=await messagers(), source=pattern, role="watcher")
    await agent.watch("Anything unusual?", interval_s=0.05, max_observations=3)
    async with asyncio.timeout(20):
        while len(seen) < 3:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert [o.text for o in seen] == ["all quiet"] * 3
    assert all(o.question == "Anything unusual?" and o.frame_ts is not None for o in seen)
    indices = [o.data["frame_index"] for o in seen]
    assert indices == sorted(indices)
    # each observation stands alone: one image, no history
    assert all(len(r.messages) == 2 and len(request_images(r)) == 1 for r in llm.requests)


async def test_watch_on_scene_change_sees_each_new_scene() -> None:
    source = TestPatternSource(160, 120, fps=30, scene_every=10)
    await source.start()
    llm = recording_llm("a new scene")
    agent = VisualAgent(llm=llm, source=source)
    await agent.watch(
        "What is new?", interval_s=None, on_scene_change=True, check_every_s=0.02, max_observations=4
    )
    await source.stop()
    scenes = [read_frame_code(request_images(r)[0]) // 10 for r in llm.requests]
    assert len(scenes) == 4
    assert scenes == sorted(set(scenes)), "every observation shows a scene not seen before"


async def test_a_failing_model_does_not_stop_the_watch(pattern: TestPatternSource) -> None:
    from argentic.errors import LLMRequestError

    llm = ScriptedLLM([LLMRequestError("bad request", status_code=400), "fine"])
    agent = VisualAgent(llm=llm, source=pattern)
    await agent.watch("Status?", interval_s=0.01, max_observations=2)
    assert len(llm.requests) == 2 and agent.observations == 1


def test_from_config_takes_the_video_section_and_the_provider_limit() -> None:
    from argentic.config import ArgenticConfig, VideoConfig

    config = ArgenticConfig(
        video=VideoConfig(max_images_per_prompt=3, sampling="window", frames_per_prompt=3, max_image_side=512)
    )
    agent = VisualAgent.from_config(config, llm=recording_llm(max_images_per_prompt=2), role="cam")
    assert agent.role == "cam"
    assert agent.image_limit == 2, "the smaller of the configured and the provider's limit"
    assert agent.sampling == FramesOverWindow(frames=3, window_s=2.0)
    assert agent.max_image_side == 512
    assert isinstance(agent.source, TestPatternSource), "video.source names the source"


async def test_the_models_profile_sets_the_image_limit_when_nothing_else_does() -> None:
    register_profile("test/three-images", ModelProfile(max_images_per_prompt=3))
    llm = ScriptedLLM(["seen"], model_name="test/three-images", repeat_last=True)
    async with TestPatternSource(160, 120, fps=30) as source:
        await source.wait_for_frame(5)
        await asyncio.sleep(0.2)  # a few frames to choose from
        agent = VisualAgent(llm=llm, source=source, policy=FramesOverWindow(frames=5, window_s=1.0))
        assert agent.image_limit == 1  # the model's name is not known yet
        await agent.query_with_video("what?")
        assert agent.image_limit == 3 and len(llm.last_request.messages[-1].images) == 3
        explicit = VisualAgent(
            llm=llm, source=source, max_images_per_prompt=2, policy=FramesOverWindow(frames=5)
        )
        await explicit.query_with_video("what?")
        assert explicit.image_limit == 2 and len(llm.last_request.messages[-1].images) == 2
