"""One team agent in a process of its own, whose model never answers: a test kills it mid-task.

usage: python team_member_process.py BROKER_PORT NAMESPACE ROLE
"""

from __future__ import annotations

import asyncio
import sys

from argentic import Messager
from argentic.agents.team import TeamAgent
from argentic.llm import ChatRequest, FunctionLLM


async def never(request: ChatRequest) -> str:
    await asyncio.sleep(3600)
    return "late"


async def main(port: int, namespace: str, role: str) -> None:
    messager = Messager("127.0.0.1", port, namespace=namespace, persistent=False)
    async with messager, TeamAgent(FunctionLLM(never), messager, role=role):
        print("READY", flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    port, namespace, role = sys.argv[1:4]
    asyncio.run(main(int(port), namespace, role))
