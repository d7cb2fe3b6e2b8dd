"""What calling an MCP tool through argentic costs, against the MCP SDK's client calling it directly.

One small MCP server (this script with ``--serve-mcp``: an ``add`` tool, written with the SDK) is
called two ways, alternating in rounds, in one run:

- **direct**: the SDK's ``Client`` starts it over stdio and calls ``add``;
- **argentic**: ``argentic tools --mcp "python bench/mcp_ratio.py --serve-mcp"`` serves it on
  mosquitto, and an agent (a scripted model that calls ``add`` once per question) calls it through its
  ``ToolManager``; the round trip is timed around each of the agent's tool calls (MQTT request,
  the tool service, the MCP call, the reply).

``mcp_ratio`` is argentic's median round trip over the direct one (goal <= 1.5).

(Not named ``mcp.py``: run as a script, that name would hide the ``mcp`` package.)

usage: uv run python bench/mcp_ratio.py [--calls 300] [--rounds 6] [--quick]
Last line: {"mcp_ratio": ..., "direct_p50_ms": ..., "argentic_p50_ms": ..., ...}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters
from mcp.server.mcpserver import MCPServer

from argentic import Agent, ToolManager
from argentic.llm import ChatRequest, FunctionLLM, tool_call
from argentic.messaging import Messager
from argentic.protocol import ToolResult
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.processes import command_env, stop_process

SERVE = [sys.executable, str(Path(__file__).resolve()), "--serve-mcp"]


def serve_mcp() -> None:
    """The MCP server both ways call, over stdio."""
    server = MCPServer("bench")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    server.run()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def start_service(broker: MosquittoBroker) -> subprocess.Popen[bytes]:
    """``argentic tools --mcp`` serving the MCP server on ``broker``."""
    env = command_env(broker.port, "bench", broker.host)
    command = [sys.executable, "-m", "argentic.cli.main", "tools", "--mcp", shlex.join(SERVE)]
    return subprocess.Popen([*command, "--name", "bench"], env=env)


class TimedTools(ToolManager):
    """The agent's tool manager, timing each call it makes."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.timings: list[float] = []

    async def call(self, name: str, arguments: dict[str, Any], **options: Any) -> ToolResult:
        started = time.perf_counter()
        result = await super().call(name, arguments, **options)
        self.timings.append(time.perf_counter() - started)
        if not result.ok:
            raise SystemExit(f"the call of {name} failed: {result.error}")
        return result


def model(request: ChatRequest) -> Any:
    """Calls ``add`` once per question, then answers."""
    if request.messages[-1].role == "tool":
        return "done"
    return tool_call("add", {"a": 2, "b": 40})


async def bench(broker: MosquittoBroker, calls: int, rounds: int) -> dict[str, Any]:
    per_round = max(1, calls // rounds)
    direct: list[float] = []
    async with (
        Client(StdioServerParameters(command=SERVE[0], args=SERVE[1:]), cache=None) as client,
        Messager(broker.host, broker.port, namespace="bench", persistent=False) as bus,
        TimedTools(bus) as tools,
        Agent(llm=FunctionLLM(model), messager=bus, tool_manager=tools, role="bench") as agent,
    ):
        await tools.wait_for_tools("add", timeout=120)

        async def direct_round() -> None:
            for _ in range(per_round):
                started = time.perf_counter()
                result = await client.call_tool("add", {"a": 2, "b": 40})
                direct.append(time.perf_counter() - started)
                if result.is_error:
                    raise SystemExit(f"the direct call failed: {result.content}")

        async def argentic_round() -> None:
            for _ in range(per_round):
                await agent.answer("2 + 40?")

        await direct_round()  # warm-up both ways
        await argentic_round()
        direct.clear()
        tools.timings.clear()
        for number in range(rounds):
            # A B B A ...: each way goes first as often as the other.
            ways = [direct_round, argentic_round]
            for way in ways if number % 2 == 0 else reversed(ways):
                await way()
            print(
                f"round {number + 1}: direct p50 {statistics.median(direct) * 1000:.2f} ms, "
                f"argentic p50 {statistics.median(tools.timings) * 1000:.2f} ms",
                file=sys.stderr,
                flush=True,
            )
    through = tools.timings
    return {
        "mcp_ratio": round(statistics.median(through) / statistics.median(direct), 3),
        "direct_p50_ms": round(percentile(direct, 0.5) * 1000, 3),
        "direct_p99_ms": round(percentile(direct, 0.99) * 1000, 3),
        "argentic_p50_ms": round(percentile(through, 0.5) * 1000, 3),
        "argentic_p99_ms": round(percentile(through, 0.99) * 1000, 3),
        "calls_each_way": len(direct),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="tool calls each way")
    parser.add_argument("--rounds", type=int, default=6, help="even, so both ways lead equally")
    parser.add_argument("--quick", action="store_true", help="a check that it runs: a few calls")
    parser.add_argument("--serve-mcp", action="store_true", help="(internal) be the MCP server, on stdio")
    args = parser.parse_args()
    if args.serve_mcp:
        serve_mcp()
        return
    if args.quick:
        parser.set_defaults(calls=8, rounds=2)
        args = parser.parse_args()
    with MosquittoBroker(persistence=False) as broker:
        service = start_service(broker)
        try:
            result = asyncio.run(bench(broker, args.calls, args.rounds))
        finally:
            stop_process(service)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
