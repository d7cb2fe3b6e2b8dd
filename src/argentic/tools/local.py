"""Tools an agent calls in its own process: ``Agent(tools=[add])``, no broker hop, no service.

Plain functions are made tools with :func:`~argentic.tools.tool` (their signature is the
argument model, their docstring the description); :class:`~argentic.tools.BaseTool` instances are
taken as they are. A call runs through :func:`~argentic.tools.execution.run_tool`, the same path a
:class:`~argentic.tools.ToolService` takes, so results and errors read the same either way.
Tools in other processes stay on the broker (:class:`~argentic.tools.ToolManager`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from argentic.errors import ArgumentError, UnknownToolError
from argentic.errors_wire import failed_result
from argentic.llm import ToolDefinition
from argentic.protocol import ToolCall, ToolResult
from argentic.tools.base import BaseTool, tool
from argentic.tools.execution import run_tool

#: What ``tools=`` takes: a tool, or a function made one.
ToolLike = BaseTool | Callable[..., Any]


class LocalTools:
    """A named set of in-process tools, called with a timeout and a bound on concurrent calls."""

    def __init__(
        self, tools: Iterable[ToolLike], *, call_timeout_s: float = 30.0, max_concurrent_calls: int = 32
    ) -> None:
        self.call_timeout_s = call_timeout_s
        self.tools: dict[str, BaseTool] = {}
        for item in tools:
            made = item if isinstance(item, BaseTool) else tool(item)
            if made.tool_name in self.tools:
                raise ArgumentError(f"two local tools are named {made.tool_name!r}")
            self.tools[made.tool_name] = made
        self._slots = asyncio.Semaphore(max_concurrent_calls)

    def __contains__(self, name: object) -> bool:
        return name in self.tools

    def __len__(self) -> int:
        return len(self.tools)

    def definitions(self) -> list[ToolDefinition]:
        """The tools as the LLM sees them."""
        return [
            ToolDefinition(name=t.tool_name, description=t.tool_description, parameters=t.parameters())
            for t in self.tools.values()
        ]

    async def call(
        self,
        name: str,
        arguments: dict[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the tool's own bound, as ToolManager.call
    ) -> ToolResult:
        """Run tool ``name``; always a result (an unknown tool or a failure is one with an error)."""
        item = self.tools.get(name)
        call = ToolCall(tool=name, arguments=arguments)
        if item is None:
            return failed_result(name, UnknownToolError(f"no local tool {name!r}"), call.id)
        async with self._slots:
            return await run_tool(item, call, self.call_timeout_s if timeout is None else timeout)
