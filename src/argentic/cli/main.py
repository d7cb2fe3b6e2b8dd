"""``argentic``: one entry point, one module per subcommand under ``argentic.cli``.

Each subcommand module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``;
modules are imported only when their command runs, so ``argentic --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

COMMANDS = {
    "broker": "argentic.cli.broker",
    "serve": "argentic.cli.serve",
    "tools": "argentic.cli.tools",
    "mcp-serve": "argentic.cli.mcp_serve",
    "gateway": "argentic.cli.gateway",
    "agent": "argentic.cli.agent",
    "team": "argentic.cli.team",
    "ask": "argentic.cli.ask",
    "watch": "argentic.cli.watch",
    "status": "argentic.cli.status",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="argentic", description="AI agents over MQTT, thinking with vLLM.")
    parser.add_argument("-c", "--config", help="config file (default: $ARGENTIC_CONFIG or ./config.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # a command whose module is not part of this build
        sub = commands.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def configured_level(config_file: str | None) -> int:
    """``logging.level`` of the config; INFO when it cannot be read (the command says why)."""
    from argentic.config import load_config
    from argentic.errors import ArgenticError

    try:
        return int(getattr(logging, load_config(config_file).logging.level))
    except ArgenticError:
        return logging.INFO


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else configured_level(args.config),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
