"""One agent, one tool service, one question, all over MQTT, thinking with vLLM.

    uv run python examples/single_agent_vllm.py ["your question"]

It uses the broker and the vLLM server of ``config.yaml`` and starts what does not answer: the
embedded broker, and a local vLLM server (with no ``llm.server.model``, a small CPU model that is
built on first use). What a model needs (a tool policy, say) comes from its profile.
"""

import asyncio
import json
import sys

from pydantic import BaseModel, Field
from tools import calculate  # examples/tools.py: a plain typed function with @tool

from argentic import (
    Agent,
    AgentClient,
    Messager,
    ToolManager,
    ToolService,
    backends,
    describe_event,
    load_config,
)


class Result(BaseModel):
    """The answer's shape: the server's grammar keeps a number field to digits."""

    value: int = Field(ge=-(10**15), le=10**15, description="the number that answers the question")
    sentence: str = Field(max_length=160, description="the answer in one sentence")


async def main(question: str) -> None:
    config = load_config()
    async with (
        backends(config, start_llm=True) as backend,
        Messager.from_config(config.messaging) as messager,
        ToolService(messager, [calculate], "example-tools"),
        ToolManager(messager) as tools,
        Agent.from_config(config.agent, llm=backend.llm, messager=messager, tool_manager=tools) as agent,
    ):
        await tools.wait_for_tools("calculate")
        print(f"model {await backend.llm.resolve_model()}; agent {agent.role!r}; question: {question}")
        async with AgentClient(messager, agent.role).stream(question, output=Result) as run:
            async for event in run:
                print(f"  {describe_event(event)}")
        for call in (await run.answer()).tool_calls:
            print(f"called {call.name}({json.dumps(call.arguments)}) -> {json.dumps(call.result)}")
        print(f"answer: {(await run.query()).model_dump_json()}")


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "What is 1234 * 5678? Use the calculator."))
