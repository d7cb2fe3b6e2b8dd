"""`argentic serve` starts a real vLLM (the CPU model when none is configured), a provider keeps
working across a server restart, a server without tool-call parsing is explained, and the command
stops the server cleanly."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from argentic.errors import LLMRequestError
from argentic.llm import ChatMessage, ChatRequest, SamplingSettings, ToolDefinition
from argentic.llm.local_server import health_ok
from argentic.llm.openai_provider import OpenAICompatibleProvider
from argentic.netutil import free_port

pytestmark = pytest.mark.vllm


class Pick(BaseModel):
    colour: Literal["red", "green", "blue"]
    count: int = Field(ge=1, le=9)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def _serve(
    config: Path, port: int, log: Path, **settings: str
) -> tuple[asyncio.subprocess.Process, int]:
    """Start `argentic serve`; return it and vLLM's pid once it says it is serving.

    ``settings`` become ARGENTIC_LLM__SERVER__* variables, which override the config file.
    """
    env = {**os.environ, "ARGENTIC_LLM__SERVER__PORT": str(port)}
    env.update({f"ARGENTIC_LLM__SERVER__{key.upper()}": value for key, value in settings.items()})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "argentic.cli.main", "-c", str(config), "serve",
        stdout=asyncio.subprocess.PIPE, stderr=log.open("ab"), env=env,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        async with asyncio.timeout(300):
            while True:
                line = (await process.stdout.readline()).decode()
                if not line:
                    pytest.fail(f"argentic serve exited ({await process.wait()}):\n{_tail(log)}")
                if match := re.search(r"serving (\S+) at (\S+) \(pid (\d+)\)", line):
                    assert match.group(2) == f"http://127.0.0.1:{port}/v1"
                    return process, int(match.group(3))
    except TimeoutError:
        process.send_signal(signal.SIGTERM)
        await process.wait()
        pytest.fail(f"argentic serve did not get ready:\n{_tail(log)}")


async def _stop(process: asyncio.subprocess.Process, vllm_pid: int, port: int) -> None:
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(90):
        assert await process.wait() == 0
    with pytest.raises(ProcessLookupError):
        os.kill(vllm_pid, 0)
    assert not await asyncio.to_thread(health_ok, f"http://127.0.0.1:{port}/v1")


async def test_serve_starts_survives_a_restart_and_stops(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("llm:\n  server:\n    port: 1\n    startup_timeout_s: 280\n")
    port, log = free_port(), tmp_path / "serve.log"
    tool = ToolDefinition.from_model("pick", Pick)
    settings = SamplingSettings(max_tokens=48, temperature=0)
    question = [ChatMessage.user("Pick a colour and a count.")]

    process, pid = await _serve(config, port, log)
    llm = OpenAICompatibleProvider(base_url=f"http://127.0.0.1:{port}/v1", max_retries=4, retry_delay_s=0.2)
    try:
        first = await llm.chat(
            ChatRequest(messages=question, tools=[tool], tool_choice="pick", settings=settings)
        )
        first.tool_calls[0].parse_arguments(Pick)
        await _stop(process, pid, port)
        assert "stopped" in _tail(log)

        # The same provider (its pooled connections now dead) works once a server is back; this
        # one is started without tool-call parsing: a demanded call still comes (guided decoding
        # needs no parser), a call the model may choose is answered with HTTP 400, made clear.
        process, pid = await _serve(config, port, log, tool_call_parser="null")
        second = await llm.chat(ChatRequest(messages=question, settings=settings))
        assert second.model == first.model == "gemma3-270m" and second.usage.completion_tokens > 0
        guided = await llm.chat(
            ChatRequest(messages=question, tools=[tool], tool_choice="pick", settings=settings)
        )
        guided.tool_calls[0].parse_arguments(Pick)
        with pytest.raises(LLMRequestError, match="--enable-auto-tool-choice --tool-call-parser") as caught:
            await llm.chat(
                ChatRequest(messages=question, tools=[tool], tool_choice="auto", settings=settings)
            )
        assert caught.value.status_code == 400
    finally:
        await llm.close()
        if process.returncode is None:
            await _stop(process, pid, port)
