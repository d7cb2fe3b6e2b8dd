"""``argentic mcp-serve``: the tools announced on mosquitto as one MCP server, used by the SDK's
own client over stdio (a subprocess) and streamable HTTP on loopback: listing and calling a tool an
argentic ToolService serves, errors, and the tool list changing as services come and go."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from agents_support import REPO, Echo, add, explode
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.subscriptions import ToolsListChanged
from mcp.types import TextContent, ToolListChangedNotification

from argentic import ToolService
from argentic.netutil import free_port
from argentic.testing.messagers import MakeMessager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.processes import command_env, stop_process, wait_listening

Connect = Callable[..., Awaitable[Any]]


@pytest.fixture(params=["stdio", "http"])
def mcp_serve(request: pytest.FixtureRequest, mosquitto: MosquittoBroker, namespace: str) -> Any:
    """Opens an SDK client on ``argentic mcp-serve``: a subprocess on stdio (one per client), or
    the one started here on HTTP."""
    env = command_env(mosquitto.port, namespace)
    command = [sys.executable, "-m", "argentic.cli.main", "mcp-serve"]
    process: subprocess.Popen[bytes] | None = None
    if request.param == "stdio":
        server: Any = StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=str(REPO))
    else:
        port = free_port()
        process = subprocess.Popen([*command, "--http", str(port)], cwd=REPO, env=env)
        wait_listening(process, port, what="argentic mcp-serve --http")
        server = f"http://127.0.0.1:{port}/mcp"

    @asynccontextmanager
    async def connect(**options: Any) -> AsyncIterator[Client]:
        async with Client(server, read_timeout_seconds=60, **options) as client:
            yield client

    try:
        yield connect
    finally:
        stop_process(process)


def text(result: Any) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


async def test_the_sdk_client_lists_and_calls_argentic_tools(mcp_serve: Any, mqtt: MakeMessager) -> None:
    async with ToolService(await mqtt(), [add, Echo(), explode], "math"), mcp_serve() as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert listed.keys() == {"add", "echo", "explode"}
        assert listed["add"].description == "Add two integers."
        assert listed["add"].input_schema["required"] == ["a", "b"]

        result = await client.call_tool("add", {"a": 2, "b": 40})
        assert not result.is_error and text(result) == "42"
        echoed = await client.call_tool("echo", {"text": "hi", "times": 2})
        assert not echoed.is_error and text(echoed) == "hi hi"

        invalid = await client.call_tool("add", {"a": "x"})
        assert invalid.is_error and text(invalid).startswith("invalid_arguments:")
        raised = await client.call_tool("explode", {"reason": "kaput"})
        assert raised.is_error and text(raised).startswith("tool_failed:") and "kaput" in text(raised)
        with pytest.raises(MCPError, match="no tool named 'nope'"):
            await client.call_tool("nope", {})


async def test_tools_appearing_and_leaving_change_the_list(mcp_serve: Any, mqtt: MakeMessager) -> None:
    async with ToolService(await mqtt(), [add], "math"), mcp_serve() as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["add"]
        async with client.listen(tools_list_changed=True) as changes:
            events = aiter(changes)

            async def told(expected: list[str]) -> None:
                # The change that brought "add" may be told first, after the client listed it.
                while True:
                    assert isinstance(await asyncio.wait_for(anext(events), 60), ToolsListChanged)
                    if [t.name for t in (await client.list_tools()).tools] == expected:
                        return

            late = ToolService(await mqtt(), [Echo()], "late")
            async with late:
                await told(["add", "echo"])
                echoed = await client.call_tool("echo", {"text": "new"})
                assert text(echoed) == "new"
            await told(["add"])


async def test_a_pre_2026_client_gets_the_list_changed_notification(
    mcp_serve: Any, mqtt: MakeMessager
) -> None:
    notified = asyncio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ToolListChangedNotification):
            notified.set()

    async with mcp_serve(mode="legacy", message_handler=on_message) as client:
        assert client.server_capabilities.tools and client.server_capabilities.tools.list_changed
        assert (await client.list_tools()).tools == []
        async with ToolService(await mqtt(), [add], "math"):
            await asyncio.wait_for(notified.wait(), 60)
            assert [t.name for t in (await client.list_tools()).tools] == ["add"]
