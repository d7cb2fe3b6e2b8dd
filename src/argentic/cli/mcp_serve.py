"""``argentic mcp-serve``: every tool announced on the broker, as one MCP server (stdio, or
streamable HTTP with ``--http PORT``)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from argentic.agents.runtime import serve_until_shutdown
from argentic.config import ArgenticConfig, load_config
from argentic.errors import ArgenticError
from argentic.messaging import Messager
from argentic.tools import ToolManager

HELP = "serve every tool announced on the broker as one MCP server (stdio, or --http PORT)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on PORT, not stdio")
    parser.add_argument("--host", default="127.0.0.1", help="the address of --http (default: loopback)")
    parser.add_argument("--path", default="/mcp", help="the URL path of the MCP endpoint (default: /mcp)")
    parser.add_argument("--name", default="argentic", help="the server's name, as MCP clients see it")


async def serve(config: ArgenticConfig, args: argparse.Namespace) -> int:
    from argentic.tools.mcp_server import McpGateway

    async with (
        Messager.from_config(config.messaging) as messager,
        ToolManager(messager, default_timeout_s=config.tools.call_timeout_s) as tools,
        McpGateway(tools, name=args.name) as gateway,
    ):
        if args.http is not None:
            where = f"http://{args.host}:{args.http}{args.path}"
            print(f"MCP server at {where}; Ctrl-C stops", file=sys.stderr, flush=True)
            await serve_until_shutdown(gateway.serve_http(args.http, args.host, args.path))
        else:
            # Stdout is the MCP stream: everything else goes to stderr.
            await serve_until_shutdown(gateway.serve_stdio())
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(serve(load_config(args.config), args))
    except ArgenticError as exc:
        print(f"argentic mcp-serve: {exc}", file=sys.stderr)
        return 1
