"""The VisualAgent against a real multimodal vLLM server on the CPU.

The server runs the CPU build's tiny vision-language model (``llm.server.cpu_model: tiny-vlm``): its
weights are random, so it sees nothing and its answers are noise, and only structure is asserted.
What is real is vLLM's image path: the server decodes argentic's JPEG parts, turns each into
``CPU_VLM_TOKENS_PER_IMAGE`` prompt tokens and enforces ``--limit-mm-per-prompt``. Generations are a
few tokens long so the tier stays cheap on a slow host.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from argentic.agents.visual_agent import VisualAgent
from argentic.config import LLMConfig, LLMServerConfig
from argentic.errors import LLMRequestError
from argentic.llm.local import CPU_VLM_TOKENS_PER_IMAGE
from argentic.llm.openai_provider import OpenAICompatibleProvider
from argentic.llm.types import ChatMessage, ChatRequest, ImagePart, SamplingSettings, StreamEnd, TextDelta
from argentic.messaging import Messager
from argentic.netutil import free_port
from argentic.protocol import Answer, Message, Observation, Question, TaskStatus, Token
from argentic.testing.vllm_server import VLM_IMAGE_LIMIT
from argentic.testing.waiting import wait_until
from argentic.video import FramesOverWindow, TestPatternSource

pytestmark = pytest.mark.vllm

MessagerFactory = Callable[[], Awaitable[Messager]]
REPO = Path(__file__).resolve().parents[2]
SHORT = SamplingSettings(max_tokens=4, temperature=0)


def provider(server: Any, limit: int | None = VLM_IMAGE_LIMIT) -> OpenAICompatibleProvider:
    """A provider made from config as an application makes it: the image limit comes from llm.server."""
    config = LLMConfig(
        vllm_base_url=server.base_url,
        vllm_model_name=server.model,
        max_tokens=4,
        temperature=0,
        timeout_s=300,  # a busy 2-core machine can be slow; a timeout is not the point
        server=LLMServerConfig(limit_mm_per_prompt={"image": limit} if limit else None),
    )
    return OpenAICompatibleProvider.from_config(config)


@pytest.fixture
async def pattern() -> AsyncIterator[TestPatternSource]:
    source = TestPatternSource(640, 480, fps=30, scene_every=15)
    await source.start()
    await source.wait_for_frame(10, newer_than=10)
    yield source
    await source.stop()


def with_images(message: ChatMessage, keep: int) -> ChatMessage:
    """``message`` with only its first ``keep`` image parts (its text unchanged)."""
    assert isinstance(message.content, list)
    parts, seen = [], 0
    for part in message.content:
        if isinstance(part, ImagePart):
            seen += 1
            if seen > keep:
                continue
        parts.append(part)
    return message.model_copy(update={"content": parts})


async def test_the_server_takes_the_agents_frames_and_counts_each_one(
    vlm_server: Any, pattern: TestPatternSource
) -> None:
    llm = provider(vlm_server)
    agent = VisualAgent(llm=llm, source=pattern, policy=FramesOverWindow(frames=4, window_s=5))
    try:
        assert agent.image_limit == VLM_IMAGE_LIMIT, "the limit comes from llm.server.limit_mm_per_prompt"
        result = await agent.answer_with_video("What do you see?")
        assert isinstance(result.text, str)
        assert len(agent.last_frames) == VLM_IMAGE_LIMIT, "four frames asked for, the limit sent"
        assert all((f.width, f.height) == (640, 480) for f in agent.last_frames)
        assert result.usage.prompt_tokens > VLM_IMAGE_LIMIT * CPU_VLM_TOKENS_PER_IMAGE

        # The agent's own request, with 0, 1 and 2 of its frames: each frame costs the model's tokens.
        question = await agent.frames.build(Question(text="What do you see?"))
        counts = []
        for keep in range(VLM_IMAGE_LIMIT + 1):
            reply = await llm.chat(
                ChatRequest(messages=[*agent.system_messages(), with_images(question, keep)], settings=SHORT)
            )
            counts.append(reply.usage.prompt_tokens)
        assert [c - counts[0] for c in counts] == [k * CPU_VLM_TOKENS_PER_IMAGE for k in range(len(counts))]
    finally:
        await llm.close()


async def test_a_prompt_over_the_limit_is_refused_and_argentic_stays_within_it(
    vlm_server: Any, pattern: TestPatternSource
) -> None:
    llm = provider(vlm_server)
    unaware = provider(vlm_server, limit=None)
    raw = openai.AsyncOpenAI(base_url=vlm_server.base_url, api_key="none", max_retries=0)
    agent = VisualAgent(llm=llm, source=pattern, policy=FramesOverWindow(frames=4, window_s=5))
    try:
        (frame, *_) = await agent.sample_frames()
        urls = [frame.url] * (VLM_IMAGE_LIMIT + 1)
        over = [ChatMessage.user("What do you see?", images=urls)]

        # the server refuses it: from the raw client, and through a provider that does not know the limit
        parts: list[Any] = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
        parts.append({"type": "text", "text": "What do you see?"})
        with pytest.raises(openai.BadRequestError) as refused:
            await raw.chat.completions.create(
                model=vlm_server.model,
                messages=[{"role": "user", "content": parts}],
                max_tokens=4,
            )
        assert refused.value.status_code == 400 and f"At most {VLM_IMAGE_LIMIT}" in str(refused.value)
        with pytest.raises(LLMRequestError) as from_server:
            await unaware.chat(ChatRequest(messages=over, settings=SHORT))
        assert from_server.value.status_code == 400

        # a provider that knows the limit refuses before sending
        with pytest.raises(LLMRequestError) as local:
            await llm.chat(ChatRequest(messages=over, settings=SHORT))
        assert local.value.status_code is None, "refused by argentic, not by the server"
        # the agent sends no more than the limit, and earlier turns lose their images, so a
        # conversation never adds up past it
        for _ in range(2):
            result = await agent.answer_with_video("And now?", conversation_id="c1")
            assert len(agent.last_frames) == VLM_IMAGE_LIMIT and isinstance(result.text, str)
    finally:
        await raw.close()
        await unaware.close()
        await llm.close()


async def test_streaming_against_the_multimodal_server(
    vlm_server: Any, pattern: TestPatternSource, messagers: MessagerFactory
) -> None:
    llm = provider(vlm_server)
    agent = VisualAgent(llm=llm, messager=await messagers(), source=pattern, role="eyes")
    try:
        # the provider's stream: text pieces, then the whole reply, counted like a plain request
        message = await agent.frames.build(Question(text="What do you see?"))
        events = [event async for event in llm.stream(ChatRequest(messages=[message], settings=SHORT))]
        assert isinstance(events[-1], StreamEnd)
        assert all(isinstance(event, TextDelta) for event in events[:-1]) and len(events) > 1
        plain = await llm.chat(ChatRequest(messages=[message], settings=SHORT))
        assert events[-1].response.usage.prompt_tokens == plain.usage.prompt_tokens
        assert plain.usage.prompt_tokens > CPU_VLM_TOKENS_PER_IMAGE

        # a streamed question over MQTT: tokens on the question's events topic, then the answer
        await agent.async_init()
        client = await messagers()
        question = Question(text="What do you see?", stream=True)
        seen: list[Message] = []

        async def on_event(event: Message) -> None:
            seen.append(event)

        await client.subscribe(client.topics.agent_events("eyes", question.id), on_event)
        answer = await client.request(
            client.topics.agent_questions("eyes"), question, response_model=Answer, timeout=300
        )
        assert isinstance(answer, Answer), answer
        assert answer.usage.prompt_tokens > CPU_VLM_TOKENS_PER_IMAGE, "the frame reached the model"
        await wait_until(lambda: any(isinstance(e, TaskStatus) and e.state == "completed" for e in seen))
        assert any(isinstance(e, Token) for e in seen)
    finally:
        await agent.stop()
        await llm.close()


async def test_watch_mode_against_the_multimodal_server(
    vlm_server: Any, pattern: TestPatternSource, messagers: MessagerFactory
) -> None:
    llm = provider(vlm_server)
    agent = VisualAgent(
        llm=llm,
        messager=await messagers(),
        source=pattern,
        role="watcher",
        policy=FramesOverWindow(frames=VLM_IMAGE_LIMIT, window_s=2),
    )
    client = await messagers()
    observations: asyncio.Queue[Observation] = asyncio.Queue(maxsize=8)

    async def on_observation(observation: Observation) -> None:
        observations.put_nowait(observation)

    await client.subscribe(client.topics.agent_observations("watcher"), on_observation, model=Observation)
    try:
        task = agent.start_watch("What changed?", interval_s=0.5, max_observations=2)
        got = [await asyncio.wait_for(observations.get(), 300) for _ in range(2)]
        await asyncio.wait_for(task, 30)
        assert agent.observations == 2
        for observation in got:
            assert observation.role == "watcher" and isinstance(observation.text, str)
            assert observation.data["frames"] == VLM_IMAGE_LIMIT
        assert got[0].data["frame_index"] < got[1].data["frame_index"], "each looks at newer frames"
    finally:
        await agent.stop()
        await llm.close()


def test_the_visual_example_runs_against_it(vlm_server: Any) -> None:
    """examples/visual_agent_vllm.py with --cpu, on a broker it starts itself and the session's server."""
    env = {
        **os.environ,
        "ARGENTIC_LLM__PROVIDER": "vllm",
        "ARGENTIC_LLM__VLLM_BASE_URL": vlm_server.base_url,
        "ARGENTIC_LLM__TIMEOUT_S": "300",
        "ARGENTIC_MESSAGING__BROKER_ADDRESS": "127.0.0.1",
        "ARGENTIC_MESSAGING__PORT": str(free_port()),  # nothing listens: the embedded broker starts
        "ARGENTIC_MESSAGING__EMBEDDED_BROKER": "auto",
    }
    done = subprocess.run(
        [sys.executable, "examples/visual_agent_vllm.py", "--cpu", "--watch", "1", "--interval", "0.5"],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=600,
    )
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()[-3000:]
    assert "sees nothing" in out and "Gemma 3n" in out, "the run says plainly what this model is"
    assert re.search(r"model tiny-vlm; up to \d image\(s\) per prompt", out), out
    assert re.search(r"answer \(from \d frame\(s\), 640x480 JPEG\)", out), out
    assert len(re.findall(r"^observation: ", out, flags=re.M)) == 1, out
