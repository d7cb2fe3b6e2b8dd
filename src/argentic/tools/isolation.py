"""Running a sync tool in a process of its own, so that it can be cut off.

A thread cannot be stopped, and a sync tool that computes (``9**999**999``) holds the GIL: the
whole service stops answering, misses its keepalive and loses the broker. An isolated call runs in
a child forked for that call: the event loop only waits for the child's pipe, the call's timeout
kills the child, and an address-space limit turns a memory hog into a ``MemoryError`` in the child
alone. Forking (rather than spawning) starts the child in milliseconds with everything already
imported, closures included; the child runs only the tool and never touches the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import resource
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from pydantic_core import to_jsonable_python

from argentic.errors import ToolExecutionError
from argentic.messaging.limits import check_value

_FORK = multiprocessing.get_context("fork")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _address_space() -> int:
    """Bytes of virtual memory this process has mapped now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * PAGE


def _child(
    fn: Callable[..., Any], kwargs: dict[str, Any], max_memory_mb: int | None, out: Connection
) -> None:
    if max_memory_mb is not None:
        with contextlib.suppress(OSError, ValueError):
            limit = _address_space() + max_memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        result = to_jsonable_python(fn(**kwargs))
        check_value(result, "the result")
        out.send(("ok", result))
    except BaseException as exc:  # everything goes back to the parent as the call's error
        out.send(("error", f"{type(exc).__name__}: {exc}"[:2000]))
    finally:
        out.close()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def call_isolated(
    fn: Callable[..., Any], kwargs: dict[str, Any], *, max_memory_mb: int | None = None
) -> Any:
    """``fn(**kwargs)`` in a child process, JSON-ready. Cancelling (the caller's timeout) kills the
    child; a failure in the child raises :class:`ToolError` naming it."""
    receiving, sending = _FORK.Pipe(duplex=False)
    process = _FORK.Process(target=_child, args=(fn, kwargs, max_memory_mb, sending), daemon=True)
    process.start()
    sending.close()  # the child holds its end: end of file here means the child is gone
    loop = asyncio.get_running_loop()
    try:
        readable: asyncio.Future[None] = loop.create_future()
        fd = receiving.fileno()
        loop.add_reader(fd, _settle, readable)
        try:
            await readable
        finally:
            loop.remove_reader(fd)
        try:
            # The child writes its whole result and exits; reading it can wait a moment.
            status, value = await asyncio.to_thread(receiving.recv)
        except EOFError:
            await asyncio.to_thread(process.join, 5)
            raise ToolExecutionError(
                f"the tool's process ended without a result (exit code {process.exitcode})"
            ) from None
    finally:
        receiving.close()
        if process.is_alive():
            process.kill()
        # Reap the child off the loop (a killed child exits at once).
        await asyncio.shield(asyncio.to_thread(process.join, 5))
    if status != "ok":
        raise ToolExecutionError(value)
    return value
