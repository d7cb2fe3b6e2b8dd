"""``argentic tools``: serve the tools of a Python module, or of an MCP server, over MQTT until stopped."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from argentic.agents.runtime import wait_for_shutdown
from argentic.config import ArgenticConfig, load_config
from argentic.errors import ArgenticError
from argentic.messaging import Messager
from argentic.observability import MetricsServer, tracing
from argentic.storage import open_store
from argentic.tools import BaseTool, ToolService
from argentic.tools.loader import import_module, tools_in

HELP = "serve the @tool functions of a Python module, or an MCP server's tools, over MQTT"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-m", "--module", help="dotted module (examples.tools) or .py path; default: tools.module"
    )
    parser.add_argument(
        "-n", "--name", help="service name, stable across restarts (default: tools.service_name)"
    )
    parser.add_argument("--tool", action="append", dest="only", help="serve only this tool (repeatable)")
    mcp = parser.add_mutually_exclusive_group()
    mcp.add_argument("--mcp", metavar="COMMAND", help="tools of the MCP server COMMAND starts (stdio)")
    mcp.add_argument("--mcp-url", metavar="URL", help="tools of the MCP server at URL (streamable HTTP)")


async def serve(config: ArgenticConfig, module: str, name: str, only: list[str] | None = None) -> int:
    tools = tools_in(import_module(module))
    tracing.configure(config.tracing, "argentic-tools")
    if only:
        tools = [t for t in tools if t.tool_name in only]
    if not tools:
        print(f"argentic tools: {module} defines no tools (use @tool or BaseTool)", file=sys.stderr)
        return 1
    return await serve_tools(config, tools, name)


async def serve_mcp(
    config: ArgenticConfig, command: str | None, url: str | None, name: str, only: list[str] | None = None
) -> int:
    """Serve the tools of the MCP server started by ``command`` (stdio) or found at ``url``."""
    from argentic.tools.mcp_client import McpConnection, mcp_tools, stdio_server

    target = url if url else stdio_server(command or "")
    async with McpConnection(target) as connection:
        tools = await mcp_tools(connection, only=only)
        if not tools:
            print(f"argentic tools: MCP server {connection.label} lists no tools to serve", file=sys.stderr)
            return 1
        return await serve_tools(config, tools, name)


async def serve_tools(config: ArgenticConfig, tools: Sequence[BaseTool], name: str) -> int:
    # The default will (the client's status) covers the announcement: a broker restart sends it,
    # and callers wait for this client to come back rather than fail calls whose result is coming.
    # The store (storage.url) makes each call run once across the service's replicas.
    async with (
        MetricsServer.from_config(config.metrics) as probes,
        open_store(config.storage.resolved_url()) as store,
        Messager.from_config(config.messaging) as messager,
        ToolService(
            messager,
            tools,
            name,
            call_timeout_s=config.tools.call_timeout_s,
            max_concurrent_calls=config.tools.max_concurrent_calls,
            isolate_sync_tools=config.tools.isolate_sync_tools,
            max_memory_mb=config.tools.max_memory_mb,
            store=store,
        ) as service,
    ):
        # Ready: connected to the broker and taking calls.
        probes.ready_when(lambda: messager.is_connected and service.serving)
        print(f"serving {', '.join(service.tools)} as {name!r}; Ctrl-C stops", file=sys.stderr, flush=True)
        await wait_for_shutdown()
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ArgenticError as exc:
        print(f"argentic tools: {exc}", file=sys.stderr)
        return 1
    if args.mcp or args.mcp_url:
        if args.module:
            print("argentic tools: --module and --mcp/--mcp-url exclude each other", file=sys.stderr)
            return 2
        try:
            # An MCP server's tools are a service of their own, not replicas of the module's.
            return asyncio.run(serve_mcp(config, args.mcp, args.mcp_url, args.name or "mcp", args.only))
        except ArgenticError as exc:
            print(f"argentic tools: {exc}", file=sys.stderr)
            return 1
    module = args.module or config.tools.module
    if not module:
        print("argentic tools: name a module with --module (or set tools.module)", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(config, module, args.name or config.tools.service_name, args.only))
    except (ArgenticError, ImportError, FileNotFoundError) as exc:
        print(f"argentic tools: {exc}", file=sys.stderr)
        return 1
