"""``argentic broker``: run the embedded MQTT broker (amqtt) until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from argentic.config import load_config
from argentic.errors import ArgenticError

HELP = "run the embedded MQTT broker (amqtt, MQTT 3.1.1) on a loopback address until stopped"

logger = logging.getLogger("argentic.cli.broker")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default: messaging.broker_address, local only)")
    parser.add_argument("--port", type=int, help="port to listen on (default: messaging.port)")
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="NAME:PASSWORD",
        help="accept only these credentials (repeatable); default: any local client",
    )


async def _serve(host: str, port: int, users: dict[str, str]) -> None:
    from argentic.messaging.embedded_broker import EmbeddedBroker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with EmbeddedBroker(host, port, users=users):
        logger.info("serving MQTT on %s:%s; Ctrl-C to stop", host, port)
        await stop.wait()
    logger.info("broker stopped")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config).messaging
    host = args.host or config.broker_address
    if host in ("localhost", ""):
        host = "127.0.0.1"
    port = args.port or config.port
    users: dict[str, str] = {}
    for entry in args.user:
        name, sep, password = entry.partition(":")
        if not sep or not name:
            logger.error("--user expects NAME:PASSWORD, got %r", entry)
            return 2
        users[name] = password
    try:
        asyncio.run(_serve(host, port, users))
    except (OSError, ArgenticError) as exc:
        logger.error("cannot listen on %s:%s: %s", host, port, exc)
        return 1
    return 0
