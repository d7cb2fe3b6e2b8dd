"""A small OpenAI-compatible HTTP server on loopback that can misbehave, for the fast tests of
:mod:`argentic.llm.pool`.

It answers ``/health``, ``/v1/models``, ``/metrics`` (vLLM's names) and ``/v1/chat/completions``
(whole or streamed). Its answer is known in advance: ``max_tokens`` tokens ``t0 t1 t2 ...``; a
request that continues a final assistant message (vLLM's ``continue_final_message``) goes on after
the tokens that message already holds, so an answer carried over to another server reads the same
as one that was never interrupted. ``mode`` makes it misbehave: ``hang`` (accepts, never answers),
``html`` (200 with a proxy's HTML page), ``error`` (500 to everything), ``die`` (a stream ends
abruptly after ``die_after`` tokens; a whole answer, before any byte). :meth:`stop` closes the
port (connections are refused); :meth:`start` opens it again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from argentic.netutil import free_port

Mode = Literal["ok", "hang", "html", "die", "error"]

HTML = b"<html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>"


def expected_text(tokens: int) -> str:
    """The whole answer every fake writes for ``max_tokens=tokens``."""
    return "".join(f"t{i} " for i in range(tokens))


@dataclass
class FakeOpenAIServer:
    """See the module's description. ``requests`` records every chat body it was sent."""

    name: str = "fake"
    model: str = "fake-model"
    port: int = field(default_factory=free_port)
    mode: Mode = "ok"
    die_after: int = 3
    token_delay_s: float = 0.0
    extra_running: int = 0  # requests its /metrics reports beyond ours (other clients' load)
    requests: list[dict[str, Any]] = field(default_factory=list)
    running: int = 0
    generated: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> FakeOpenAIServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        """Close the port and every open connection (as a server killed with SIGKILL)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await server.wait_closed()

    async def __aenter__(self) -> FakeOpenAIServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- HTTP -------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            async with asyncio.timeout(30):
                head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
            length = int(headers.get("content-length", "0"))
            body = json.loads(await reader.readexactly(length)) if length else {}
            if self.mode == "hang":
                await asyncio.sleep(3600)
                return
            if self.mode == "html":
                await self._send(writer, 200, HTML, "text/html")
                return
            if self.mode == "error":
                await self._send(writer, 500, b'{"error": {"message": "engine dead"}}', "application/json")
                return
            await self._route(writer, method, path.split("?", 1)[0], body)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _send(self, writer: asyncio.StreamWriter, status: int, data: bytes, kind: str) -> None:
        writer.write(
            f"HTTP/1.1 {status} OK\r\ncontent-type: {kind}\r\ncontent-length: {len(data)}\r\n"
            "connection: close\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    async def _route(
        self, writer: asyncio.StreamWriter, method: str, path: str, body: dict[str, Any]
    ) -> None:
        if path == "/health":
            await self._send(writer, 200, b"", "text/plain")
        elif path == "/v1/models":
            data = {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "fake"}]}
            await self._send(writer, 200, json.dumps(data).encode(), "application/json")
        elif path == "/metrics":
            running = self.running + self.extra_running
            text = (
                f'vllm:num_requests_running{{model_name="{self.model}"}} {running}\n'
                f'vllm:num_requests_waiting{{model_name="{self.model}"}} 0\n'
                f'vllm:kv_cache_usage_perc{{model_name="{self.model}"}} 0.1\n'
                f'vllm:generation_tokens_total{{model_name="{self.model}"}} {self.generated}\n'
            )
            await self._send(writer, 200, text.encode(), "text/plain")
        elif path == "/v1/chat/completions" and method == "POST":
            self.requests.append(body)
            self.running += 1
            try:
                await self._chat(writer, body)
            finally:
                self.running -= 1
        else:
            await self._send(writer, 404, b'{"error": {"message": "not found"}}', "application/json")

    async def _chat(self, writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
        total = int(body.get("max_tokens") or 8)
        start = 0
        messages = body.get("messages") or []
        if body.get("continue_final_message") and messages and messages[-1]["role"] == "assistant":
            start = len(str(messages[-1]["content"]).split())
            total = start + total
        tokens = [f"t{i} " for i in range(start, total)]
        if not body.get("stream"):
            if self.mode == "die":
                return  # the connection closes with no answer
            for _ in tokens:
                self.generated += 1
                await asyncio.sleep(self.token_delay_s)
            message = {"role": "assistant", "content": "".join(tokens)}
            data = {
                "id": "c1",
                "object": "chat.completion",
                "created": 0,
                "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": "length"}],
                "usage": {
                    "prompt_tokens": 5,
                    "completion_tokens": len(tokens),
                    "total_tokens": 5 + len(tokens),
                },
            }
            await self._send(writer, 200, json.dumps(data).encode(), "application/json")
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
            b"connection: close\r\n\r\n"
        )

        async def event(data: dict[str, Any] | str) -> None:
            text = data if isinstance(data, str) else json.dumps(data)
            payload = f"data: {text}\n\n".encode()
            writer.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            await writer.drain()

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        await event(chunk({"role": "assistant", "content": ""}))
        for sent, token in enumerate(tokens):
            if self.mode == "die" and sent >= self.die_after:
                writer.transport.abort()  # mid-body: the chunked stream is cut off
                return
            self.generated += 1
            await event(chunk({"content": token}))
            await asyncio.sleep(self.token_delay_s)
        await event(chunk({}, "length"))
        await event("[DONE]")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
