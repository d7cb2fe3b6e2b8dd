"""Peer benchmark: argentic against the agent frameworks its users would pick instead, on one vLLM
server, in one run.

The same questions ("What is 17 * 23?" ...), each needing one call of the same tool
(``multiply(a: int, b: int) -> int``), go through three sides, all at once within a side:

- **argentic**: an ``Agent`` answering over MQTT (a mosquitto started here), its tool served by
  ``argentic tools`` in a process of its own and called over the broker, the questions sent with
  ``AgentClient``. ``tool_choice="required"`` then ``followup_tool_choice="none"``: one round of tool
  calls, then the answer asked with no tools (the 270M model's profile also repeats the tool's
  result in a last user note, a slightly longer prompt than the peers').
- **pydantic-ai**, in this process: ``OpenAIChatModel`` on the same server; ``model_settings`` is a
  callable giving ``tool_choice="required"`` on the first step and ``"none"`` after it (pydantic-ai
  refuses a static ``"required"``: it would never let the run end), and the tool's ``prepare``
  leaves it out of the requests after the first, so the answer is asked with no tools as above.
- **OpenAI Agents SDK**, in this process: ``OpenAIChatCompletionsModel`` with an ``AsyncOpenAI``
  client at the same server, ``ModelSettings(tool_choice="required")`` (``reset_tool_choice``, its
  default, drops it once the tool ran) and the function tool's ``is_enabled`` hiding it once it
  ran (an agent hook counts the run's tool calls in the run context), so the answer is asked with
  no tools as above (without that, the SDK asks with ``tool_choice`` unset, i.e. "auto", and the
  tool still offered). Tracing is disabled.

Every side: the same system prompt, ``max_tokens`` 48 (pydantic-ai sends it as
``max_completion_tokens``), ``temperature=0``, non-streamed requests and one client connection
pool per side. A warm-up pass of every side runs first (so all find their
prompts in vLLM's prefix cache); then each round runs every side once, the sides taking turns going
first, and each side keeps its fastest pass (other load on the machine comes and goes).

Figures per side: ``*_tasks_per_min`` (answered questions per minute of the pass: a question
answered means a non-empty final answer; one that raised or timed out counts as failed, shown as
``*_answered`` / ``*_failed``) and ``*_cpu_s_per_task`` (CPU seconds, user + system, of the
processes the side needs, over its pass, per question: this process for the peers; this process,
the tool service process and the mosquitto broker for argentic; the vLLM server, the same for all,
is left out). ``*_tool_calls`` and ``*_completion_tokens`` show the sides did the same work.
``ratio_to_best``: argentic's tasks per minute over the best peer's (goal >= 0.95).

    uv run python bench/peers.py [--tasks 64] [--rounds 2] [--vllm-url http://127.0.0.1:8000/v1]
    uv run python bench/peers.py --quick     # 4 questions, one round, no warm-up: checks it runs

Without ``--vllm-url`` (or ``$ARGENTIC_TEST_VLLM_URL``) the CPU server is started (and stopped).
The last line printed is JSON with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import agents as openai_agents
import openai
import psutil  # type: ignore[import-untyped]
import pydantic_ai
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from argentic.agents import Agent, AgentClient
from argentic.llm import LLMFactory, SamplingSettings
from argentic.messaging import Messager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.processes import command_env
from argentic.testing.vllm_server import cpu_vllm_server
from argentic.tools import ToolManager, tool

NEEDS_VLLM = True

MAX_TOKENS = 48
SYSTEM_PROMPT = "Answer with the multiply tool."
NAMESPACE = "peers"
ROLE = "calculator"
TASK_TIMEOUT_S = 900.0
START_TIMEOUT_S = 60.0
REPO = Path(__file__).resolve().parents[1]


async def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


# What ``argentic tools --module bench/peers.py`` serves (the peers take the plain function).
multiply_tool = tool(multiply)


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Outcome:
    """One question's result on one side."""

    answered: bool
    tool_calls: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Pass:
    """One side's pass over all the questions."""

    seconds: float
    cpu_s: float
    outcomes: list[Outcome]

    @property
    def answered(self) -> int:
        return sum(o.answered for o in self.outcomes)


Ask = Callable[[str], Awaitable[Outcome]]


@dataclass
class Side:
    name: str
    ask: Ask
    #: The processes whose CPU the side is charged with (this one first).
    processes: list[psutil.Process]


def openai_client(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=TASK_TIMEOUT_S)


# --- argentic ----------------------------------------------------------------------------------


def start_tool_service(broker: MosquittoBroker) -> subprocess.Popen[bytes]:
    """``argentic tools`` serving this file's multiply tool, as in production."""
    env = {
        **command_env(broker.port, NAMESPACE, broker.host),
        "ARGENTIC_LOGGING__LEVEL": "WARNING",
    }
    command = ["tools", "--module", str(Path(__file__).resolve()), "--tool", "multiply", "--name", "math"]
    return subprocess.Popen(
        [sys.executable, "-m", "argentic.cli.main", *command],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@contextlib.asynccontextmanager
async def argentic_side(
    broker: MosquittoBroker, base_url: str, model: str, tasks: int
) -> AsyncIterator[Side]:
    assert broker.process is not None
    service = start_tool_service(broker)
    try:
        async with contextlib.AsyncExitStack() as stack:
            agent_bus = await stack.enter_async_context(
                Messager(broker.host, broker.port, namespace=NAMESPACE, persistent=False)
            )
            client_bus = await stack.enter_async_context(
                Messager(broker.host, broker.port, namespace=NAMESPACE, persistent=False)
            )
            tools = await stack.enter_async_context(ToolManager(agent_bus))
            await tools.wait_for_tools("multiply", timeout=START_TIMEOUT_S)
            llm = await stack.enter_async_context(
                LLMFactory.create(
                    {
                        "provider": "vllm",
                        "vllm_base_url": base_url,
                        "vllm_model_name": model,
                        "max_tokens": MAX_TOKENS,
                        "temperature": 0,
                        "max_concurrency": tasks,
                        "timeout_s": TASK_TIMEOUT_S,
                    }
                )
            )
            await stack.enter_async_context(
                Agent(
                    llm=llm,
                    messager=agent_bus,
                    tool_manager=tools,
                    role=ROLE,
                    system_prompt=SYSTEM_PROMPT,
                    tool_choice="required",
                    followup_tool_choice="none",
                    settings=SamplingSettings(max_tokens=MAX_TOKENS, temperature=0),
                )
            )
            client = AgentClient(client_bus, ROLE)

            async def ask(question: str) -> Outcome:
                answer = await client.answer(question, timeout=TASK_TIMEOUT_S)
                return Outcome(
                    bool(answer.text.strip()), len(answer.tool_calls), answer.usage.completion_tokens
                )

            processes = [psutil.Process(), psutil.Process(service.pid), psutil.Process(broker.process.pid)]
            yield Side("argentic", ask, processes)
    finally:
        stop_process(service)


# --- pydantic-ai -------------------------------------------------------------------------------


def pydantic_ai_settings(ctx: pydantic_ai.RunContext[None]) -> pydantic_ai.ModelSettings:
    """A tool call on the first step, the answer after it."""
    first = ctx.run_step <= 1
    return pydantic_ai.ModelSettings(
        max_tokens=MAX_TOKENS, temperature=0, tool_choice="required" if first else "none"
    )


async def offered_first_step_only(
    ctx: pydantic_ai.RunContext[None], definition: pydantic_ai.ToolDefinition
) -> pydantic_ai.ToolDefinition | None:
    return definition if ctx.run_step <= 1 else None


@contextlib.asynccontextmanager
async def pydantic_ai_side(base_url: str, model: str) -> AsyncIterator[Side]:
    client = openai_client(base_url)
    agent = pydantic_ai.Agent(
        OpenAIChatModel(model, provider=OpenAIProvider(openai_client=client)),
        instructions=SYSTEM_PROMPT,
        tools=[pydantic_ai.Tool(multiply, prepare=offered_first_step_only)],
        model_settings=pydantic_ai_settings,
    )

    async def ask(question: str) -> Outcome:
        result = await agent.run(question)
        usage = result.usage
        return Outcome(bool(result.output.strip()), usage.tool_calls, usage.output_tokens)

    try:
        yield Side("pydantic_ai", ask, [psutil.Process()])
    finally:
        await client.close()


# --- OpenAI Agents SDK -------------------------------------------------------------------------


@dataclass
class ToolRounds:
    """One run's count of tool calls made (the Agents SDK run context)."""

    done: int = 0


class CountToolRounds(openai_agents.AgentHooks[ToolRounds]):
    async def on_tool_end(
        self,
        context: openai_agents.RunContextWrapper[ToolRounds],
        agent: openai_agents.Agent[ToolRounds],
        tool: openai_agents.Tool,
        result: object,
    ) -> None:
        context.context.done += 1


def until_a_tool_ran(
    ctx: openai_agents.RunContextWrapper[ToolRounds], agent: openai_agents.AgentBase
) -> bool:
    return ctx.context.done == 0


@contextlib.asynccontextmanager
async def agents_sdk_side(base_url: str, model: str) -> AsyncIterator[Side]:
    openai_agents.set_tracing_disabled(True)
    client = openai_client(base_url)
    agent = openai_agents.Agent[ToolRounds](
        name=ROLE,
        instructions=SYSTEM_PROMPT,
        model=openai_agents.OpenAIChatCompletionsModel(model=model, openai_client=client),
        model_settings=openai_agents.ModelSettings(
            max_tokens=MAX_TOKENS, temperature=0, tool_choice="required"
        ),
        tools=[openai_agents.function_tool(multiply, is_enabled=until_a_tool_ran)],
        hooks=CountToolRounds(),
    )

    async def ask(question: str) -> Outcome:
        result = await openai_agents.Runner.run(agent, question, context=ToolRounds(), max_turns=4)
        calls = sum(isinstance(item, openai_agents.ToolCallItem) for item in result.new_items)
        text = str(result.final_output or "")
        return Outcome(bool(text.strip()), calls, result.context_wrapper.usage.output_tokens)

    try:
        yield Side("agents_sdk", ask, [psutil.Process()])
    finally:
        await client.close()


# --- the passes --------------------------------------------------------------------------------


def cpu_seconds(processes: list[psutil.Process]) -> float:
    times = [p.cpu_times() for p in processes]
    return float(sum(t.user + t.system for t in times))


async def one_question(side: Side, question: str) -> Outcome:
    try:
        return await asyncio.wait_for(side.ask(question), TASK_TIMEOUT_S)
    except Exception as exc:  # a failed question is counted, not fatal
        log(f"{side.name}: {question!r} failed: {type(exc).__name__}: {str(exc)[:200]}")
        return Outcome(answered=False)


async def run_pass(side: Side, questions: list[str]) -> Pass:
    cpu_before = cpu_seconds(side.processes)
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(one_question(side, q) for q in questions))
    seconds = time.perf_counter() - started
    return Pass(seconds, cpu_seconds(side.processes) - cpu_before, list(outcomes))


def figures(name: str, best: Pass, tasks: int) -> dict[str, Any]:
    return {
        f"{name}_tasks_per_min": round(best.answered / best.seconds * 60, 1),
        f"{name}_cpu_s_per_task": round(best.cpu_s / tasks, 4),
        f"{name}_answered": best.answered,
        f"{name}_failed": tasks - best.answered,
        f"{name}_tool_calls": sum(o.tool_calls for o in best.outcomes),
        f"{name}_completion_tokens": sum(o.completion_tokens for o in best.outcomes),
    }


async def compare(
    broker: MosquittoBroker, base_url: str, model: str, tasks: int, rounds: int, warm_up: bool
) -> dict[str, Any]:
    questions = [f"What is {17 + i} * {23 + 2 * i}?" for i in range(tasks)]
    async with (
        argentic_side(broker, base_url, model, tasks) as argentic,
        pydantic_ai_side(base_url, model) as pydantic_side,
        agents_sdk_side(base_url, model) as sdk_side,
    ):
        sides = [argentic, pydantic_side, sdk_side]
        for side in sides if warm_up else []:
            log(f"warm-up: {tasks} questions through {side.name}")
            await run_pass(side, questions)
        passes: dict[str, list[Pass]] = {side.name: [] for side in sides}
        for number in range(rounds):
            turn = number % len(sides)
            for side in sides[turn:] + sides[:turn]:
                done = await run_pass(side, questions)
                passes[side.name].append(done)
                log(
                    f"round {number + 1}: {side.name} {done.seconds:.1f} s, {done.cpu_s:.2f} CPU s, "
                    f"{done.answered}/{tasks} answered"
                )
    result: dict[str, Any] = {}
    for name, runs in passes.items():
        result.update(figures(name, min(runs, key=lambda p: p.seconds), tasks))
    best_peer = max(result["pydantic_ai_tasks_per_min"], result["agents_sdk_tasks_per_min"])
    result["ratio_to_best"] = round(result["argentic_tasks_per_min"] / best_peer, 3) if best_peer else None
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with cpu_vllm_server(base_url=args.vllm_url) as server, MosquittoBroker(persistence=False) as broker:
        return await compare(
            broker, server.base_url, server.model, args.tasks, args.rounds, warm_up=not args.quick
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="measured passes of each side")
    parser.add_argument("--vllm-url", default=os.environ.get("ARGENTIC_TEST_VLLM_URL"))
    parser.add_argument("--quick", action="store_true", help="4 questions, one round, no warm-up")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.tasks, arguments.rounds = 4, 1
    print(json.dumps(asyncio.run(main(arguments))))
