"""Running one tool call: the one place a tool runs, for a tool service and for an agent's local
tools alike.

:func:`run_tool` validates the arguments, runs the tool under its timeout and always returns a
:class:`~argentic.protocol.ToolResult`: a failure (invalid arguments, the tool raised, too slow, a
result receivers could not parse) is a result with an error, never an exception, so an agent can
hand it to its model.
"""

from __future__ import annotations

import asyncio
import logging
import time

from argentic.errors import ToolArgumentsError, ToolExecutionError, ToolTimeoutError
from argentic.errors_wire import failed_result
from argentic.messaging.limits import check_value
from argentic.observability import metrics, tracing
from argentic.protocol import ToolCall, ToolResult
from argentic.tools.base import BaseTool
from argentic.tools.isolation import WorkerPool

log = logging.getLogger(__name__)


def call_timeout(item: BaseTool | None, default_s: float) -> float:
    """How long a call of ``item`` may run: the tool's own timeout, else ``default_s``."""
    return (item.call_timeout_s if item is not None else None) or default_s


async def run_tool(
    item: BaseTool,
    call: ToolCall,
    timeout_s: float,
    *,
    isolate: bool = False,
    max_memory_mb: int | None = None,
    workers: WorkerPool | None = None,
) -> ToolResult:
    """Run ``call`` with ``item`` within ``timeout_s`` (the call's own expiry shortens it)."""
    started = time.monotonic()
    attributes = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": call.tool,
        "gen_ai.tool.call.id": call.id,
        "gen_ai.tool.type": "function",
    }
    # A child of the caller's span when the call came over MQTT from a process that traces.
    with tracing.span(f"execute_tool {call.tool}", attributes, traceparent=call.traceparent) as current:
        result = await _run(item, call, timeout_s, isolate, max_memory_mb, workers)
        outcome = metrics.OK if result.ok or result.error is None else result.error.code
        if outcome != metrics.OK:
            tracing.set_attributes(current, {"error.type": outcome})
    metrics.tool_call_done(call.tool, outcome, time.monotonic() - started)
    return result


async def _run(
    item: BaseTool,
    call: ToolCall,
    timeout_s: float,
    isolate: bool,
    max_memory_mb: int | None,
    workers: WorkerPool | None,
) -> ToolResult:
    timeout = call_timeout(item, timeout_s)
    if call.expires_at is not None:
        timeout = min(timeout, max(call.expires_at - time.time(), 0.001))
    started = time.monotonic()
    try:
        # asyncio.timeout rather than wait_for: no task of its own for every call.
        async with asyncio.timeout(timeout):
            result = await item.invoke(
                call.arguments, isolate=isolate, max_memory_mb=max_memory_mb, workers=workers
            )
        # Receivers could not parse an integer of thousands of digits: say so instead.
        check_value(result, "the result")
    except ToolArgumentsError as exc:
        return failed_result(call.tool, exc, call.id, item.parameters())
    except ToolExecutionError as exc:  # a tool that says what failed (an MCP tool's error) says it as is
        log.warning("tool %s failed: %s", call.tool, exc)
        return failed_result(call.tool, exc, call.id)
    except TimeoutError:
        log.warning("tool %s timed out after %.1f s", call.tool, timeout)
        return failed_result(
            call.tool, ToolTimeoutError(f"tool {call.tool} did not finish within {timeout:g} s"), call.id
        )
    except Exception as exc:
        log.warning("tool %s raised %s: %s", call.tool, type(exc).__name__, exc)
        return failed_result(call.tool, ToolExecutionError(f"{type(exc).__name__}: {exc}"), call.id)
    log.debug("tool %s answered in %.1f ms", call.tool, (time.monotonic() - started) * 1000)
    return ToolResult(call_id=call.id, tool=call.tool, ok=True, result=result)
