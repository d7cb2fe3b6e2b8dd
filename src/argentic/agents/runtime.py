"""Running a long-lived service (agent, tool service, visual agent) until SIGINT or SIGTERM, on
backends that are started when none is running and stopped again on exit."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from argentic.config import ArgenticConfig
from argentic.llm import LLMFactory, LLMProvider
from argentic.messaging.embedded_broker import EmbeddedBroker, ensure_broker
from argentic.storage import ConversationRecords, open_store

if TYPE_CHECKING:
    from argentic.llm.local_server import LocalServers


async def wait_for_shutdown() -> None:
    """Return when the process gets SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


async def serve_until_shutdown(serving: Awaitable[object]) -> None:
    """Run ``serving`` (a server's serve-forever) until it ends or the process gets SIGINT or
    SIGTERM; then stop it. Its error, if it ended with one, is raised."""
    server = asyncio.ensure_future(serving)
    stopped = asyncio.ensure_future(wait_for_shutdown())
    try:
        await asyncio.wait({server, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (server, stopped):
            task.cancel()
        await asyncio.gather(server, stopped, return_exceptions=True)
    if not server.cancelled() and (error := server.exception()) is not None:
        raise error


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class Backends:
    """What a service runs on: the LLM provider, and what was started for it (None: already running)."""

    llm: LLMProvider
    broker: EmbeddedBroker | None
    #: The local model servers started for the endpoint (those of its servers that did not answer).
    server: LocalServers | None
    #: The conversations on the store ``storage.url`` names (shared by every agent that opens it).
    conversations: ConversationRecords


@contextlib.asynccontextmanager
async def backends(
    config: ArgenticConfig, *, start_llm: bool = False, progress: Callable[[str], None] | None = None
) -> AsyncIterator[Backends]:
    """The broker (the embedded one when ``messaging.embedded_broker`` asks and none answers), with
    ``start_llm`` a local vLLM server for each server of the configured endpoint that does not
    answer, the store of conversations (``storage.url``) and the provider, entered (the embedded
    engine is loaded).
    Whatever was started here is stopped on exit, the provider closed first, even when a later part
    fails to start or the start is cancelled.

    ``progress`` gets what was started and the lines a starting vLLM server prints (default:
    standard error)."""
    report = progress or _to_stderr
    async with contextlib.AsyncExitStack() as stack:
        broker = await ensure_broker(config.messaging)
        if broker is not None:
            stack.push_async_callback(broker.stop)
            where = f"{config.messaging.broker_address}:{config.messaging.port}"
            report(f"started the embedded MQTT broker on {where} (none answered there)")
        server = None
        if start_llm:
            from argentic.llm.local_server import local_server_for

            server = await local_server_for(config, progress=report)
            if server is not None:
                await stack.enter_async_context(server)
        # Entering makes the provider ready: the embedded engine loads here, before any question.
        llm = await stack.enter_async_context(LLMFactory.create(config))
        storage = config.storage
        store = await stack.enter_async_context(open_store(storage.resolved_url()))
        conversations = ConversationRecords(
            store, ttl_s=storage.conversation_ttl_s, lease_ttl_s=storage.lease_ttl_s
        )
        yield Backends(llm, broker, server, conversations)
