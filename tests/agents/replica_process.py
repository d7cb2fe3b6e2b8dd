"""A replica of role and tool service that a test kills with SIGKILL: a stable client id and a
persistent session, so the broker keeps handing its share of the requests to the dead session.

usage: python replica_process.py BROKER_PORT NAMESPACE CLIENT_ID ROLE SERVICE
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from agents_support import add

from argentic import Agent, Messager, ToolManager, ToolService
from argentic.llm import FunctionLLM


async def slow_answer(*_: Any) -> str:
    await asyncio.sleep(3600)  # holds every question it takes until it is killed
    return "never"


async def main(port: int, namespace: str, client_id: str, role: str, service: str) -> None:
    # A short session, as docs/security.md advises for replicas: once this process is killed the
    # broker soon stops handing it requests.
    messager = Messager(
        "127.0.0.1", port, namespace=namespace, client_id=client_id, persistent=True, session_expiry_s=5
    )
    async with (
        messager,
        ToolService(messager, [add], service),
        ToolManager(messager) as tools,
        Agent(llm=FunctionLLM(slow_answer), messager=messager, tool_manager=tools, role=role),
    ):
        print("READY", flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    port, namespace, client_id, role, service = sys.argv[1:6]
    asyncio.run(main(int(port), namespace, client_id, role, service))
