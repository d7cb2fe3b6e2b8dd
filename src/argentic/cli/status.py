"""``argentic status``: what runs on the bus: roles, tool services, model servers, tasks in flight.

It listens for ``--wait`` seconds (retained presences and announcements come at once, task
statuses as they happen) and prints a table, or one JSON object with ``--json``; ``--watch``
keeps listening and refreshes the table in place until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import TYPE_CHECKING

from argentic.agents.runtime import wait_for_shutdown
from argentic.config import ArgenticConfig, load_config
from argentic.errors import ArgenticError
from argentic.messaging import Messager
from argentic.observability.fleet import FleetStatus, FleetWatch

if TYPE_CHECKING:
    from rich.console import Group

HELP = "show the roles, tool services, model servers and tasks in flight (--watch, --json)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--watch", action="store_true", help="refresh the table in place until Ctrl-C")
    parser.add_argument(
        "--wait", type=float, default=2.0, help="seconds to listen before the first report (default 2)"
    )
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between refreshes with --watch (default 2)"
    )


def _number(value: float | None, digits: int = 1, scale: float = 1.0, unit: str = "") -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}{unit}"


def render(status: FleetStatus) -> Group:
    """The report as rich tables."""
    # rich is imported when a table is drawn: every `argentic` command imports this module.
    from rich.console import Group
    from rich.table import Table

    roles = Table(title=f"Roles ({status.namespace})", title_justify="left")
    for column in ("role", "online", "replicas", "model", "tools", "delegates", "description"):
        roles.add_column(column)
    for role in status.roles:
        card = role.card
        roles.add_row(
            role.role,
            "[green]yes[/]" if role.online else "[red]no[/]",
            str(role.replicas),
            (card.model or "-") if card else "-",
            ", ".join(card.tools) if card and card.tools else "-",
            ", ".join(card.delegates) if card and card.delegates else "-",
            card.description if card else "",
        )
    services = Table(title="Tool services", title_justify="left")
    for column in ("service", "online", "tools"):
        services.add_column(column)
    for service in status.tool_services:
        services.add_row(
            service.service_id, "[green]yes[/]" if service.online else "[red]no[/]", ", ".join(service.tools)
        )
    servers = Table(title="Model servers", title_justify="left")
    for column in ("endpoint", "url", "up", "model", "running", "waiting"):
        servers.add_column(column)
    for column in ("KV cache", "prefix hits", "tok/s"):
        servers.add_column(column)
    for server in status.model_servers:
        servers.add_row(
            server.endpoint,
            server.base_url,
            "[green]up[/]" if server.up else "[red]down[/]",
            server.model or "-",
            _number(server.running, 0),
            _number(server.waiting, 0),
            _number(server.kv_cache_usage, 1, 100, "%"),
            _number(server.prefix_cache_hit_rate, 1, 100, "%"),
            _number(server.tokens_per_s),
        )
    tasks = Table(title="Tasks in flight", title_justify="left")
    for column in ("role", "question", "state", "asked by", "age s"):
        tasks.add_column(column)
    for task in status.tasks:
        tasks.add_row(task.role, task.question_id, task.state, task.asked_by or "-", f"{task.age_s:.1f}")
    return Group(roles, services, servers, tasks)


async def show(
    config: ArgenticConfig, *, as_json: bool, watch: bool, wait_s: float, interval_s: float
) -> int:
    from rich.console import Console
    from rich.live import Live

    # A look leaves nothing behind: no session kept on the broker.
    async with (
        Messager.from_config(config.messaging, persistent=False) as messager,
        FleetWatch(messager, config.llm) as fleet,
    ):
        await asyncio.sleep(wait_s)
        if not watch:
            status = await fleet.report()
            if as_json:
                print(status.model_dump_json())
            else:
                Console().print(render(status))
            return 0
        stop = asyncio.ensure_future(wait_for_shutdown())
        try:
            with Live(render(await fleet.report()), console=Console(), auto_refresh=False) as live:
                while not stop.done():
                    await asyncio.wait({stop}, timeout=interval_s)
                    live.update(render(await fleet.report()), refresh=True)
        finally:
            stop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop
    return 0


def run(args: argparse.Namespace) -> int:
    if args.wait < 0 or args.interval <= 0:
        print("argentic status: --wait must be >= 0 and --interval > 0", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
        return asyncio.run(
            show(config, as_json=args.json, watch=args.watch, wait_s=args.wait, interval_s=args.interval)
        )
    except ArgenticError as exc:
        print(f"argentic status: {exc}", file=sys.stderr)
        return 1
