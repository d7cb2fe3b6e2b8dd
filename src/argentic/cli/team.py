"""``argentic team``: every role of the config (or some of them) as agents in one process."""

from __future__ import annotations

import argparse
import asyncio
import sys

from argentic.agents.runtime import backends, wait_for_shutdown
from argentic.agents.team import Team
from argentic.config import ArgenticConfig, load_config, team_roles
from argentic.errors import ArgenticError
from argentic.messaging import Messager
from argentic.observability import MetricsServer, tracing
from argentic.tools import ToolManager

HELP = "run the roles of the config (roles:, or the agent: section) as a team answering over MQTT"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--roles", help="comma-separated roles to run here (default: all)")
    parser.add_argument("--replicas", type=int, help="agents per role (default: roles.NAME.replicas)")
    parser.add_argument(
        "--start-llm",
        action="store_true",
        help="start a local vLLM server (llm.server) when the default endpoint does not answer",
    )


async def serve(
    config: ArgenticConfig, roles: list[str] | None, *, replicas: int | None = None, start_llm: bool = False
) -> int:
    tracing.configure(config.tracing, "argentic-team")
    async with (
        MetricsServer.from_config(config.metrics) as probes,
        backends(config, start_llm=start_llm) as backend,
        Messager.from_config(config.messaging) as messager,
        ToolManager(messager, default_timeout_s=config.tools.call_timeout_s) as tools,
        Team(
            config,
            messager=messager,
            llm=backend.llm,
            tool_manager=tools,
            roles=roles,
            replicas=replicas,
            store=backend.conversations,
        ) as team,
    ):
        # Ready: connected to the broker and every agent of the team taking questions.
        probes.ready_when(lambda: messager.is_connected and all(a.serving for a in team.agents))
        names = ", ".join(f"{role} x{sum(a.role == role for a in team.agents)}" for role in team.selected)
        print(f"team serving on {config.messaging.namespace}/agents: {names}; Ctrl-C stops", file=sys.stderr)
        await wait_for_shutdown()
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        roles = [r.strip() for r in args.roles.split(",") if r.strip()] if args.roles else None
        if roles is not None:
            known = team_roles(config)
            unknown = [r for r in roles if r not in known]
            if unknown:
                print(
                    f"argentic team: --roles: unknown role(s) {', '.join(unknown)} "
                    f"(roles: {', '.join(known)})",
                    file=sys.stderr,
                )
                return 2
        return asyncio.run(serve(config, roles, replicas=args.replicas, start_llm=args.start_llm))
    except ArgenticError as exc:
        print(f"argentic team: {exc}", file=sys.stderr)
        return 1
