"""Tools and helpers shared by the agent tests."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field

from argentic.llm import SamplingSettings
from argentic.llm.openai_provider import OpenAICompatibleProvider
from argentic.testing.processes import command_env
from argentic.tools import BaseTool, tool

REPO = Path(__file__).resolve().parents[2]
SUPPORT = str(Path(__file__).resolve())


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
async def explode(reason: Annotated[str, Field(max_length=50)] = "boom") -> str:
    """Always fails."""
    raise RuntimeError(reason)


@tool(timeout_s=0.3)
async def hang() -> str:
    """Never finishes in time."""
    await asyncio.sleep(30)
    return "late"


@tool(timeout_s=120)
async def slow(seconds: Annotated[float, Field(ge=0, le=120)] = 60) -> str:
    """Takes its time."""
    await asyncio.sleep(seconds)
    return "done"


class EchoArgs(BaseModel):
    text: str = Field(max_length=100)
    times: int = Field(default=1, ge=1, le=5)


class Echo(BaseTool):
    """Repeat a text."""

    name = "echo"
    Arguments = EchoArgs

    async def run(self, args: EchoArgs) -> str:
        return " ".join([args.text] * args.times)


def cpu_model(server: Any, max_tokens: int = 48) -> OpenAICompatibleProvider:
    """A provider for the test session's CPU vLLM server: greedy, few tokens, a patient timeout
    (a busy 2-core machine can be slow; a timeout is not what these tests are about)."""
    return OpenAICompatibleProvider(
        base_url=server.base_url,
        model=server.model,
        defaults=SamplingSettings(max_tokens=max_tokens, temperature=0),
        timeout_s=300,
    )


def all_tools() -> list[BaseTool]:
    return [add, explode, hang, slow, Echo()]


def service_process(
    broker_port: int, namespace: str, module: str, name: str, *extra: str
) -> subprocess.Popen[bytes]:
    """``argentic tools`` in a process of its own, on the given broker and namespace."""
    env = command_env(broker_port, namespace)
    command = [sys.executable, "-m", "argentic.cli.main", "tools", "--module", module, "--name", name, *extra]
    return subprocess.Popen(command, cwd=REPO, env=env)
