"""``argentic gateway``: every role online on the broker as an A2A agent over HTTP
(``/agents/{role}/``), and a live view of the team at ``/``."""

from __future__ import annotations

import argparse
import asyncio
import sys

from argentic.agents.runtime import serve_until_shutdown
from argentic.config import ArgenticConfig, load_config
from argentic.errors import ArgenticError
from argentic.messaging import Messager
from argentic.observability import tracing

HELP = "serve each role on the broker as an A2A agent over HTTP, with a live web view of the team"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: loopback)")
    parser.add_argument("--port", type=int, default=8080, help="the port to listen on (default: 8080)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="longest wait for a task's answer, seconds (default: 300)",
    )


async def serve(config: ArgenticConfig, args: argparse.Namespace) -> int:
    from argentic.gateway import Gateway

    # With tracing on, the A2A request's span (the a2a-sdk's) is the parent of the question's:
    # an A2A caller's trace goes on into the team.
    tracing.configure(config.tracing, "argentic-gateway")
    async with (
        Messager.from_config(config.messaging) as messager,
        Gateway(messager, host=args.host, port=args.port, timeout_s=args.timeout) as gateway,
    ):
        print(
            f"A2A gateway at {gateway.url}/agents/ROLE/ (live view at {gateway.url}/); Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
        await serve_until_shutdown(gateway.serve_forever())
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(serve(load_config(args.config), args))
    except ArgenticError as exc:
        print(f"argentic gateway: {exc}", file=sys.stderr)
        return 1
