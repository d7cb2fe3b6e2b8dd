"""``argentic agent``: an agent answering questions from MQTT until stopped."""

from __future__ import annotations

import argparse
import asyncio
import sys

from argentic.agents import Agent
from argentic.agents.runtime import backends, wait_for_shutdown
from argentic.config import ArgenticConfig, load_config
from argentic.errors import ArgenticError
from argentic.messaging import Messager
from argentic.observability import MetricsServer, tracing
from argentic.tools import ToolManager

HELP = "run an agent that answers questions published on MQTT"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-r", "--role", help="agent role (default: agent.role)")
    parser.add_argument("--system-prompt", help="default: agent.system_prompt")
    parser.add_argument("--tool-choice", help="first step: auto, required, none or a tool name")
    parser.add_argument("--followup-tool-choice", help="later steps: auto, required, none or a tool name")
    parser.add_argument(
        "--start-llm",
        action="store_true",
        help="start a local vLLM server (llm.server) when the configured endpoint does not answer",
    )


async def serve(config: ArgenticConfig, *, start_llm: bool = False) -> int:
    role = config.agent.role
    tracing.configure(config.tracing, "argentic-agent")
    # Every part is entered: whatever started is stopped, in reverse, on Ctrl-C, SIGTERM or an
    # error, including a part that failed half-way through its own start. The default will (the
    # client's status) makes the presence stale if the process dies, and tells requesters to send
    # again what this replica held.
    async with (
        MetricsServer.from_config(config.metrics) as probes,
        backends(config, start_llm=start_llm) as backend,
        Messager.from_config(config.messaging) as messager,
        ToolManager(messager, default_timeout_s=config.agent.tool_timeout_s, caller=role) as tools,
        Agent.from_config(
            config.agent,
            llm=backend.llm,
            messager=messager,
            tool_manager=tools,
            store=backend.conversations,
        ) as agent,
    ):
        # Ready: connected to the broker and taking questions.
        probes.ready_when(lambda: messager.is_connected and agent.serving)
        print(
            f"agent {role!r} answering {messager.topics.agent_questions(role)}; Ctrl-C stops",
            file=sys.stderr,
        )
        await wait_for_shutdown()
    return 0


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {}
    for key in ("role", "system_prompt", "tool_choice", "followup_tool_choice"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    try:
        config = load_config(args.config, overrides={"agent": overrides} if overrides else None)
        return asyncio.run(serve(config, start_llm=args.start_llm))
    except ArgenticError as exc:
        print(f"argentic agent: {exc}", file=sys.stderr)
        return 1
