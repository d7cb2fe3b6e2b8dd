"""An MCP server's tools as an argentic tool service (``argentic tools --mcp`` / ``--mcp-url``): a
real MCP server written with the SDK (mcp_demo_server.py), over stdio and over streamable HTTP on
loopback, its tools called by an agent over mosquitto; its errors, invalid arguments, an unknown
tool and a server that exits come back as tool errors."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agents_support import REPO

from argentic import Agent, ToolManager
from argentic.llm import ScriptedLLM, tool_call
from argentic.netutil import free_port
from argentic.testing.messagers import MakeMessager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.processes import command_env, stop_process, wait_listening
from argentic.tools.mcp_client import McpConnection, mcp_tools, stdio_server

DEMO = Path(__file__).with_name("mcp_demo_server.py")
#: The service's call timeout: a call of the MCP tool ``wait`` longer than this ends as a timeout
#: (long enough for the MCP server to start again on a busy machine).
CALL_TIMEOUT_S = 8


def demo_http_server() -> tuple[subprocess.Popen[bytes], str]:
    """The demo MCP server over streamable HTTP on a free loopback port, serving."""
    port = free_port()
    process = subprocess.Popen([sys.executable, str(DEMO), "--http", str(port)], stderr=subprocess.DEVNULL)
    wait_listening(process, port, what="the demo MCP server")
    return process, f"http://127.0.0.1:{port}/mcp"


def mcp_service(broker: MosquittoBroker, namespace: str, *source: str) -> subprocess.Popen[bytes]:
    """``argentic tools`` serving an MCP server's tools, in a process of its own."""
    env = {
        **command_env(broker.port, namespace),
        "ARGENTIC_TOOLS__CALL_TIMEOUT_S": str(CALL_TIMEOUT_S),
    }
    command = [sys.executable, "-m", "argentic.cli.main", "tools", *source, "--name", "demo"]
    return subprocess.Popen(command, cwd=REPO, env=env)


@pytest.fixture(params=["stdio", "http"])
def served(request: pytest.FixtureRequest, mosquitto: MosquittoBroker, namespace: str) -> Iterator[str]:
    """The demo server's tools served on the broker through stdio or streamable HTTP."""
    http = None
    if request.param == "stdio":
        source = ["--mcp", f"{sys.executable} {DEMO}"]
    else:
        http, url = demo_http_server()
        source = ["--mcp-url", url]
    service = mcp_service(mosquitto, namespace, *source)
    try:
        yield request.param
    finally:
        stop_process(service)
        stop_process(http)


async def test_an_agent_calls_the_tools_of_an_mcp_server(served: str, mqtt: MakeMessager) -> None:
    bus = await mqtt()
    llm = ScriptedLLM([[tool_call("add", {"a": 2, "b": 40}), tool_call("shout", {"text": "hi"})], "done"])
    async with (
        ToolManager(bus) as tools,
        Agent(llm=llm, messager=bus, tool_manager=tools, role="calc") as agent,
    ):
        await tools.wait_for_tools("add", "shout", "fail", "crash", timeout=60)
        spec = tools.tools["add"]
        # The MCP tool's input schema is what the model sees.
        assert spec.description == "Add two integers."
        assert spec.parameters["properties"]["b"]["maximum"] == 1000
        assert tools.services.keys() == {"demo"}
        result = await agent.answer("2 + 40, and shout hi")
    assert result.text == "done"
    records = {record.name: record for record in result.tool_calls}
    assert records["add"].ok and records["add"].result == {"result": 42}
    assert records["shout"].ok and records["shout"].result == {"result": "HI"}


async def test_mcp_errors_come_back_as_tool_errors(served: str, mqtt: MakeMessager) -> None:
    async with ToolManager(await mqtt()) as tools:
        await tools.wait_for_tools("add", "fail", "crash", timeout=60)
        unknown = await tools.call("nope", {})
        assert unknown.error and unknown.error.code == "unknown_tool"
        # Checked against the MCP tool's schema before the server is asked.
        for wrong in ({"a": "x", "b": 1}, {"a": 1, "b": 5000}, {"a": 1}):
            bad = await tools.call("add", wrong)
            assert bad.error and bad.error.code == "invalid_arguments", wrong
            assert bad.error.details and "properties" in bad.error.details
        # The service's timeout holds for MCP tools; the session serves the next call.
        late = await tools.call("wait", {"seconds": 60})
        assert late.error and late.error.code == "timeout", late.error
        assert (await tools.call("wait", {"seconds": 0})).result == {"result": "waited"}
        failed = await tools.call("fail", {"reason": "kaput"})
        assert failed.error and failed.error.code == "tool_failed"
        assert "MCP tool fail failed" in failed.error.message and "kaput" in failed.error.message
        # The server exits during the call: a clear error, not a wait for the timeout.
        crashed = await tools.call("crash", {})
        assert crashed.error and crashed.error.code == "tool_failed", crashed.error
        assert "went away" in crashed.error.message
        after = await tools.call("add", {"a": 1, "b": 2})
        if served == "stdio":
            # The next call starts the server again.
            assert after.ok and after.result == {"result": 3}
        else:
            # Nobody starts an HTTP server again: the call says it cannot be reached.
            assert after.error and after.error.code == "tool_failed"
            assert "could not connect to MCP server" in after.error.message


async def test_replicas_of_an_mcp_tool_service_share_the_calls(
    mosquitto: MosquittoBroker, namespace: str, mqtt: MakeMessager
) -> None:
    stdio = ["--mcp", f"{sys.executable} {DEMO}"]
    first, second = mcp_service(mosquitto, namespace, *stdio), mcp_service(mosquitto, namespace, *stdio)
    try:
        async with ToolManager(await mqtt()) as tools:
            await tools.wait_for_tools("whoami", timeout=60)
            servers: set[int] = set()
            deadline = time.monotonic() + 60  # a guard: the second replica may start much later
            while len(servers) < 2 and time.monotonic() < deadline:
                results = await asyncio.gather(*(tools.call("whoami", {}) for _ in range(8)))
                assert all(r.ok for r in results), [r.error for r in results]
                servers = {r.result["result"] for r in results}
                await asyncio.sleep(0.2)
            assert len(servers) == 2
            stop_process(first)
            results = await asyncio.gather(*(tools.call("whoami", {}) for _ in range(8)))
            assert all(r.ok for r in results), [r.error for r in results]
            assert len({r.result["result"] for r in results}) == 1
    finally:
        stop_process(first)
        stop_process(second)


async def test_an_mcp_servers_tools_as_an_agents_local_tools() -> None:
    async with McpConnection(stdio_server(f"{sys.executable} {DEMO}")) as connection:
        tools = await mcp_tools(connection, only=["add", "shout"])
        assert [t.tool_name for t in tools] == ["add", "shout"]
        llm = ScriptedLLM(
            [[tool_call("add", {"a": 1, "b": 2}), tool_call("add", {"a": "x", "b": 2})], "done"]
        )
        async with Agent(llm=llm, tools=tools) as agent:
            result = await agent.answer("1 + 2")
    good, bad = sorted(result.tool_calls, key=lambda record: not record.ok)
    assert good.ok and good.result == {"result": 3}
    assert bad.arguments["a"] == "x" and bad.error and bad.error.startswith("invalid_arguments")
