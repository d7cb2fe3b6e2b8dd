"""The tool loop: ask the model, run the tools it calls, give it the results, until it answers.

Every outcome of a tool call goes back to the model as a tool message: the result, or the error
(unknown tool, arguments that do not validate, a tool that raised or timed out, a service that
went away). The loop ends when the model answers with text (and, when a structured answer is
wanted, that answer validates). It is bounded:

- ``max_steps`` model calls that keep calling tools end in :class:`StepLimitError`;
- a call repeated with the same arguments is not run again: the model is reminded of the earlier
  result, and after ``max_repeated_calls`` such repeats it must answer without tools;
- replies that cannot be used (empty, or rejected by the provider) are retried with a note
  saying what was wrong, at most ``max_unusable_replies`` times, then :class:`AgentError`.

``tool_choice`` is the policy until the model has made a round of tool calls, ``followup_tool_choice``
the policy after that. A model
that rarely calls tools on its own (a small base model) acts reliably with ``"required"`` then
``"none"``: exactly one round of tool calls, then the answer. Such a model also overlooks results
in tool turns: with ``restate_tool_results`` the request for the answer ends with a user note that
repeats them; with ``json_answer`` its free text is asked for under a schema, which stops it from
running on into tool markup. An answer is never tool markup: a reply holding a tool-call or
tool-response tag is unusable, and the model is asked again without tools.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from argentic.agents.grounding import ground_schema, ground_tools
from argentic.errors import AgentError, LLMOutputError, StepLimitError
from argentic.llm import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ContentPart,
    LLMToolCall,
    OutputSpec,
    TextPart,
    ToolChoice,
    ToolDefinition,
)
from argentic.llm.markup import tool_markup
from argentic.llm.output import parse_output
from argentic.protocol import ProgressStage, ToolCallRecord, ToolResult, Usage

log = logging.getLogger(__name__)

#: The older name of :data:`~argentic.protocol.ProgressStage`.
Stage = ProgressStage


class EventSink:
    """Where the loop reports the steps it takes and, when ``streaming``, the answer's tokens (an
    MQTT events topic, a console, nothing). The task's state is not here: see ``TaskStatus``.
    This one reports nothing; a sink overrides what it reports."""

    streaming: bool = False

    async def progress(
        self,
        stage: ProgressStage,
        *,
        tool: str | None = None,
        arguments: dict[str, Any] | None = None,
        detail: str | None = None,
    ) -> None:
        return None

    async def token(self, text: str) -> None:
        return None

    async def checkpoint(self, state: LoopState) -> None:
        """A round of tool calls finished: ``state`` is what a run resumed from it needs."""
        return None


class NullEvents(EventSink):
    """Reports nothing."""


class LoopState(BaseModel):
    """A question's run as of its last finished round of tool calls: what another replica that
    takes the question over continues from, so that the tools that ran are not run again."""

    #: The messages the run added after the user message (assistant turns and tool results).
    added: list[ChatMessage] = Field(default_factory=list)
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    rounds: int = 0
    steps: int = 0
    #: Each call's result by its name and arguments, to answer a repeated call.
    results: dict[str, str] = Field(default_factory=dict)
    repeats: int = 0


class AnswerFieldTokens(EventSink):
    """Passes on the tokens of a ``{"answer": "..."}`` reply as the answer's own text, so that a
    streamed answer asked under a schema reads as the text the user gets."""

    def __init__(self, events: EventSink) -> None:
        self.events = events
        self.streaming = events.streaming
        self.progress = events.progress  # type: ignore[method-assign]  # steps pass through as they are
        self.checkpoint = events.checkpoint  # type: ignore[method-assign]
        self.raw = ""
        self.sent = 0

    async def token(self, text: str) -> None:
        self.raw += text
        decoded = self._decoded()
        if len(decoded) > self.sent:
            await self.events.token(decoded[self.sent :])
            self.sent = len(decoded)

    def _decoded(self) -> str:
        """The answer's text so far: after the field's opening quote, up to its last whole character."""
        start = self.raw.find('"', self.raw.find(":") + 1) if ":" in self.raw else -1
        if start < 0:
            return ""
        body = self.raw[start + 1 :]
        for cut in range(len(body), max(len(body) - 7, -1), -1):  # an escape is at most 6 characters
            piece = body[:cut]
            try:
                value = json.loads(f'"{piece}"')  # fails on a cut escape or the closing quote
            except json.JSONDecodeError:
                continue
            return value if isinstance(value, str) else ""
        return ""


#: (request, events) -> reply: the agent's one LLM call.
CallLLM = Callable[[ChatRequest, EventSink], Awaitable[ChatResponse]]
#: (name, arguments) -> result, errors included.
CallTool = Callable[[str, dict[str, Any]], Awaitable[ToolResult]]


@dataclass(frozen=True)
class LoopPolicy:
    max_steps: int = 8
    tool_choice: ToolChoice = "auto"
    followup_tool_choice: ToolChoice = "auto"
    max_repeated_calls: int = 2
    max_unusable_replies: int = 2
    #: Repeat the tool results in a last user note when asking for the answer (small models).
    restate_tool_results: bool = False
    #: False: at most one tool call per model reply (None: as the server allows).
    parallel_tool_calls: bool | None = None
    #: Ask for a free-text answer as ``{"answer": "..."}`` under the server's structured outputs
    #: (a small model's free text runs on into tool markup or the prompt; a schema stops it).
    json_answer: bool = False
    #: Ask for a structured answer in two steps: the free answer, then that answer restated and
    #: shaped under the schema (a small model fills a bare number field with a number from the
    #: question, yet copies its own answer).
    answer_then_shape: bool = False
    #: The replies' token bound, when known: a JSON answer's length is kept within it.
    max_tokens: int | None = None
    #: A JSON answer (``json_answer``) must quote the tool results that are numbers or short
    #: words, in their order (a pattern in its schema; the server's structured outputs hold it).
    quote_tool_results: bool = False
    #: A demanded first call's string and number arguments are spans of the question
    #: (:mod:`argentic.agents.grounding`).
    ground_arguments: bool = False


@dataclass
class LoopResult:
    text: str
    data: Any = None
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    #: The messages this question added after the user message (assistant and tool turns).
    messages: list[ChatMessage] = field(default_factory=list)
    steps: int = 0


def tool_message_content(result: ToolResult) -> str:
    """What the model reads for a tool's outcome."""
    if result.ok:
        return json.dumps(result.result, ensure_ascii=False, default=str)
    assert result.error is not None
    error = {"code": result.error.code, "message": result.error.message}
    return json.dumps({"error": error}, ensure_ascii=False)


def _question(prompt: Sequence[ChatMessage]) -> str:
    """The text of the prompt's last user message: the question."""
    return next((m.text for m in reversed(prompt) if m.role == "user"), "")


def _add_usage(total: Usage, more: Usage) -> Usage:
    return Usage(
        prompt_tokens=total.prompt_tokens + more.prompt_tokens,
        completion_tokens=total.completion_tokens + more.completion_tokens,
        total_tokens=total.total_tokens + more.total_tokens,
    )


def with_note(messages: list[ChatMessage], note: list[ChatMessage]) -> list[ChatMessage]:
    """``messages`` followed by ``note``, keeping user and assistant turns alternating: a user
    note right after a user message is folded into it (chat templates may demand alternation)."""
    if not note:
        return messages
    if note[0].role == "user" and messages and messages[-1].role == "user":
        last, extra = messages[-1], note[0].text
        if isinstance(last.content, list):
            content: str | list[ContentPart] = [*last.content, TextPart(text=extra)]
        else:
            content = f"{last.text}\n\n{extra}"
        return [*messages[:-1], last.model_copy(update={"content": content}), *note[1:]]
    return [*messages, *note]


def _quotable(value: Any) -> str | None:
    """``value`` as an answer quotes it, if it is a number or a short word."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str) and 0 < len(value) <= MAX_QUOTE_CHARS and QUOTABLE.fullmatch(value):
        return value
    return None


def _call_key(call: LLMToolCall) -> str:
    return f"{call.name}:{json.dumps(call.arguments, sort_keys=True, default=str)}"


# The question, the calls with their results, the results once more, then the instruction: the
# wording a 270M base model followed best for a free answer (it copies what stands right before
# the instruction: 6 of 6 additions, against 2 to 4 without the repeat).
RESULTS_NOTE = "{question}\n{calls}\n{results}. Answer with {them}."
# Before a schema's instruction, the calls with their results and no repeat: the wording it
# followed best for a structured answer (15 of 16 arithmetic questions right).
STRUCTURED_RESULTS_NOTE = "{question}\n{calls}\nAnswer with the results the tools returned."

#: Tool results an answer quotes (``LoopPolicy.quote_tool_results``): short, on one line, with
#: nothing a JSON string escapes.
MAX_QUOTE_CHARS = 40
MAX_QUOTES = 4
QUOTABLE = re.compile(r"[A-Za-z0-9 .,:%+-]+")

#: A free-text answer under a schema (``LoopPolicy.json_answer``).
ANSWER_FIELD = "answer"
#: Below this ``max_tokens`` a JSON answer's frame (about 8 tokens) leaves too little room for
#: the text (under 8 characters): the answer is then asked for as plain text.
JSON_ANSWER_MIN_TOKENS = 24

FINAL_ANSWER_PROMPT = (
    "Give your final answer now as one JSON object that matches this JSON schema, nothing else:\n{schema}"
)
#: The second step of ``LoopPolicy.answer_then_shape``: the answer restated. The schema is left to
#: the server's constraint: shown in the prompt, a small model copies its bounds as the value.
SHAPE_PROMPT = "Your answer: {answer}. Write it as JSON."


class ToolLoop:
    """One question's run. Make one per question; it holds that question's state."""

    def __init__(
        self,
        call_llm: CallLLM,
        call_tool: CallTool,
        tools: Sequence[ToolDefinition],
        policy: LoopPolicy,
        events: EventSink | None = None,
    ) -> None:
        self.call_llm = call_llm
        self.call_tool = call_tool
        self.tools = list(tools)
        self.policy = policy
        self.events: EventSink = events or NullEvents()
        self.usage = Usage()
        self.records: list[ToolCallRecord] = []
        self._results: dict[str, str] = {}
        self._repeats = 0
        self._unusable = 0

    async def run(
        self,
        prompt: Sequence[ChatMessage],
        *,
        output: OutputSpec | None = None,
        resume: LoopState | None = None,
    ) -> LoopResult:
        """Run the loop on ``prompt`` (system, history, the question) until the model answers;
        with ``resume``, from that state of an earlier run of the same question (see
        :meth:`EventSink.checkpoint`)."""
        state = resume or LoopState()
        added = list(state.added)
        self.records = list(state.tool_calls)
        self.usage = state.usage
        self._results = dict(state.results)
        self._repeats = state.repeats
        rounds = state.rounds  # rounds of tool calls so far: the first policy holds until one happened
        retry: list[ChatMessage] = []  # a failed reply and what was wrong: for the next call only
        force_answer = not self.tools or self._repeats >= self.policy.max_repeated_calls
        # Shaped afterwards: the answer itself is asked for as free text first.
        answer_output = None if self.policy.answer_then_shape else output
        for step in range(state.steps, self.policy.max_steps):
            choice = self._choice(rounds, force_answer)
            await self.events.progress("llm_call", detail=f"step {step + 1}, tool_choice={choice}")
            tools = self.tools if choice != "none" else []
            if tools and rounds == 0 and choice != "auto" and self.policy.ground_arguments:
                tools = ground_tools(tools, _question(prompt))
            note = (
                [*self._results_note(prompt, structured=answer_output is not None), *retry]
                if not tools
                else retry
            )
            try:
                # With tools, no output spec: the answer is shaped afterwards (see _structured).
                json_answer = not tools and answer_output is None and self._json_answer_fits()
                request = ChatRequest(
                    messages=with_note([*prompt, *added], note),
                    tools=tools,
                    tool_choice=choice if tools else "auto",
                    parallel_tool_calls=self.policy.parallel_tool_calls if tools else None,
                    output=self._answer_schema() if json_answer else None if tools else answer_output,
                )
                sink = AnswerFieldTokens(self.events) if json_answer else self.events
                response = await self.call_llm(request, sink)
                if json_answer and isinstance(response.parsed, dict):
                    answer = response.parsed.get(ANSWER_FIELD)
                    response = response.model_copy(update={"content": str(answer or ""), "parsed": None})
            except LLMOutputError as exc:
                retry = self._unusable_reply(str(exc))
                continue
            self.usage = _add_usage(self.usage, response.usage)
            if response.tool_calls and tools:
                added.append(response.message())
                retry = []
                rounds += 1
                force_answer = await self._run_calls(response.tool_calls, added) or force_answer
                await self.events.checkpoint(
                    LoopState(
                        added=added,
                        tool_calls=self.records,
                        usage=self.usage,
                        rounds=rounds,
                        steps=step + 1,
                        results=self._results,
                        repeats=self._repeats,
                    )
                )
                continue
            if tools and choice != "auto":
                # A tool call was demanded and none came (e.g. markup cut off at max_tokens).
                reason = f"a tool call was required (finish: {response.finish_reason})"
                if response.finish_reason == "length":
                    reason += "; the call was cut off at max_tokens: raise it"
                retry = self._unusable_reply(reason, response.content)
                continue
            text = (response.content or "").strip()
            if not text:
                retry = self._unusable_reply("the reply was empty")
                continue
            markup = tool_markup(text)
            if markup is not None:  # a call or a made-up tool result written as text is no answer
                retry = self._unusable_reply(f"it holds tool markup ({markup}) instead of an answer")
                force_answer = True
                continue
            added.append(ChatMessage.assistant(text))
            data = await self._structured(prompt, added, output, response) if output is not None else None
            return LoopResult(text, data, self.records, self.usage, added, step + 1)
        raise StepLimitError(
            f"no answer after {self.policy.max_steps} model calls (still calling tools); "
            "raise agent.max_steps or give the model fewer, clearer tools"
        )

    def _results_note(self, prompt: Sequence[ChatMessage], *, structured: bool = False) -> list[ChatMessage]:
        """The question and the tool results restated, when the policy asks for it and there are any."""
        if not self.policy.restate_tool_results or not self.records:
            return []
        question = _question(prompt)
        calls, outcomes = [], []
        for record in self.records:
            arguments = json.dumps(record.arguments, ensure_ascii=False, default=str)
            outcome = (
                json.dumps(record.result, ensure_ascii=False, default=str) if record.ok else record.error
            )
            calls.append(f"- {record.name}({arguments}) -> {outcome}")
            outcomes.append(str(outcome))
        single = len(outcomes) == 1
        text = (STRUCTURED_RESULTS_NOTE if structured else RESULTS_NOTE).format(
            question=question,
            calls="\n".join(calls),
            results=f"The result is {outcomes[0]}" if single else f"The results are {'; '.join(outcomes)}",
            them="it" if single else "them",
        )
        return [ChatMessage.user(text)]

    def _json_answer_fits(self) -> bool:
        bound = self.policy.max_tokens
        return self.policy.json_answer and (bound is None or bound >= JSON_ANSWER_MIN_TOKENS)

    def _answer_schema(self) -> dict[str, Any]:
        """``{"answer": str}``, the string short enough to end within ``max_tokens`` (a token
        writes at least one character; two for an escape; the object's frame takes about eight)."""
        limit = 400 if self.policy.max_tokens is None else min(400, (self.policy.max_tokens - 8) // 2)
        field: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": limit}
        quotes = self._quotes() if self.policy.quote_tool_results else []
        if quotes:
            # A few words before each result, then the result, and at most a full stop: given more
            # room, a small model writes letters on and on, or another number first. (The pattern
            # bounds the length: xgrammar takes no length bounds beside a pattern.)
            words = "[A-Za-z ,]{0,30}"
            literal = [re.sub(r"([.+])", r"[\1]", quote) for quote in quotes]
            field = {"type": "string", "pattern": f"^{words}{words.join(literal)}[.]?$"}
        return {
            "type": "object",
            "properties": {ANSWER_FIELD: field},
            "required": [ANSWER_FIELD],
            "additionalProperties": False,
        }

    def _quotes(self) -> list[str]:
        """The tool results an answer must quote: numbers and short words (also as the values of
        a result that is an object), as the model read them; at most ``MAX_QUOTES``."""
        quotes: list[str] = []
        for record in self.records:
            if not record.ok:
                continue
            values = record.result.values() if isinstance(record.result, dict) else [record.result]
            quotes.extend(quote for quote in map(_quotable, values) if quote is not None)
        return quotes[:MAX_QUOTES]

    def _choice(self, rounds: int, force_answer: bool) -> ToolChoice:
        if force_answer:
            return "none"
        return self.policy.tool_choice if rounds == 0 else self.policy.followup_tool_choice

    def _unusable_reply(self, reason: str, content: str | None = None) -> list[ChatMessage]:
        """Count an unusable reply; the messages that tell the model on its next try."""
        self._unusable += 1
        log.info("unusable model reply (%s), %d so far", reason, self._unusable)
        if self._unusable > self.policy.max_unusable_replies:
            raise AgentError(f"the model gave {self._unusable} unusable replies; the last: {reason}")
        note = ChatMessage.user(f"Your last reply could not be used ({reason}). Please reply again.")
        return [ChatMessage.assistant(content), note] if content and content.strip() else [note]

    async def _run_calls(self, calls: Sequence[LLMToolCall], added: list[ChatMessage]) -> bool:
        """Run the calls concurrently, append their tool messages in order; True = answer next."""
        outcomes = await asyncio.gather(*(self._run_call(call) for call in calls))
        for call, content in zip(calls, outcomes, strict=True):
            added.append(ChatMessage.tool(call.id, call.name, content))
        return self._repeats >= self.policy.max_repeated_calls

    async def _run_call(self, call: LLMToolCall) -> str:
        key = _call_key(call)
        earlier = self._results.get(key)
        if earlier is not None:
            self._repeats += 1
            await self.events.progress(
                "tool_call", tool=call.name, arguments=call.arguments, detail="repeated"
            )
            return (
                f"You already called {call.name} with these arguments; the result was: {earlier}. "
                "Do not call it again with the same arguments: use that result."
            )
        await self.events.progress("tool_call", tool=call.name, arguments=call.arguments)
        result = await self.call_tool(call.name, call.arguments)
        content = tool_message_content(result)
        self._results[key] = content
        self.records.append(
            ToolCallRecord(
                name=call.name,
                arguments=call.arguments,
                ok=result.ok,
                result=result.result if result.ok else None,
                error=None if result.error is None else f"{result.error.code}: {result.error.message}",
            )
        )
        detail = "ok" if result.ok else f"{result.error.code if result.error else 'error'}"
        await self.events.progress("tool_result", tool=call.name, detail=detail)
        return content

    async def _structured(
        self, prompt: Sequence[ChatMessage], added: list[ChatMessage], output: OutputSpec, last: ChatResponse
    ) -> Any:
        """The structured answer: the last reply if it already fits, else one request for it
        (no tools in that request, so the server may constrain the output to the schema)."""
        if last.parsed is not None:
            return last.parsed
        if not self.policy.answer_then_shape:  # else the last reply is the free answer, never the shape
            try:
                return parse_output(last.content, output)
            except LLMOutputError:
                pass
        schema = output if isinstance(output, dict) else output.model_json_schema()
        history = [*prompt, *added]
        if self.policy.answer_then_shape:
            # The answer's own request as it was (the restated results before it), then the ask.
            history = [*with_note([*prompt, *added[:-1]], self._results_note(prompt)), added[-1]]
            ask = ChatMessage.user(SHAPE_PROMPT.format(answer=(last.content or "").strip().rstrip(".")))
        else:
            results = self._results_note(prompt, structured=True)
            ask_text = FINAL_ANSWER_PROMPT.format(schema=json.dumps(schema))
            ask = ChatMessage.user(f"{results[0].text}\n\n{ask_text}" if results else ask_text)
        shape: OutputSpec = output
        if self.policy.answer_then_shape and self.policy.ground_arguments:
            # A number field holds a number of the free answer (a small model writes its own).
            grounded = ground_schema(schema, last.content or "", kinds=("integer", "number"))
            shape = grounded if grounded is not None else output
        for attempt in range(self.policy.max_unusable_replies + 1):
            await self.events.progress("llm_call", detail="structured answer")
            try:
                request = ChatRequest(messages=[*history, ask], output=shape)
                response = await self.call_llm(request, self.events)
            except LLMOutputError as exc:
                log.info("structured answer attempt %d failed: %s", attempt + 1, exc)
                continue
            self.usage = _add_usage(self.usage, response.usage)
            try:
                data = (
                    response.parsed
                    if response.parsed is not None and shape is output
                    else parse_output(response.content, output)
                )
            except LLMOutputError as exc:
                log.info("structured answer attempt %d failed: %s", attempt + 1, exc)
                continue
            added[-1] = ChatMessage.assistant(response.content or json.dumps(data, default=str))
            return data
        raise AgentError("the model did not give an answer that matches the requested output schema")
