"""Failure handling against a scripted HTTP server on loopback (fast tier; the real vLLM tier also
checks server down, wrong URL and restarts): retries on 429/5xx, the timeout, the concurrency
bound, and vLLM's 400 for tools explained."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from argentic.errors import LLMRequestError, LLMTimeoutError, LLMUnavailableError
from argentic.llm import ChatRequest, ToolDefinition
from argentic.llm.openai_provider import OpenAICompatibleProvider
from argentic.netutil import free_port

Reply = tuple[int, dict[str, object]]

COMPLETION = {
    "id": "x",
    "object": "chat.completion",
    "created": 0,
    "model": "stub",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


@dataclass
class Stub:
    handler: Callable[[str, dict[str, object]], Awaitable[Reply]]
    port: int = 0
    paths: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

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
                self.paths.append(path)
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    status, payload = await self.handler(path, body)
                finally:
                    self.in_flight -= 1
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


async def _start(
    handler: Callable[[str, dict[str, object]], Awaitable[Reply]],
) -> tuple[Stub, asyncio.Server]:
    stub = Stub(handler)
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
    return OpenAICompatibleProvider(base_url=stub.base_url, model="stub", **options)  # type: ignore[arg-type]


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


async def test_every_call_has_a_timeout() -> None:
    async def handler(path: str, body: dict[str, object]) -> Reply:
        await asyncio.sleep(30)
        return 200, COMPLETION

    stub, server = await _start(handler)
    async with server, _provider(stub, timeout_s=0.3) as llm:
        with pytest.raises(LLMTimeoutError, match="within"):
            await llm.chat(ChatRequest.user("hi"))


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
