"""A replica that calls a tool, gets its result and is killed before it answers: its model asks for
the tool, then, once it reads the result, says so and never replies.

usage: python resume_replica_process.py BROKER_PORT NAMESPACE ROLE STORE_URL
"""

from __future__ import annotations

import asyncio
import sys

from argentic import Agent, Messager, ToolManager
from argentic.llm import ChatRequest, FunctionLLM, LLMToolCall
from argentic.llm.scripted import tool_call
from argentic.storage import ConversationRecords, open_store

#: Seconds a claim or a conversation's lease outlives its dead holder.
LEASE_TTL_S = 1.5


async def call_then_hang(request: ChatRequest) -> str | LLMToolCall:
    if request.messages[-1].role != "tool":
        return tool_call("count", {})
    print("RESULT_SEEN", flush=True)
    await asyncio.sleep(3600)
    return "never"


async def main(port: int, namespace: str, role: str, url: str) -> None:
    messager = Messager("127.0.0.1", port, namespace=namespace, persistent=False)
    async with (
        messager,
        open_store(url) as store,
        ToolManager(messager) as tools,
        Agent(
            FunctionLLM(call_then_hang),
            messager,
            tools,
            role,
            store=ConversationRecords(store, lease_ttl_s=LEASE_TTL_S),
        ),
    ):
        print("READY", flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    port, namespace, role, url = sys.argv[1:5]
    asyncio.run(main(int(port), namespace, role, url))
