"""The VisualAgent's request path against a real vLLM server.

The CPU server runs a text-only model, so it refuses images and audio: a loopback proxy between
the provider and vLLM records the exact HTTP body, which must carry the right number of valid JPEG
image parts and a WAV clip of the right frames' tones, and the server's refusal must come back as a
clear error (an error reply over MQTT). test_video_tiny_vlm.py sends the same image requests to a
multimodal server, which accepts them. The GPU tests run Gemma 3n end to end and are skipped
without CUDA.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from argentic.agents.visual_agent import VisualAgent
from argentic.errors import LLMRequestError
from argentic.llm import AudioPart, ChatMessage, ChatRequest, SamplingSettings
from argentic.messaging import Messager
from argentic.protocol import ErrorReply, Question
from argentic.video import (
    FramesOverWindow,
    TestPatternSource,
    read_frame_code,
    read_tone_indices,
    read_wav,
    wav_bytes,
)
from argentic.video.encode import decode_data_url
from argentic.video.test_pattern import TONE_STEPS

MessagerFactory = Callable[[], Awaitable[Messager]]
_HOP_HEADERS = {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "accept-encoding"}


class RecordingProxy:
    """A loopback HTTP/1.1 proxy that records JSON request bodies and forwards them upstream."""

    def __init__(self, upstream_root: str) -> None:
        self.upstream_root = upstream_root.rstrip("/")
        self.bodies: list[tuple[str, dict[str, Any]]] = []
        self._server: asyncio.Server | None = None
        parts = urlsplit(self.upstream_root)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def chat_bodies(self) -> list[dict[str, Any]]:
        return [body for path, body in self.bodies if path.endswith("/chat/completions")]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line.strip():
                    return
                method, path, _ = request_line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if body and headers.get("content-type", "").startswith("application/json"):
                    self.bodies.append((path, json.loads(body)))
                status, upstream_headers, payload = await self._forward(method, path, headers, body)
                head = [f"HTTP/1.1 {status}"]
                head += [f"{k}: {v}" for k, v in upstream_headers if k.lower() not in _HOP_HEADERS]
                head += [f"content-length: {len(payload)}", "connection: keep-alive"]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    async def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        """One request upstream on its own connection (closed after), the response read whole."""
        reader, writer = await asyncio.open_connection(*self._upstream)
        try:
            lines = [f"{method} {path} HTTP/1.1", f"host: {self._upstream[0]}:{self._upstream[1]}"]
            lines += [f"{k}: {v}" for k, v in headers.items() if k not in _HOP_HEADERS]
            lines += [f"content-length: {len(body)}", "connection: close"]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(), 300)
        finally:
            writer.close()
        head, _, payload = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        response_headers = [(k.strip(), v.strip()) for k, _, v in (h.partition(":") for h in header_lines)]
        if any(k.lower() == "transfer-encoding" and "chunked" in v.lower() for k, v in response_headers):
            payload = _unchunk(payload)
        return status_line.split(" ", 1)[1], response_headers, payload


def _unchunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)


@pytest.fixture
async def recording_proxy(vllm_server: Any) -> AsyncIterator[RecordingProxy]:
    root = vllm_server.base_url.removesuffix("/v1")
    proxy = RecordingProxy(root)
    await proxy.start()
    yield proxy
    await proxy.close()


def image_parts(body: dict[str, Any]) -> list[str]:
    user = body["messages"][-1]
    assert user["role"] == "user" and isinstance(user["content"], list)
    return [part["image_url"]["url"] for part in user["content"] if part["type"] == "image_url"]


def jpeg_pixels(url: str) -> np.ndarray:
    assert url.startswith("data:image/jpeg;base64,")
    image = Image.open(io.BytesIO(decode_data_url(url)))
    assert image.format == "JPEG"
    return np.asarray(image.convert("RGB"))


@pytest.mark.vllm
async def test_the_request_carries_valid_jpeg_parts_and_the_refusal_is_clear(
    recording_proxy: RecordingProxy, vllm_server: Any, messagers: MessagerFactory
) -> None:
    from argentic.llm.openai_provider import OpenAICompatibleProvider

    source = TestPatternSource(320, 240, fps=30)
    await source.start()
    await source.wait_for_frame(10, newer_than=10)
    llm = OpenAICompatibleProvider(
        base_url=recording_proxy.base_url, model=vllm_server.model, max_retries=0, max_images_per_prompt=2
    )
    agent = VisualAgent(
        llm=llm,
        messager=await messagers(),
        source=source,
        role="vision",
        policy=FramesOverWindow(frames=4, window_s=30),
        max_image_side=256,
    )
    try:
        with pytest.raises(LLMRequestError) as refused:
            await agent.query_with_video("Which frame number is drawn at the top?")
        assert refused.value.status_code is not None and 400 <= refused.value.status_code < 500

        (body,) = recording_proxy.chat_bodies()
        assert body["model"] == vllm_server.model
        urls = image_parts(body)
        assert len(urls) == 2, "the image limit caps the frames"
        pixels = [jpeg_pixels(url) for url in urls]
        assert all(p.shape == (192, 256, 3) for p in pixels), "scaled to fit 256 px"
        assert [read_frame_code(p) for p in pixels] == [f.frame.index for f in agent.last_frames]

        # over MQTT the same refusal is an error reply, and the agent keeps serving
        await agent.async_init()
        client = await messagers()
        topic = client.topics.agent_questions("vision")
        for _ in range(2):
            reply = await client.request(topic, Question(text="What do you see?"), timeout=120)
            assert isinstance(reply, ErrorReply) and reply.error.code == "llm_error"
        assert len(recording_proxy.chat_bodies()) == 3
        assert all(len(image_parts(body)) == 2 for body in recording_proxy.chat_bodies())
    finally:
        await agent.stop()
        await llm.close()
        await source.stop()


@pytest.mark.gpu
async def test_gemma_3n_answers_about_frames_end_to_end(gemma3n_server: Any) -> None:
    from argentic.llm.openai_provider import OpenAICompatibleProvider

    source = TestPatternSource(640, 480, fps=30, scene_every=30)
    await source.start()
    await source.wait_for_frame(30, newer_than=40)
    llm = OpenAICompatibleProvider(
        base_url=gemma3n_server.base_url, model=gemma3n_server.model, max_images_per_prompt=2
    )
    agent = VisualAgent(llm=llm, source=source, policy=FramesOverWindow(frames=2, window_s=2))
    try:
        result = await agent.answer_with_video("Describe the colours you see in these frames.")
        assert isinstance(result.text, str) and result.text.strip()
        assert len(agent.last_frames) == 2
        assert result.usage.prompt_tokens > 2 * 200, "both images reached the model (~256 tokens each)"
    finally:
        await llm.close()
        await source.stop()


def audio_parts(body: dict[str, Any]) -> list[dict[str, str]]:
    user = body["messages"][-1]
    assert user["role"] == "user" and isinstance(user["content"], list)
    return [part["input_audio"] for part in user["content"] if part["type"] == "input_audio"]


@pytest.mark.vllm
async def test_the_request_carries_the_last_seconds_of_sound_as_a_16_khz_wav(
    recording_proxy: RecordingProxy, vllm_server: Any, messagers: MessagerFactory
) -> None:
    from argentic.llm.openai_provider import OpenAICompatibleProvider

    source = TestPatternSource(160, 120, fps=30)
    await source.start()
    await source.wait_for_frame(20, newer_than=75)  # more than 2 s of sound
    llm = OpenAICompatibleProvider(
        base_url=recording_proxy.base_url,
        model=vllm_server.model,
        max_retries=0,
        max_images_per_prompt=1,
        max_audio_per_prompt=1,
    )
    agent = VisualAgent(llm=llm, messager=await messagers(), source=source, role="ears", audio_s=2.0)
    try:
        with pytest.raises(LLMRequestError) as refused:
            await agent.query_with_video("What do you hear?")
        assert refused.value.status_code is not None and 400 <= refused.value.status_code < 500
        assert "text only" in str(refused.value), "the refusal says the model takes no images or audio"

        (body,) = recording_proxy.chat_bodies()
        (audio,) = audio_parts(body)
        assert audio["format"] == "wav"
        samples, rate = read_wav(base64.b64decode(audio["data"], validate=True))
        assert rate == 16_000 and len(samples) == 32_000, "2 s at Gemma 3n's 16 kHz"
        clip = agent.last_audio
        assert clip is not None and clip.last_index - clip.first_index == 59, "60 frames of sound"
        tones = read_tone_indices(samples, rate, 30)
        assert tones == [i % TONE_STEPS for i in range(clip.first_index, clip.last_index + 1)]
        (url,) = image_parts(body)
        assert clip.last_index >= read_frame_code(jpeg_pixels(url)), "the sound reaches the frame shown"

        # over MQTT the refusal is an error reply, and the agent keeps serving
        await agent.async_init()
        client = await messagers()
        topic = client.topics.agent_questions("ears")
        for _ in range(2):
            reply = await client.request(topic, Question(text="What do you hear?"), timeout=120)
            assert isinstance(reply, ErrorReply) and reply.error.code == "llm_error"
        assert len(recording_proxy.chat_bodies()) == 3
        assert all(len(audio_parts(body)) == 1 for body in recording_proxy.chat_bodies())
    finally:
        await agent.stop()
        await llm.close()
        await source.stop()


@pytest.mark.vllm
async def test_a_text_only_server_refuses_audio_clearly(vllm_server: Any) -> None:
    from argentic.llm.openai_provider import OpenAICompatibleProvider

    tone = np.round(8000 * np.sin(np.arange(16_000) * 2 * np.pi * 440 / 16_000)).astype(np.int16)
    message = ChatMessage.user("What do you hear?", audio=[AudioPart.from_bytes(wav_bytes(tone, 16_000))])
    llm = OpenAICompatibleProvider(base_url=vllm_server.base_url, model=vllm_server.model, max_retries=0)
    try:
        with pytest.raises(LLMRequestError, match="text only") as refused:
            await llm.chat(ChatRequest(messages=[message]))
        assert refused.value.status_code == 400
        # the same server still answers text
        reply = await llm.chat(ChatRequest.user("Say hi.", settings=SamplingSettings(max_tokens=4)))
        assert reply.usage.completion_tokens > 0
    finally:
        await llm.close()


@pytest.mark.gpu
async def test_gemma_3n_hears_the_tone(gemma3n_server: Any) -> None:
    from argentic.llm.openai_provider import OpenAICompatibleProvider

    source = TestPatternSource(320, 240, fps=30)
    await source.start()
    await source.wait_for_frame(30, newer_than=75)
    llm = OpenAICompatibleProvider(
        base_url=gemma3n_server.base_url,
        model=gemma3n_server.model,
        max_images_per_prompt=1,
        max_audio_per_prompt=1,
    )
    agent = VisualAgent(llm=llm, source=source)
    schema = {
        "type": "object",
        "properties": {"heard": {"type": "string", "enum": ["a tone or beeps", "speech", "silence"]}},
        "required": ["heard"],
    }
    try:
        silent = await agent.answer_with_video("Describe the picture in a few words.")
        result = await agent.answer_with_video(
            "Listen to the audio clip. What do you hear?", output=schema, audio_s=2.0
        )
        assert agent.last_audio is not None and agent.last_audio.duration_s == 2.0
        # about 188 audio tokens: the clip reached the model
        assert result.usage.prompt_tokens > silent.usage.prompt_tokens + 100
        assert result.data == {"heard": "a tone or beeps"}
    finally:
        await llm.close()
        await source.stop()


@pytest.mark.vllm
async def test_a_model_that_sees_but_does_not_hear_refuses_audio_clearly(vlm_server: Any) -> None:
    """The tiny vision-language server takes images, not audio: the refusal says which."""
    from argentic.llm.openai_provider import OpenAICompatibleProvider

    source = TestPatternSource(320, 240, fps=30)
    await source.start()
    await source.wait_for_frame(20, newer_than=40)
    llm = OpenAICompatibleProvider(base_url=vlm_server.base_url, model=vlm_server.model, max_retries=0)
    agent = VisualAgent(llm=llm, source=source, audio_s=1.0, max_images_per_prompt=1)
    try:
        with pytest.raises(LLMRequestError) as refused:
            await agent.query_with_video("What do you hear?")
        assert refused.value.status_code == 400
        assert "takes no audio clips" in str(refused.value), str(refused.value)
    finally:
        await llm.close()
        await source.stop()
