"""The tool loop's branches, with scripted models and tools served over the in-memory broker."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from agents_support import all_tools
from pydantic import BaseModel, Field

from argentic.agents import Agent, StepLimitError
from argentic.agents.loop import AnswerFieldTokens, EventSink
from argentic.agents.messages import MessageBuilder
from argentic.errors import AgentError, LLMOutputError
from argentic.llm import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    FunctionLLM,
    ScriptedLLM,
    tool_call,
)
from argentic.protocol import Question
from argentic.testing.messagers import MakeMessager
from argentic.tools import ToolManager, ToolService


@pytest.fixture
async def tools(memory: MakeMessager) -> AsyncIterator[ToolManager]:
    service = ToolService(await memory(), all_tools(), "svc", call_timeout_s=5)
    await service.start()
    manager = ToolManager(await memory())
    await manager.async_init()
    await manager.wait_for_tools("add", "echo", "explode", "hang", "slow")
    yield manager
    await service.stop()


def tool_messages(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    return [m for m in messages if m.role == "tool"]


async def test_tool_result_goes_back_to_the_model(tools: ToolManager) -> None:
    llm = ScriptedLLM([tool_call("add", {"a": 2, "b": 40}), "It is 42."])
    agent = Agent(llm=llm, tool_manager=tools, role="calc", system_prompt="Be exact.")
    result = await agent.ask("What is 2 + 40?")
    assert result.text == "It is 42."
    assert [(c.name, c.arguments, c.ok, c.result) for c in result.tool_calls] == [
        ("add", {"a": 2, "b": 40}, True, 42)
    ]
    first, second = llm.requests
    assert {t.name for t in first.tools} == {"add", "echo", "explode", "hang", "slow"}
    assert first.messages[0].role == "system" and first.messages[-1].text == "What is 2 + 40?"
    (tool_msg,) = tool_messages(second.messages)
    assert json.loads(tool_msg.text) == 42
    assert tool_msg.tool_call_id == second.messages[-2].tool_calls[0].id


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (tool_call("no_such_tool", {}), "unknown_tool"),
        (tool_call("add", {"a": "two"}), "invalid_arguments"),
        (tool_call("explode", {"reason": "kaput"}), "tool_failed"),
        (tool_call("hang", {}), "timeout"),
    ],
)
async def test_tool_errors_go_back_to_the_model(tools: ToolManager, call: Any, code: str) -> None:
    llm = ScriptedLLM([call, "Sorry."])
    result = await Agent(llm=llm, tool_manager=tools).ask("do it")
    assert result.text == "Sorry."
    (tool_msg,) = tool_messages(llm.requests[1].messages)
    assert json.loads(tool_msg.text)["error"]["code"] == code
    if code != "unknown_tool":
        assert result.tool_calls[0].ok is False and result.tool_calls[0].error.startswith(code)  # type: ignore[union-attr]


async def test_parallel_calls_keep_their_order(tools: ToolManager) -> None:
    llm = ScriptedLLM(
        [[tool_call("echo", {"text": "a"}, id="x"), tool_call("add", {"a": 1, "b": 1}, id="y")], "ok"]
    )
    await Agent(llm=llm, tool_manager=tools).ask("both")
    msgs = tool_messages(llm.requests[1].messages)
    assert [m.name for m in msgs] == ["echo", "add"]
    assert [json.loads(m.text) for m in msgs] == ["a", 2]


async def test_step_limit(tools: ToolManager) -> None:
    calls = [tool_call("add", {"a": i, "b": 0}) for i in range(10)]
    agent = Agent(llm=ScriptedLLM(calls), tool_manager=tools, max_steps=3)
    with pytest.raises(StepLimitError):
        await agent.ask("loop forever")


async def test_repeated_calls_force_an_answer(tools: ToolManager) -> None:
    same = tool_call("add", {"a": 1, "b": 1})
    llm = ScriptedLLM([same, same, same, "two"])
    result = await Agent(llm=llm, tool_manager=tools, max_repeated_calls=2, max_steps=8).ask("1+1?")
    assert result.text == "two"
    assert len(result.tool_calls) == 1  # the repeats were not run again
    last = llm.requests[-1]
    assert last.tools == []  # answer without tools
    assert "already called" in tool_messages(last.messages)[-1].text


async def test_tool_choice_policy(tools: ToolManager) -> None:
    llm = ScriptedLLM([tool_call("add", {"a": 1, "b": 2}), "3"])
    agent = Agent(llm=llm, tool_manager=tools, tool_choice="required", followup_tool_choice="none")
    await agent.ask("1+2?")
    assert llm.requests[0].tool_choice == "required"
    assert llm.requests[1].tools == []


async def test_unusable_replies_are_retried_then_fail() -> None:
    llm = ScriptedLLM(["", LLMOutputError("bad tool call markup"), "fine"])
    agent = Agent(llm=llm)
    result = await agent.ask("hi")
    assert result.text == "fine"
    retried = llm.requests[-1].messages
    assert "could not be used" in retried[-1].text and retried[-1].text.startswith("hi")  # folded in
    roles = [m.role for m in retried]
    assert all(a != b for a, b in itertools.pairwise(roles))  # turns still alternate
    # The retries are not kept in the conversation.
    assert [m.text for m in agent.conversations.history(result.conversation_id)] == ["hi", "fine"]
    with pytest.raises(AgentError):
        await Agent(llm=ScriptedLLM(["", "", "", ""])).ask("hi")


async def test_a_required_call_cut_off_at_max_tokens_says_so(tools: ToolManager) -> None:
    cut = ChatResponse(content='<tool_call>{"name": "add", "arguments": {"a": 1, "', finish_reason="length")
    agent = Agent(llm=ScriptedLLM([cut] * 3), tool_manager=tools, tool_choice="required")
    with pytest.raises(AgentError, match="cut off at max_tokens: raise it"):
        await agent.ask("1+2?")


class Sum(BaseModel):
    total: int = Field(ge=0)


async def test_structured_answer_by_separate_request(tools: ToolManager) -> None:
    llm = ScriptedLLM([tool_call("add", {"a": 20, "b": 22}), "The total is 42.", '{"total": 42}'])
    answer = await Agent(llm=llm, tool_manager=tools).query("sum?", output=Sum)
    assert answer == Sum(total=42)
    final = llm.requests[-1]
    assert final.output is Sum and final.tools == []


async def test_structured_answer_from_the_reply_itself() -> None:
    llm = ScriptedLLM(['{"total": 7}'])
    assert await Agent(llm=llm).query("sum?", output=Sum) == Sum(total=7)
    assert len(llm.requests) == 1
    assert await Agent(llm=ScriptedLLM(['{"total": 3}'])).query("x", output=Sum.model_json_schema()) == {
        "total": 3
    }


class Tagged(MessageBuilder):
    """Marks the question, counts each request's messages, and keeps the plain question."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    async def build(self, question: Question) -> ChatMessage:
        return ChatMessage.user(f"{self.tag} {question.text}")

    def prepare(self, messages: list[ChatMessage]) -> list[ChatMessage]:
        return [ChatMessage.system(f"{len(messages)} messages"), *messages]

    def remember(self, message: ChatMessage) -> ChatMessage:
        return ChatMessage.user(message.text.removeprefix(f"{self.tag} "))


async def test_the_message_builder_shapes_the_question_each_request_and_the_history() -> None:
    llm = ScriptedLLM(["a", "b", "c"])
    agent = Agent(llm=llm, system_prompt="", message_builder=Tagged("[q]"))
    await agent.ask("one", conversation_id="c")
    await agent.ask("two", conversation_id="c")
    await agent.ask("three", conversation_id="c", builder=Tagged("[other]"))
    assert [[m.text for m in r.messages] for r in llm.requests] == [
        ["1 messages", "[q] one"],
        ["3 messages", "one", "a", "[q] two"],
        ["5 messages", "one", "a", "two", "b", "[other] three"],
    ]
    assert [m.text for m in agent.conversations.history("c")] == ["one", "a", "two", "b", "three", "c"]


async def test_concurrent_questions_never_mix() -> None:
    both_started = asyncio.Barrier(2)

    async def reply(request: ChatRequest) -> ChatResponse:
        users = [m.text for m in request.messages if m.role == "user"]
        assert len(users) == 1, users  # only this question's own user turn
        await both_started.wait()  # both questions are in the model at the same time
        return ChatResponse(content=f"answer to {users[0]}")

    agent = Agent(llm=FunctionLLM(reply))
    first, second = await asyncio.gather(agent.ask("question one"), agent.ask("question two"))
    assert first.text == "answer to question one" and second.text == "answer to question two"
    assert first.conversation_id != second.conversation_id


async def test_conversation_id_continues_a_conversation() -> None:
    llm = ScriptedLLM(["Hello Ada.", "Your name is Ada."])
    agent = Agent(llm=llm)
    first = await agent.ask("My name is Ada.", conversation_id="c1")
    await agent.ask("What is my name?", conversation_id="c1")
    assert first.conversation_id == "c1"
    assert [m.text for m in llm.requests[1].messages[1:]] == [
        "My name is Ada.",
        "Hello Ada.",
        "What is my name?",
    ]
    assert len(agent.conversations.history("c1")) == 4


async def test_conversation_store_is_bounded() -> None:
    agent = Agent(llm=ScriptedLLM(["ok"], repeat_last=True), max_conversations=3, max_history_messages=4)
    for i in range(5):
        await agent.ask(f"q{i}", conversation_id=f"c{i}")
    assert len(agent.conversations) == 3 and "c0" not in agent.conversations
    for _ in range(3):
        await agent.ask("again", conversation_id="c4")
    assert len(agent.conversations.history("c4")) <= 4
    assert agent.conversations.history("c4")[0].role == "user"


async def test_streamed_tokens_and_progress() -> None:
    class Sink:
        streaming = True

        def __init__(self) -> None:
            self.tokens: list[str] = []
            self.stages: list[str] = []

        async def progress(self, stage: str, **_: Any) -> None:
            self.stages.append(stage)

        async def token(self, text: str) -> None:
            self.tokens.append(text)

    sink = Sink()
    result = await Agent(llm=ScriptedLLM(["one two three"])).ask("count", events=sink)
    assert "".join(sink.tokens) == result.text == "one two three" and len(sink.tokens) == 3
    assert sink.stages == ["llm_call"]  # steps only: the start and end are the return and the status


async def test_required_tool_call_that_does_not_come_is_retried(tools: ToolManager) -> None:
    cut_off = ChatResponse(content='<tool_call>{"name": "add", "argu', finish_reason="length")
    llm = ScriptedLLM([cut_off, tool_call("add", {"a": 1, "b": 1}), "2"])
    agent = Agent(llm=llm, tool_manager=tools, tool_choice="required", followup_tool_choice="none")
    result = await agent.ask("1+1?")
    assert result.text == "2" and [c.name for c in result.tool_calls] == ["add"]
    assert "required" in llm.requests[1].messages[-1].text
    assert [r.tool_choice for r in llm.requests[:2]] == ["required", "required"]
    assert llm.requests[2].tools == []


MARKUP = (
    '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call> <tool_response> 3 </tool_response>'
)


async def test_an_answer_is_never_tool_markup(tools: ToolManager) -> None:
    # markup as the answer: unusable, asked again without tools, the clean answer is taken
    llm = ScriptedLLM([tool_call("add", {"a": 1, "b": 2}), MARKUP, "It is 3."])
    agent = Agent(llm=llm, tool_manager=tools, tool_choice="required", followup_tool_choice="none")
    assert await agent.query("1+2?") == "It is 3."
    retried = llm.requests[-1]
    assert retried.tools == [] and "tool markup (<tool_call>)" in retried.messages[-1].text
    # made-up results in a reply where tools were offered: no answer either, and tools go
    llm = ScriptedLLM(["<tool_response>3</tool_response>", "3"])
    assert await Agent(llm=llm, tool_manager=tools).query("1+2?") == "3"
    assert llm.requests[0].tools and llm.requests[1].tools == []
    # markup every time: a clear error, never markup as the answer
    with pytest.raises(AgentError, match="tool markup"):
        await Agent(llm=ScriptedLLM([MARKUP] * 4)).ask("hi")


async def test_a_streamed_answer_under_a_schema_streams_its_text() -> None:
    class Tokens(EventSink):
        streaming = True

        def __init__(self) -> None:
            self.texts: list[str] = []

        async def progress(self, stage: str, **fields: Any) -> None:
            return None

        async def token(self, text: str) -> None:
            self.texts.append(text)

    sink = Tokens()
    unwrap = AnswerFieldTokens(sink)
    for piece in ['{"', "answer", '":"', "12", '34 is \\"', 'x\\"', "\\u00e9", "\\", 'n!"', "}"]:
        await unwrap.token(piece)
    assert "".join(sink.texts) == '1234 is "x"é\n!' and "" not in sink.texts
