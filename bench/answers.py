"""Answer quality on the CPU model: 20 varied arithmetic and lookup questions through an agent with
tools, answered in free text and as a structured answer, on one mosquitto started here.

The agent (its model's profile as it ships: a required, guided tool call, then the answer with the
results restated) asks the real vLLM server; its tools run in a tool service over the broker. A free
answer is right when it holds the expected value; a structured one when its ``value`` field is it.

    uv run python bench/answers.py [--vllm-url http://127.0.0.1:8000/v1] [--quick]

Figures: ``right_free`` and ``right_structured`` (fractions; goals >= 0.8 and >= 0.95),
``markup_answers`` (answers holding tool-call markup; goal 0), ``errors`` (questions with no answer).
Without ``--vllm-url`` (or ``$ARGENTIC_TEST_VLLM_URL``) the CPU server is started (and stopped). The
last line printed is JSON with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/ as a package


from examples.tools import EXPRESSION, evaluate

from argentic import Agent, AgentClient, LLMFactory, Messager, ToolManager, ToolService, tool
from argentic.errors import ArgenticError
from argentic.llm.markup import tool_markup
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.vllm_server import cpu_vllm_server

NEEDS_VLLM = True
MAX_TOKENS = 64

STOCK = {"bolts": 4312, "nuts": 977, "washers": 15830, "hinges": 268, "brackets": 5041}
CAPITALS = {"france": "Paris", "japan": "Tokyo", "kenya": "Nairobi", "peru": "Lima", "norway": "Oslo"}


# Arguments shaped by patterns, with no examples in their descriptions (a small model copies an
# example into the call, and writes digits into a bare string).
@tool
async def calculate(expression: str = Field(pattern=EXPRESSION)) -> int | float:
    """Evaluate an arithmetic expression exactly and return its value."""
    return evaluate(expression)


@tool
async def stock_count(item: str = Field(pattern=r"^[A-Za-z][A-Za-z ]{0,29}$")) -> int | str:
    """How many units of an item the warehouse holds."""
    return STOCK.get(item.strip().lower(), f"no item called {item!r}")


@tool
async def capital_of(country: str = Field(pattern=r"^[A-Za-z][A-Za-z .-]{0,29}$")) -> str:
    """The capital city of a country."""
    return CAPITALS.get(country.strip().lower(), f"no country called {country!r}")


@dataclass(frozen=True)
class Case:
    question: str
    expected: str

    @property
    def numeric(self) -> bool:
        return self.expected.isdigit()


CASES = [
    Case("What is 1234 + 5678?", "6912"),
    Case("What is 2 + 2?", "4"),
    Case("What is 1234 * 5678?", "7006652"),
    Case("What is 987 - 123?", "864"),
    Case("What is 45 * 12?", "540"),
    Case("What is 250 * 4?", "1000"),
    Case("What is 7 * 7?", "49"),
    Case("What is 56789 + 43211?", "100000"),
    Case("What is 17 * 23?", "391"),
    Case("What is 9999 - 1?", "9998"),
    Case("How many bolts does the warehouse hold?", "4312"),
    Case("How many nuts are in stock?", "977"),
    Case("How many washers does the warehouse have?", "15830"),
    Case("How many hinges are in stock?", "268"),
    Case("How many brackets does the warehouse hold?", "5041"),
    Case("What is the capital of France?", "Paris"),
    Case("What is the capital of Japan?", "Tokyo"),
    Case("What is the capital of Kenya?", "Nairobi"),
    Case("What is the capital of Peru?", "Lima"),
    Case("What is the capital of Norway?", "Oslo"),
]


class Number(BaseModel):
    value: int = Field(ge=-(10**15), le=10**15, description="the number that answers the question")


class Name(BaseModel):
    value: str = Field(max_length=40, description="the name that answers the question")


@dataclass
class Outcome:
    case: Case
    free: str | None
    structured: Any
    error: str | None = None

    @property
    def right_free(self) -> bool:
        return self.free is not None and self.case.expected.lower() in self.free.replace(",", "").lower()

    @property
    def right_structured(self) -> bool:
        if self.structured is None:
            return False
        return str(self.structured.value).strip().lower() == self.case.expected.lower()


async def ask(client: AgentClient, case: Case) -> Outcome:
    output: type[Number] | type[Name] = Number if case.numeric else Name
    free: str | None = None
    structured: Any = None
    errors = []
    for kind in ("free", "structured"):
        try:
            if kind == "free":
                free = await client.ask(case.question, timeout=600)
            else:
                structured = await client.ask(case.question, output=output, timeout=600)
        except ArgenticError as exc:
            errors.append(f"{kind}: {exc}")
    return Outcome(case, free, structured, "; ".join(errors) or None)


async def run(url: str, cases: list[Case]) -> list[Outcome]:
    with MosquittoBroker() as broker:
        async with (
            Messager(broker.host, broker.port, namespace="answers", persistent=False) as bus,
            ToolService(bus, [calculate, stock_count, capital_of], "answer-tools"),
            ToolManager(bus) as tools,
            LLMFactory.create(
                {"provider": "vllm", "vllm_base_url": url, "temperature": 0, "max_tokens": MAX_TOKENS}
            ) as llm,
            Agent(llm=llm, messager=bus, tool_manager=tools, role="answers"),
        ):
            await tools.wait_for_tools("calculate", "stock_count", "capital_of")
            client = AgentClient(bus, "answers")
            return list(await asyncio.gather(*(ask(client, case) for case in cases)))


def figures(outcomes: list[Outcome], seconds: float) -> dict[str, Any]:
    answers = [o.free for o in outcomes] + [
        getattr(o.structured, "value", None) for o in outcomes if isinstance(o.structured, Name)
    ]
    return {
        "questions": len(outcomes),
        "right_free": round(sum(o.right_free for o in outcomes) / len(outcomes), 3),
        "right_structured": round(sum(o.right_structured for o in outcomes) / len(outcomes), 3),
        "markup_answers": sum(1 for a in answers if tool_markup(a) is not None),
        "errors": sum(1 for o in outcomes if o.error),
        "seconds": round(seconds, 1),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    cases = CASES[:: len(CASES) // 2] if args.quick else CASES
    started = time.perf_counter()
    with cpu_vllm_server(base_url=args.vllm_url) as server:
        outcomes = await run(server.base_url, cases)
    for o in outcomes:
        marks = f"free {'ok ' if o.right_free else 'BAD'} structured {'ok ' if o.right_structured else 'BAD'}"
        error = f" ({o.error})" if o.error else ""
        print(f"{marks} {o.case.question!r}: {o.free!r} / {o.structured!r}{error}")
    return figures(outcomes, time.perf_counter() - started)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-url", default=os.environ.get("ARGENTIC_TEST_VLLM_URL"))
    parser.add_argument("--quick", action="store_true", help="2 questions: the same path, in seconds")
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result))
