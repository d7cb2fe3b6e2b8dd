"""An agent that calls the ``add`` tool (a scripted model), tracing to a file, until SIGTERM.

usage: python traced_agent_process.py BROKER_PORT NAMESPACE ROLE PROTOCOL SPANS_FILE
"""

from __future__ import annotations

import asyncio
import sys

from argentic import Agent, Messager, ToolManager
from argentic.agents.runtime import wait_for_shutdown
from argentic.config import TracingConfig
from argentic.llm import ChatRequest, FunctionLLM, tool_call
from argentic.llm.types import LLMToolCall
from argentic.observability import tracing


def think(request: ChatRequest) -> str | LLMToolCall:
    # Ask the tool first, then answer with its result.
    results = [m for m in request.messages if m.role == "tool"]
    return str(results[-1].text) if results else tool_call("add", {"a": 2, "b": 3})


async def main(port: int, namespace: str, role: str, protocol: str, spans: str) -> None:
    assert tracing.configure(TracingConfig(enabled=True, file=spans), "traced-agent")
    messager = Messager("127.0.0.1", port, namespace=namespace, persistent=False, protocol=protocol)
    async with (
        messager,
        ToolManager(messager) as tools,
        Agent(
            llm=FunctionLLM(think, model_name="scripted-model"),
            messager=messager,
            tool_manager=tools,
            role=role,
        ),
    ):
        await tools.wait_for_tools("add", timeout=30)
        print("READY", flush=True)
        await wait_for_shutdown()


if __name__ == "__main__":
    port, namespace, role, protocol, spans = sys.argv[1:6]
    asyncio.run(main(int(port), namespace, role, protocol, spans))
