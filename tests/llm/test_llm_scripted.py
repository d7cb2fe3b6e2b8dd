"""The deterministic test providers, the factory, and the pure parts of the LLM layer (no server)."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, Field

from argentic.config import load_config
from argentic.errors import ArgumentError, ConfigError, LLMError, LLMOutputError
from argentic.llm import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    FunctionLLM,
    ImagePart,
    LLMFactory,
    LLMProvider,
    LLMToolCall,
    SamplingSettings,
    ScriptedLLM,
    StreamEnd,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolDefinition,
    tool_call,
)
from argentic.llm.markup import extract_tool_calls
from argentic.llm.output import parse_output
from argentic.llm.wire import (
    closed_schema,
    message_to_wire,
    response_format_for,
    tool_choice_to_wire,
    tool_to_wire,
)


class Add(BaseModel):
    """Add two numbers."""

    a: int = Field(ge=0, le=100)
    b: int = Field(ge=0, le=100)


class Verdict(BaseModel):
    label: Literal["yes", "no"]
    reason: str = Field(max_length=40)


ADD = ToolDefinition.from_model("add", Add)


async def test_scripted_plays_steps_in_order_and_records_requests() -> None:
    llm = ScriptedLLM([tool_call("add", {"a": 1, "b": 2}), "three"])
    first = await llm.chat(ChatRequest.user("1+2?", tools=[ADD], tool_choice="required"))
    assert first.finish_reason == "tool_calls"
    (call,) = first.tool_calls
    assert call.parse_arguments(Add) == Add(a=1, b=2)
    history = [ChatMessage.user("1+2?"), first.message(), ChatMessage.tool(call.id, call.name, "3")]
    second = await llm.chat(ChatRequest(messages=history))
    assert second.content == "three" and second.tool_calls == []
    assert [len(r.messages) for r in llm.requests] == [1, 3]
    assert llm.requests[0].tool_choice == "required" and llm.requests[0].tools == [ADD]
    assert second.usage.total_tokens == second.usage.prompt_tokens + second.usage.completion_tokens > 0
    with pytest.raises(LLMError, match="exhausted"):
        await llm.chat(ChatRequest(messages=history))


async def test_scripted_tool_call_ids_are_unique_per_reply() -> None:
    llm = ScriptedLLM([tool_call("add", {"a": 1, "b": 1})], repeat_last=True)
    ids = {(await llm.chat(ChatRequest.user("x"))).tool_calls[0].id for _ in range(3)}
    assert len(ids) == 3


async def test_scripted_parses_structured_output_like_real_providers() -> None:
    llm = ScriptedLLM(['{"label": "yes", "reason": "ok"}', '{"label": "maybe"}'])
    reply = await llm.chat(ChatRequest.user("?", output=Verdict))
    assert reply.parsed == Verdict(label="yes", reason="ok")
    with pytest.raises(LLMOutputError, match="Verdict"):
        await llm.chat(ChatRequest.user("?", output=Verdict))


async def test_scripted_steps_can_be_functions_and_exceptions() -> None:
    async def echo_tools(request: ChatRequest) -> str:
        return ",".join(t.name for t in request.tools)

    llm = ScriptedLLM([echo_tools, LLMError("boom")])
    assert (await llm.chat(ChatRequest.user("x", tools=[ADD]))).content == "add"
    with pytest.raises(LLMError, match="boom"):
        await llm.chat(ChatRequest.user("x"))


async def test_scripted_stream_yields_text_pieces_then_the_end() -> None:
    llm = ScriptedLLM(
        ["one two three", [tool_call("add", {"a": 1, "b": 2}), tool_call("add", {"a": 3, "b": 4})]]
    )
    events = [e async for e in llm.stream(ChatRequest.user("x"))]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "one two three"
    assert isinstance(events[-1], StreamEnd) and events[-1].response.content == "one two three"
    events = [e async for e in llm.stream(ChatRequest.user("x", tools=[ADD]))]
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert [d.id for d in deltas] == [c.id for c in end.response.tool_calls]
    assert [d.index for d in deltas] == [0, 1]


async def test_overrides_share_the_script_and_history() -> None:
    llm = ScriptedLLM(["a", "b"], model_name="base")
    critic = llm.with_overrides(model="critic", temperature=0.9)
    assert isinstance(critic, LLMProvider)
    assert (await critic.chat(ChatRequest.user("x"))).model == "critic"
    assert (await llm.chat(ChatRequest.user("x"))).content == "b"
    assert critic.overrides == {"temperature": 0.9} and len(llm.requests) == 2


async def test_function_llm_sees_everything_and_can_answer_with_tool_calls() -> None:
    def fn(request: ChatRequest) -> LLMToolCall | ChatResponse:
        if request.tool_choice == "add":
            return LLMToolCall(id="c1", name="add", arguments={"a": 2, "b": 2})
        return ChatResponse(content=request.messages[-1].text.upper())

    llm = FunctionLLM(fn)
    reply = await llm.chat(ChatRequest.user("hi", tools=[ADD], tool_choice="add"))
    assert reply.tool_calls[0].parse_arguments(Add).a == 2
    assert (await llm.chat(ChatRequest.user("hi"))).content == "HI"
    await llm.close()
    with pytest.raises(LLMError, match="closed"):
        await llm.chat(ChatRequest.user("hi"))


def test_factory_picks_the_provider_from_config() -> None:
    config = load_config(environ={}, overrides={"llm": {"provider": "scripted"}})
    assert isinstance(LLMFactory.create(config), FunctionLLM)
    from argentic.llm.openai_provider import OpenAICompatibleProvider

    vllm = LLMFactory.create(
        {"provider": "vllm", "vllm_base_url": "http://127.0.0.1:1/v1/", "temperature": 0.2}
    )
    assert isinstance(vllm, OpenAICompatibleProvider)
    assert vllm.base_url == "http://127.0.0.1:1/v1" and vllm.defaults.temperature == 0.2
    other = LLMFactory.create({"llm": {"provider": "openai", "base_url": "http://h/api", "model_name": "m"}})
    assert isinstance(other, OpenAICompatibleProvider)
    assert other.base_url == "http://h/api" and other.model_name == "m" and not other.vllm
    with pytest.raises(ConfigError):
        LLMFactory.create({"provider": "nope"})


async def test_overrides_for_another_server_get_their_own_endpoint() -> None:
    from argentic.llm.openai_provider import OpenAICompatibleProvider

    base = OpenAICompatibleProvider(base_url="http://127.0.0.1:1/v1", model="big", max_concurrency=4)
    same = base.with_overrides(temperature=0.3)
    other = base.with_overrides(base_url="http://127.0.0.1:2", model="small")
    assert same.endpoint is base.endpoint and same.model_name == "big" and same.defaults.temperature == 0.3
    assert other.endpoint is not base.endpoint and other.base_url == "http://127.0.0.1:2/v1"
    assert other.model_name == "small" and other.endpoint.max_concurrency == 4
    await other.close()
    await same.close()  # shares base's endpoint: closing it leaves base usable
    assert not base.endpoint.client.is_closed()
    await base.close()


def test_engine_provider_is_lazy_about_vllm() -> None:
    from argentic.llm.engine import VLLMEngineProvider

    provider = VLLMEngineProvider("some/model")  # importing vLLM waits for start()
    assert provider.model_name == "some/model"


def test_message_helpers_and_wire_format() -> None:
    user = ChatMessage.user("what is this?", images=["data:image/jpeg;base64,AAAA"])
    assert user.images == ["data:image/jpeg;base64,AAAA"] and user.text == "what is this?"
    assert isinstance(user.content, list) and isinstance(user.content[0], ImagePart)
    assert message_to_wire(user)["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
        {"type": "text", "text": "what is this?"},
    ]
    call = LLMToolCall(id="c", name="add", arguments={"a": 1})
    wire = message_to_wire(ChatMessage.assistant(None, [call]))
    assert wire["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 1}'}
    assert message_to_wire(ChatMessage.tool("c", "add", "2")) == {
        "role": "tool",
        "content": "2",
        "tool_call_id": "c",
    }
    assert ChatMessage(role="user", content=[TextPart(text="a"), TextPart(text="b")]).text == "a\nb"


def test_tool_schemas_are_strict_and_closed() -> None:
    wire = tool_to_wire(ADD, vllm=True)["function"]
    assert wire["strict"] is True and wire["parameters"]["additionalProperties"] is False
    assert wire["description"] == "Add two numbers."
    loose = ToolDefinition(name="f", parameters={"type": "object", "properties": {"x": {"type": "string"}}})
    assert "strict" not in tool_to_wire(loose, vllm=False)["function"]  # OpenAI strict needs all required
    nested = closed_schema({"type": "object", "properties": {"o": {"type": "object", "properties": {}}}})
    assert nested["properties"]["o"]["additionalProperties"] is False
    assert tool_choice_to_wire("add", [ADD]) == {"type": "function", "function": {"name": "add"}}
    assert tool_choice_to_wire("required", [ADD]) == "required"
    with pytest.raises(LLMError, match="not among"):
        tool_choice_to_wire("missing", [ADD])
    fmt = response_format_for(Verdict)
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Verdict"


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>',
        'Sure.\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n',
        '```json\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n```',
        '{"name": "add", "parameters": {"a": 1, "b": 2}}',
        '[{"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": 2}"}]',
    ],
)
def test_tool_calls_written_as_text_are_recovered(text: str) -> None:
    calls, _rest = extract_tool_calls(text, ["add"])
    assert [c.parse_arguments(Add) for c in calls] == [Add(a=1, b=2)]
    assert calls[0].id.startswith("call_")


def test_text_tool_calls_several_and_unknown_names() -> None:
    text = (
        '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>\n'
        '<tool_call>{"name": "add", "arguments": {"a": 3, "b": 4}}</tool_call>'
    )
    calls, rest = extract_tool_calls(text, ["add"])
    assert [c.arguments for c in calls] == [{"a": 1, "b": 2}, {"a": 3, "b": 4}] and rest is None
    assert extract_tool_calls('{"name": "rm", "arguments": {}}', ["add"]) == (
        [],
        '{"name": "rm", "arguments": {}}',
    )
    assert extract_tool_calls("plain words", ["add"]) == ([], "plain words")


def test_parse_output_accepts_fenced_json_and_schemas() -> None:
    assert parse_output('```json\n{"label": "no", "reason": "r"}\n```', Verdict).label == "no"
    assert parse_output('{"x": [1]}', {"type": "object"}) == {"x": [1]}
    with pytest.raises(LLMOutputError, match="not a JSON object"):
        parse_output("4", {"type": "object", "properties": {"value": {"type": "integer"}}})
    with pytest.raises(LLMOutputError, match="empty"):
        parse_output("", Verdict)


def test_sampling_settings_merge() -> None:
    base = SamplingSettings(temperature=0.1, max_tokens=10, extra_body={"a": 1})
    merged = base.merged(SamplingSettings(max_tokens=20, extra_body={"b": 2}))
    assert (merged.temperature, merged.max_tokens, merged.extra_body) == (0.1, 20, {"a": 1, "b": 2})


async def test_overrides_take_sampling_as_one_object_or_loose_keys() -> None:
    llm = ScriptedLLM(["a"], model_name="base")
    one = llm.with_overrides(sampling=SamplingSettings(temperature=0.2, seed=3), max_tokens=9)
    assert one.overrides == {"temperature": 0.2, "seed": 3, "max_tokens": 9}
    from argentic.llm.openai_provider import OpenAICompatibleProvider

    base = OpenAICompatibleProvider(base_url="http://127.0.0.1:1/v1", model="big")
    copy = base.with_overrides(sampling=SamplingSettings(top_p=0.5), temperature=0.1)
    assert (copy.defaults.top_p, copy.defaults.temperature) == (0.5, 0.1)
    with pytest.raises(ArgumentError, match="takes no lora_path"):
        base.with_overrides(lora_path="/x")
    await base.close()
