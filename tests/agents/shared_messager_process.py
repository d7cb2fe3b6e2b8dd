"""An agent and a tool service on ONE messager, in a process a test kills: no will of their own.

usage: python shared_messager_process.py BROKER_PORT NAMESPACE CLIENT_ID ROLE SERVICE
"""

from __future__ import annotations

import asyncio
import sys

from agents_support import add

from argentic import Agent, Messager, ToolManager, ToolService
from argentic.llm import ScriptedLLM


async def main(port: int, namespace: str, client_id: str, role: str, service: str) -> None:
    messager = Messager("127.0.0.1", port, namespace=namespace, client_id=client_id, persistent=False)
    async with (
        messager,
        ToolService(messager, [add], service),
        ToolManager(messager) as tools,
        Agent(llm=ScriptedLLM(["ok"], repeat_last=True), messager=messager, tool_manager=tools, role=role),
    ):
        print("READY", flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    port, namespace, client_id, role, service = sys.argv[1:6]
    asyncio.run(main(int(port), namespace, client_id, role, service))
