"""One agent, one tool service, one question: everything over MQTT, thinking with vLLM.

    uv run python examples/single_agent_vllm.py ["your question"]

It reads ``config.yaml`` (or ``$ARGENTIC_CONFIG``), then:

1. uses the configured MQTT broker, or starts the embedded one when none listens locally;
2. uses the configured vLLM endpoint, or, when none answers, says so and starts a local server
   (``argentic serve``: with no ``llm.server.model`` that is the CPU model, built on first use);
3. starts a tool service with a calculator, and an agent that can call it;
4. publishes a question as an MQTT message (asking for a structured answer), prints the tool
   call as it happens and the answer.

With the small CPU model (a base model that rarely calls tools by itself) the agent is told to
call a tool first and to answer after it; with an instruction-tuned model (Gemma 3n on a GPU, say)
the policy in ``agent.tool_choice`` is used as configured.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from contextlib import AsyncExitStack
from pathlib import Path

from pydantic import BaseModel, Field

from argentic.agents import Agent
from argentic.agents.runtime import backends
from argentic.config import load_config
from argentic.llm.local import CPU_MODEL_NAME
from argentic.messaging import Messager
from argentic.protocol import Answer, ErrorReply, Message, Progress, Question, Topics
from argentic.tools import ToolManager, ToolService, tool_service_will
from argentic.tools.loader import import_module, tools_in

QUESTION = "What is 1234 * 5678? Use the calculator."


class Result(BaseModel):
    """The answer's shape: asking for one keeps a small model's answer short and usable."""

    # Bounded fields: a small model's unbounded number or text can run on to max_tokens.
    value: str = Field(max_length=32, description="the number that answers the question")
    sentence: str = Field(max_length=160, description="the answer in one sentence")


SERVICE = "example-tools"
EXAMPLE_TOOLS = Path(__file__).resolve().with_name("tools.py")


def say(text: str) -> None:
    print(text, flush=True)


async def main(question_text: str) -> int:
    config = load_config()
    topics = Topics(config.messaging.namespace)

    def progress(line: str) -> None:
        say(f"  [vllm] {line}")

    async with backends(config, start_llm=True, progress=progress) as backend, AsyncExitStack() as buses:
        if backend.broker is not None:
            address = f"{config.messaging.broker_address}:{config.messaging.port}"
            say(f"started the embedded MQTT broker on {address}")
        tool_bus, agent_bus, client = [
            await buses.enter_async_context(Messager.from_config(config.messaging, will=will))
            for will in (tool_service_will(topics, SERVICE), Agent.will(topics, config.agent.role), None)
        ]
        calculator = [t for t in tools_in(import_module(str(EXAMPLE_TOOLS))) if t.tool_name == "calculate"]
        service = ToolService(tool_bus, calculator, SERVICE, call_timeout_s=config.tools.call_timeout_s)
        await service.start()
        tools = ToolManager(agent_bus, default_timeout_s=config.agent.tool_timeout_s)
        await tools.async_init()
        await tools.wait_for_tools("calculate")

        model = await backend.llm.resolve_model()
        policy = {}
        if model == CPU_MODEL_NAME:
            # A small base model: make the first step a tool call and the next one the answer.
            policy = {"tool_choice": "required", "followup_tool_choice": "none"}
        agent = Agent.from_config(
            config.agent, llm=backend.llm, messager=agent_bus, tool_manager=tools, **policy
        )
        await agent.async_init()
        names = ", ".join(t.name for t in tools.definitions())
        say(f"model {model}; agent '{agent.role}' with tools: {names}")

        question = Question(text=question_text, output_schema=Result.model_json_schema())
        say(f"question: {question.text}")

        async def on_event(event: Message) -> None:
            if isinstance(event, Progress) and event.stage == "tool_call":
                say(f"tool call: {event.tool}({json.dumps(event.arguments)})")
            elif isinstance(event, Progress) and event.stage == "tool_result":
                say(f"tool result: {event.tool} -> {event.detail}")

        await client.subscribe(topics.agent_events(agent.role, question.id), on_event)
        wait = config.llm.timeout_s * config.agent.max_steps
        reply = await client.request(
            topics.agent_questions(agent.role), question, response_model=Answer, timeout=wait
        )
        await agent.stop()
        await service.stop()
        if isinstance(reply, ErrorReply):
            say(f"the agent could not answer: {reply.error.code}: {reply.error.message}")
            return 1
        for call in reply.tool_calls:
            outcome = json.dumps(call.result) if call.ok else call.error
            say(f"called {call.name}({json.dumps(call.arguments)}) -> {outcome}")
        say(f"answer: {json.dumps(reply.data)}")
        return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main(" ".join(sys.argv[1:]) or QUESTION)))
