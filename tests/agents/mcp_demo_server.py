"""A small MCP server written with the SDK, for the tests: ``python mcp_demo_server.py`` serves it
over stdio, ``python mcp_demo_server.py --http PORT`` over streamable HTTP on loopback."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

server = MCPServer("demo")


@server.tool()
def add(a: int, b: Annotated[int, Field(ge=0, le=1000)]) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def shout(text: str) -> str:
    """The text in capitals."""
    return text.upper()


@server.tool()
def fail(reason: str) -> str:
    """Always fails, with the reason."""
    raise ToolError(reason)  # a ToolError reaches the client with its message


@server.tool()
async def wait(seconds: float) -> str:
    """Waits that long, then says so."""
    await anyio.sleep(seconds)
    return "waited"


@server.tool()
def whoami() -> int:
    """The id of the server's process."""
    return os.getpid()


@server.tool()
def crash() -> str:
    """Ends the server's process in the middle of the call."""
    sys.stdout.flush()
    os._exit(3)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
