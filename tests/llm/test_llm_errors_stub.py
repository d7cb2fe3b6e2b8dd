"""Failure handling against a scripted HTTP server on loopback (fast tier; the real vLLM tier also
checks server down, wrong URL and restarts): retries on 429/5xx, the timeout, the concurrency
bound, and vLLM's 400 for tools explained."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from argentic.errors import LLMRequestError, LLMTimeoutError, LLMUnavailableError
from argentic.llm import ChatRequest, StreamEnd, TextDelta, ToolCallDelta, ToolDefinition
from argentic.llm.local import CPU_MODEL_NAME
from argentic.llm.openai_provider import OpenAICompatibleProvider
from argentic.llm.wire import SAFE_INTEGER
from argentic.netutil import free_port


@dataclass
class Tokens:
    """A streamed answer: ``texts`` one chunk each, ``gap_s`` apart; ``stall`` stops sending after
    them without ending the stream (headers and the chunks so far are sent)."""

    texts: list[str]
    gap_s: float = 0.0
    stall: bool = False

    def chunks(self) -> list[dict[str, object]]:
        def chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return {
                "id": "x",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "stub",
                "choices": [choice],
            }

        usage = {
            "prompt_tokens": 3,
            "completion_tokens": len(self.texts),
            "total_tokens": 3 + len(self.texts),
        }
        last = {**chunk({}), "choices": [], "usage": usage}
        return [chunk({"content": text}) for text in self.texts] + [chunk({}, "stop"), last]

    def completion(self) -> dict[str, object]:
        """The same answer in one response, as a non-streamed request gets it."""
        message = {"role": "assistant", "content": "".join(self.texts)}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        usage = {
            "prompt_tokens": 3,
            "completion_tokens": len(self.texts),
            "total_tokens": 3 + len(self.texts),
        }
        return {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "stub",
            "choices": [choice],
            "usage": usage,
        }


Reply = tuple[int, dict[str, object] | Tokens]

COMPLETION = Tokens(["ok"])


@dataclass
class Stub:
    handler: Callable[[str, dict[str, object]], Awaitable[Reply]]
    port: int = 0
    paths: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    # vLLM's token counters on /metrics: None serves no /metrics (404), as a server other than vLLM.
    work: Callable[[], float] | None = None
    metrics_reads: int = 0
    streamed: list[bool] = field(default_factory=list)  # per chat request: whether it asked a stream

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                path = lines[0].split(" ")[1]
                length = next(
                    (
                        int(v)
                        for k, _, v in (line.partition(": ") for line in lines)
                        if k.lower() == "content-length"
                    ),
                    0,
                )
                body = json.loads(await reader.readexactly(length)) if length else {}
                if path == "/metrics":
                    await self._metrics(writer)
                    continue
                self.paths.append(path)
                if path.endswith("/chat/completions"):
                    self.streamed.append(bool(body.get("stream")))
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    status, payload = await self.handler(path, body)
                finally:
                    self.in_flight -= 1
                if isinstance(payload, Tokens) and body.get("stream"):
                    await self._stream(writer, payload)
                    continue
                if isinstance(payload, Tokens):  # the whole answer once its tokens are made
                    await asyncio.sleep(payload.gap_s * len(payload.texts))
                    if payload.stall:
                        await asyncio.sleep(3600)
                    payload = payload.completion()
                data = json.dumps(payload).encode()
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n".encode()
                    + f"content-length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _metrics(self, writer: asyncio.StreamWriter) -> None:
        self.metrics_reads += 1
        if self.work is None:
            status, text = 404, "not found"
        else:
            work = self.work()
            status, text = (
                200,
                (
                    "# TYPE vllm:prompt_tokens_total counter\n"
                    f'vllm:prompt_tokens_total{{engine="0",model_name="stub"}} {work / 2}\n'
                    f'vllm:generation_tokens_total{{engine="0",model_name="stub"}} {work / 2}\n'
                    'vllm:num_requests_running{engine="0",model_name="stub"} 1.0\n'
                ),
            )
        data = text.encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    async def _stream(self, writer: asyncio.StreamWriter, tokens: Tokens) -> None:
        """Server-sent events in HTTP chunked encoding, as vLLM streams a chat completion."""
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        events = [f"data: {json.dumps(chunk)}\n\n" for chunk in tokens.chunks()]
        if tokens.stall:
            events = events[: len(tokens.texts)]
        for index, event in enumerate(events):
            if index and tokens.gap_s:
                await asyncio.sleep(tokens.gap_s)
            data = event.encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()
        if tokens.stall:
            await asyncio.sleep(3600)
        done = b"data: [DONE]\n\n"
        writer.write(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")
        await writer.drain()


async def _start(
    handler: Callable[[str, dict[str, object]], Awaitable[Reply]],
    work: Callable[[], float] | None = None,
) -> tuple[Stub, asyncio.Server]:
    stub = Stub(handler, work=work)
    server = await asyncio.start_server(stub.serve, "127.0.0.1", 0)
    stub.port = server.sockets[0].getsockname()[1]
    return stub, server


def _provider(stub: Stub, **kwargs: object) -> OpenAICompatibleProvider:
    options: dict[str, object] = {
        "max_retries": 3,
        "retry_delay_s": 0.01,
        "retry_max_delay_s": 0.05,
        "timeout_s": 10,
    }
    options.update(kwargs)
    options.setdefault("model", "stub")
    return OpenAICompatibleProvider(base_url=stub.base_url, **options)  # type: ignore[arg-type]


async def test_retries_429_and_5xx_then_succeeds() -> None:
    statuses = [429, 503, 200]

    async def handler(path: str, body: dict[str, object]) -> Reply:
        status = statuses.pop(0)
        return status, COMPLETION if status == 200 else {"error": {"message": "busy"}}

    stub, server = await _start(handler)
    async with server, _provider(stub) as llm:
        reply = await llm.chat(ChatRequest.user("hi"))
    assert reply.content == "ok" and reply.usage.total_tokens == 4
    assert stub.paths == ["/v1/chat/completions"] * 3


async def test_gives_up_after_max_retries_with_the_status() -> None:
    async def handler(path: str, body: dict[str, object]) -> Reply:
        return 500, {"error": {"message": "engine dead"}}

    stub, server = await _start(handler)
    async with server, _provider(stub, max_retries=2) as llm:
        with pytest.raises(LLMRequestError, match="500: engine dead") as caught:
            await llm.chat(ChatRequest.user("hi"))
    assert caught.value.status_code == 500 and len(stub.paths) == 3


async def test_tools_refused_by_a_server_without_tool_parsing_is_explained() -> None:
    async def handler(path: str, body: dict[str, object]) -> Reply:
        message = '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
        return 400, {"error": {"message": message, "type": "BadRequestError", "code": 400}}

    stub, server = await _start(handler)
    tool = ToolDefinition(name="f", parameters={"type": "object", "properties": {}})
    async with server, _provider(stub) as llm:
        with pytest.raises(LLMRequestError, match="--enable-auto-tool-choice --tool-call-parser") as caught:
            await llm.chat(ChatRequest.user("hi", tools=[tool]))
    assert caught.value.status_code == 400 and len(stub.paths) == 1  # a 400 is not retried


@pytest.mark.parametrize(
    ("message", "says"),
    [
        ("At most 2 image(s) may be provided in one prompt.", "limit_mm_per_prompt: {image: N}"),
        ("At most 1 audio(s) may be provided in one prompt.", "limit_mm_per_prompt: {audio: N}"),
        ("At most 0 audio(s) may be provided in one prompt.", "takes no audio clips"),
        ("gemma3-270m is not a multimodal model", "takes text only"),
    ],
)
async def test_media_refusals_are_explained(message: str, says: str) -> None:
    async def handler(path: str, body: dict[str, object]) -> Reply:
        return 400, {"error": {"message": message, "type": "BadRequestError", "code": 400}}

    stub, server = await _start(handler)
    async with server, _provider(stub) as llm:
        with pytest.raises(LLMRequestError) as caught:
            await llm.chat(ChatRequest.user("hi"))
    assert says in str(caught.value) and message in str(caught.value)
    assert caught.value.status_code == 400 and len(stub.paths) == 1


async def test_every_call_has_a_timeout() -> None:
    async def handler(path: str, body: dict[str, object]) -> Reply:
        await asyncio.sleep(30)
        return 200, COMPLETION

    stub, server = await _start(handler)
    async with server, _provider(stub, timeout_s=0.3) as llm:
        with pytest.raises(LLMTimeoutError, match="within"):
            await llm.chat(ChatRequest.user("hi"))


async def test_a_long_answer_that_keeps_coming_outlasts_the_timeout() -> None:
    # 12 tokens 0.1 s apart: 1.1 s in all, well over the 0.4 s timeout, never 0.4 s without one.
    async def handler(path: str, body: dict[str, object]) -> Reply:
        return 200, Tokens([f"t{i} " for i in range(12)], gap_s=0.1)

    stub, server = await _start(handler)
    async with server, _provider(stub, timeout_s=0.4) as llm:
        reply = await llm.chat(ChatRequest.user("hi"))
    assert reply.content == "".join(f"t{i} " for i in range(12)) and reply.usage.completion_tokens == 12


async def test_a_stream_that_stalls_times_out() -> None:
    async def handler(path: str, body: dict[str, object]) -> Reply:
        return 200, Tokens(["one ", "two "], stall=True)

    stub, server = await _start(handler)
    async with server, _provider(stub, timeout_s=0.3) as llm:
        with pytest.raises(LLMTimeoutError, match="no new token"):
            await llm.chat(ChatRequest.user("hi"))
        with pytest.raises(LLMTimeoutError, match="no new token"):
            _ = [event async for event in llm.stream(ChatRequest.user("hi"))]
    assert stub.paths == ["/v1/chat/completions"] * 2  # a stall mid-answer is not retried


def _growing() -> Callable[[], float]:
    """A work count that has grown at every read, as a busy vLLM's."""
    reads = itertools.count()
    return lambda: 100.0 * next(reads)


async def test_vllm_answers_in_one_response_while_its_work_count_grows() -> None:
    # The answer takes 1.2 s against a 0.4 s timeout; the server's token count grows meanwhile.
    async def handler(path: str, body: dict[str, object]) -> Reply:
        return 200, Tokens([f"t{i} " for i in range(12)], gap_s=0.1)

    stub, server = await _start(handler, work=_growing())
    async with server, _provider(stub, timeout_s=0.4) as llm:
        reply = await llm.chat(ChatRequest.user("hi"))
        second = await llm.chat(ChatRequest.user("again"))
    assert reply.content == second.content == "".join(f"t{i} " for i in range(12))
    assert stub.streamed == [False, False]  # one response each: cheaper for the server than a stream
    assert stub.metrics_reads >= 3  # the probe (once), then the watch while each answer was made


async def test_the_first_calls_at_once_probe_the_counters_once() -> None:
    async def handler(path: str, body: dict[str, object]) -> Reply:
        return 200, Tokens(["ok"])

    stub, server = await _start(handler, work=_growing())
    async with server, _provider(stub) as llm:
        replies = await asyncio.gather(*[llm.chat(ChatRequest.user(str(i))) for i in range(8)])
    assert [r.content for r in replies] == ["ok"] * 8 and stub.streamed == [False] * 8
    assert stub.metrics_reads == 1  # answered at once: no watch read, and one probe for all eight


async def test_vllm_that_does_no_work_times_out() -> None:
    async def handler(path: str, body: dict[str, object]) -> Reply:
        return 200, Tokens(["never"], stall=True)

    stub, server = await _start(handler, work=lambda: 500.0)
    async with server, _provider(stub, timeout_s=0.3) as llm:
        with pytest.raises(LLMTimeoutError, match="did no work for"):
            await llm.chat(ChatRequest.user("hi"))
    assert stub.streamed == [False]  # not retried: the server was reached and did nothing


async def test_a_server_unreachable_at_first_is_asked_for_its_counters_again() -> None:
    port = free_port()
    llm = OpenAICompatibleProvider(
        base_url=f"http://127.0.0.1:{port}/v1", model="stub", max_retries=0, timeout_s=5
    )
    async with llm:
        with pytest.raises(LLMUnavailableError):
            await llm.chat(ChatRequest.user("hi"))

        async def handler(path: str, body: dict[str, object]) -> Reply:
            return 200, Tokens(["ok"])

        stub = Stub(handler, port=port, work=_growing())
        async with await asyncio.start_server(stub.serve, "127.0.0.1", port):
            reply = await llm.chat(ChatRequest.user("hi"))
    assert reply.content == "ok" and stub.streamed == [False]


async def test_concurrent_requests_are_bounded_per_endpoint() -> None:
    async def handler(path: str, body: dict[str, object]) -> Reply:
        await asyncio.sleep(0.02)
        return 200, COMPLETION

    stub, server = await _start(handler)
    async with server, _provider(stub, max_concurrency=3) as llm:
        critic = llm.with_overrides(temperature=0.5)  # same server: same bound
        replies = await asyncio.gather(
            *[(llm if i % 2 else critic).chat(ChatRequest.user(str(i))) for i in range(12)]
        )
    assert len(replies) == 12 and stub.max_in_flight <= 3


async def test_connection_refused_names_the_url_and_the_fix() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    async with OpenAICompatibleProvider(base_url=url, max_retries=1, retry_delay_s=0.01) as llm:
        with pytest.raises(LLMUnavailableError) as caught:
            await llm.chat(ChatRequest.user("hi"))
    assert url in str(caught.value) and "argentic serve" in str(caught.value)


ADD = ToolDefinition(
    name="add",
    parameters={"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
)
GUIDED_REPLY = Tokens(['{"name":"add",', '"arguments":{"a":2}}'])


async def test_a_demanded_call_is_written_under_guided_decoding() -> None:
    bodies: list[dict[str, object]] = []

    async def handler(path: str, body: dict[str, object]) -> Reply:
        bodies.append(body)
        return 200, GUIDED_REPLY

    stub, server = await _start(handler)
    request = ChatRequest.user("2?", tools=[ADD], tool_choice="required", parallel_tool_calls=False)
    async with server, _provider(stub) as llm:
        reply = await llm.chat(request)
        events = [event async for event in llm.stream(request)]
    for body in bodies:  # the tools are shown, the call is constrained: a list of one call, no free space
        assert body["tool_choice"] == "none" and body["tools"] and "parallel_tool_calls" not in body
        guided = body["structured_outputs"]
        assert isinstance(guided, dict) and guided["disable_any_whitespace"] is True
        assert guided["json"]["properties"]["name"]["enum"] == ["add"]  # one call: the object alone
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("add", {"a": 2})]
    assert reply.content is None and reply.finish_reason == "tool_calls"
    # streamed: the calls' JSON is not text; the call is announced whole, then the reply
    assert not any(isinstance(e, TextDelta) for e in events)
    (delta,) = [e for e in events if isinstance(e, ToolCallDelta)]
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.response.tool_calls[0].id == delta.id
    assert json.loads(delta.arguments_delta) == {"a": 2}


async def test_a_server_that_refuses_guided_calls_is_asked_its_own_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bodies: list[dict[str, object]] = []

    async def handler(path: str, body: dict[str, object]) -> Reply:
        bodies.append(body)
        if "structured_outputs" in body:
            message = "1 validation error: structured_outputs: Extra inputs are not permitted"
            return 400, {"error": {"message": message, "type": "BadRequestError", "code": 400}}
        call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2}'}}
        message_ = {"role": "assistant", "content": None, "tool_calls": [call]}
        choice = {"index": 0, "message": message_, "finish_reason": "tool_calls"}
        return 200, {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "stub",
            "choices": [choice],
        }

    stub, server = await _start(handler, work=_growing())  # vLLM: answers in one response
    request = ChatRequest.user("2?", tools=[ADD], tool_choice="required", parallel_tool_calls=False)
    async with server, _provider(stub) as llm:
        first = await llm.chat(request)
        second = await llm.chat(request)
    assert [c.arguments for c in (*first.tool_calls, *second.tool_calls)] == [{"a": 2}, {"a": 2}]
    # refused once; then the server's own tool_choice, every time after, with one warning
    assert ["structured_outputs" in b for b in bodies] == [True, False, False]
    assert bodies[1]["tool_choice"] == "required" and bodies[1]["parallel_tool_calls"] is False
    assert len([r for r in caplog.records if "refused guided tool calls" in r.getMessage()]) == 1


async def test_a_server_other_than_vllm_gets_the_standard_tool_choice() -> None:
    bodies: list[dict[str, object]] = []

    async def handler(path: str, body: dict[str, object]) -> Reply:
        bodies.append(body)
        return 200, COMPLETION

    stub, server = await _start(handler)
    async with server, _provider(stub, vllm=False) as llm:
        await llm.chat(ChatRequest.user("2?", tools=[ADD], tool_choice="add", parallel_tool_calls=False))
    (body,) = bodies
    assert body["tool_choice"] == {"type": "function", "function": {"name": "add"}}
    assert body["parallel_tool_calls"] is False and "structured_outputs" not in body


async def test_a_model_whose_template_tags_calls_writes_them_tagged_under_a_structural_tag() -> None:
    bodies: list[dict[str, object]] = []

    async def handler(path: str, body: dict[str, object]) -> Reply:
        bodies.append(body)
        return 200, Tokens(['<tool_call>{"name": "add", "arguments": ', '{"a": 2}}</tool_call>'])

    stub, server = await _start(handler, work=_growing())
    async with server, _provider(stub, model=CPU_MODEL_NAME) as llm:
        one = await llm.chat(ChatRequest.user("2?", tools=[ADD], tool_choice="add"))
        several = await llm.chat(ChatRequest.user("2?", tools=[ADD], tool_choice="required"))
    assert one.tool_calls[0].arguments == several.tool_calls[0].arguments == {"a": 2}
    assert one.content is None and one.finish_reason == "tool_calls"
    single, listed = (json.loads(b["structured_outputs"]["structural_tag"]) for b in bodies)  # type: ignore[index]
    (tag,) = single["format"]["tags"]
    assert tag["begin"] == '<tool_call>{"name": "add", "arguments": ' and tag["end"] == "}</tool_call>"
    assert tag["content"]["max_whitespace_cnt"] == 1  # no run of whitespace to fill max_tokens
    assert tag["content"]["json_schema"]["properties"]["a"]["maximum"] == SAFE_INTEGER
    assert single["format"]["stop_after_first"] is True and listed["format"]["stop_after_first"] is False
