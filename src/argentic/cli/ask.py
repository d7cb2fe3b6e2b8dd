"""``argentic ask``: publish a question to an agent and print its progress and answer."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from argentic.agents.client import AgentClient, AgentRun, describe_event
from argentic.config import ArgenticConfig, load_config
from argentic.errors import AgentReplyError, ArgenticError, RequestTimeoutError, UsageError
from argentic.messaging import Messager
from argentic.protocol import Progress, TaskStatus, Token

HELP = "ask an agent a question over MQTT and print the answer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", help="the question")
    parser.add_argument(
        "--task",
        metavar="QUESTION_ID",
        help="instead of asking: where that question's task is, and its answer once done "
        "(exit 0 completed, 1 failed/canceled/rejected, 4 not done yet)",
    )
    parser.add_argument("-r", "--role", help="agent role (default: agent.role)")
    parser.add_argument("--conversation", help="continue this conversation id")
    parser.add_argument("--stream", action="store_true", help="print the answer's tokens as they come")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the answer")
    parser.add_argument(
        "--deadline", type=float, help="seconds the whole task (with what it asks other agents) may take"
    )
    parser.add_argument("--json", action="store_true", help="print the whole answer message as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    parser.add_argument(
        "--output",
        type=output_schema,
        help="ask for a structured answer: a JSON schema, or fields such as 'value:int,sentence:str' "
        "(a small model answers a number best as an int field)",
    )


_FIELD_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean"}


def output_schema(text: str) -> dict[str, Any]:
    """A JSON schema from ``--output``: JSON as it is, or ``name:type`` fields joined by commas."""
    if text.lstrip().startswith("{"):
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"not a JSON schema: {exc}") from exc
        if not isinstance(schema, dict):
            raise argparse.ArgumentTypeError("the JSON schema must be an object")
        return schema
    properties: dict[str, Any] = {}
    for field in filter(None, (part.strip() for part in text.split(","))):
        name, _, kind = field.partition(":")
        if kind not in _FIELD_TYPES or not name:
            raise argparse.ArgumentTypeError(
                f"{field!r}: write fields as name:type with type one of {', '.join(_FIELD_TYPES)}"
            )
        # Bounded, so a small model cannot run on to max_tokens inside one field.
        bound = {"maxLength": 200} if kind == "str" else {}
        properties[name] = {"type": _FIELD_TYPES[kind], **bound}
    if not properties:
        raise argparse.ArgumentTypeError("no fields given")
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


async def _give_input(run: AgentRun, status: TaskStatus) -> None:
    """The agent asks back: read the answer from the terminal."""
    print(f"[{status.role}] asks: {status.text}", file=sys.stderr, flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)
    await run.give_input(status, line.strip() or "(no answer)")


async def look_up(config: ArgenticConfig, args: argparse.Namespace) -> int:
    """``--task ID``: the task's record, from the store the role's agents keep."""
    role = args.role or config.agent.role
    async with Messager.from_config(config.messaging) as messager:
        record = await AgentClient(messager, role, timeout_s=args.timeout).task(args.task)
    if args.json:
        print(record.model_dump_json(indent=2))
    else:
        print(f"[task] {describe_event(record.status)}", file=sys.stderr)
        if record.answer is not None:
            answer = record.answer
            print(answer.text if answer.data is None else json.dumps(answer.data, ensure_ascii=False))
    state = record.status.state
    return 0 if state == "completed" else 1 if state in ("failed", "canceled", "rejected") else 4


async def ask(config: ArgenticConfig, args: argparse.Namespace) -> int:
    if args.task:
        return await look_up(config, args)
    if not args.text:
        raise UsageError("give a question, or --task QUESTION_ID to look one up")
    role = args.role or config.agent.role
    async with Messager.from_config(config.messaging) as messager:
        client = AgentClient(messager, role, timeout_s=args.timeout)
        if not args.quiet and not await client.online():
            print(
                f"argentic ask: no agent with role {role!r} says it is online; the question waits up to "
                f"{args.timeout:g} s for one",
                file=sys.stderr,
                flush=True,
            )
        streamed = False
        async with client.stream(
            args.text,
            output=args.output,
            conversation_id=args.conversation,
            tokens=args.stream,
            deadline_s=args.deadline,
        ) as run:
            if not args.quiet:
                print(f"(question {run.question.id}: argentic ask --task looks it up)", file=sys.stderr)
            # Ctrl-C ends the run, which cancels the question: the agent stops working on it too.
            async for event in run:
                if isinstance(event, Token):
                    streamed = True
                    print(event.text, end="", flush=True)
                elif isinstance(event, Progress) and not args.quiet:
                    print(f"[{role}] {describe_event(event)}", file=sys.stderr, flush=True)
                elif isinstance(event, TaskStatus):
                    if not args.quiet:
                        print(f"[task] {describe_event(event)}", file=sys.stderr, flush=True)
                    mine = event.question_id == run.question.id
                    if mine and event.state == "input-required" and event.reply_to:
                        await _give_input(run, event)
        if streamed:
            print()
        try:
            answer = await run.answer()
        except AgentReplyError as exc:
            print(f"argentic ask: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(answer.model_dump_json(indent=2))
    else:
        for call in answer.tool_calls:
            outcome = json.dumps(call.result, ensure_ascii=False) if call.ok else call.error
            print(f"tool {call.name}({json.dumps(call.arguments, ensure_ascii=False)}) -> {outcome}")
        print(answer.text if answer.data is None else json.dumps(answer.data, ensure_ascii=False))
        print(f"(conversation {answer.conversation_id})", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(ask(load_config(args.config), args))
    except RequestTimeoutError:
        print(f"argentic ask: no answer within {args.timeout:g} s (is an agent running?)", file=sys.stderr)
        return 2
    except ArgenticError as exc:
        print(f"argentic ask: {exc}", file=sys.stderr)
        return 1
