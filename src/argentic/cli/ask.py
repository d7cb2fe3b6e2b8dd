"""``argentic ask``: publish a question to an agent and print its progress and answer."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from argentic.agents.client import describe_event
from argentic.config import ArgenticConfig, load_config
from argentic.errors import ArgenticError, RequestTimeoutError
from argentic.messaging import Messager
from argentic.protocol import (
    Answer,
    Cancel,
    ErrorReply,
    Message,
    Presence,
    Progress,
    Question,
    TaskInput,
    TaskStatus,
    Token,
)

HELP = "ask an agent a question over MQTT and print the answer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="the question")
    parser.add_argument("-r", "--role", help="agent role (default: agent.role)")
    parser.add_argument("--conversation", help="continue this conversation id")
    parser.add_argument("--stream", action="store_true", help="print the answer's tokens as they come")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the answer")
    parser.add_argument(
        "--deadline", type=float, help="seconds the whole task (with what it asks other agents) may take"
    )
    parser.add_argument("--json", action="store_true", help="print the whole answer message as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def _describe(event: Progress) -> str:
    parts: list[str] = [event.stage]
    if event.tool:
        parts.append(event.tool)
    if event.arguments is not None:
        parts.append(json.dumps(event.arguments, ensure_ascii=False))
    if event.detail:
        parts.append(f"({event.detail[:200]})")
    return " ".join(parts)


async def _online(messager: Messager, role: str, wait_s: float = 1.0) -> bool:
    """Whether the role's retained presence says online (it arrives at once when there is one)."""
    seen: asyncio.Queue[Presence] = asyncio.Queue(maxsize=8)

    async def on_presence(presence: Presence) -> None:
        if not seen.full():
            seen.put_nowait(presence)

    subscription = await messager.subscribe(messager.topics.agent_status(role), on_presence, model=Presence)
    try:
        return (await asyncio.wait_for(seen.get(), wait_s)).online
    except TimeoutError:
        return False
    finally:
        await messager.unsubscribe(subscription)


async def _give_input(messager: Messager, status: TaskStatus) -> None:
    """The agent asks back: read the answer from the terminal."""
    print(f"[{status.role}] asks: {status.text}", file=sys.stderr, flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)
    text = line.strip() or "(no answer)"
    await messager.reply(status, TaskInput(question_id=status.question_id, text=text))


async def ask(config: ArgenticConfig, args: argparse.Namespace) -> int:
    role = args.role or config.agent.role
    deadline = None if args.deadline is None else time.time() + args.deadline
    question = Question(
        text=args.text, conversation_id=args.conversation, stream=args.stream, deadline=deadline
    )
    async with Messager.from_config(config.messaging) as messager:
        streamed = False

        async def on_event(event: Message) -> None:
            nonlocal streamed
            if isinstance(event, Token) and args.stream:
                streamed = True
                print(event.text, end="", flush=True)
            elif isinstance(event, Progress) and not args.quiet:
                print(f"[{role}] {_describe(event)}", file=sys.stderr, flush=True)
            elif isinstance(event, TaskStatus):
                if not args.quiet:
                    print(f"[task] {describe_event(event)}", file=sys.stderr, flush=True)
                if event.state == "input-required" and event.reply_to and event.question_id == question.id:
                    await _give_input(messager, event)

        await messager.subscribe(messager.topics.agent_events(role, question.id), on_event)
        if not args.quiet and not await _online(messager, role):
            print(
                f"argentic ask: no agent with role {role!r} says it is online; the question waits up to "
                f"{args.timeout:g} s for one",
                file=sys.stderr,
                flush=True,
            )
        try:
            reply = await messager.request(
                messager.topics.agent_questions(role), question, response_model=Answer, timeout=args.timeout
            )
        except asyncio.CancelledError:
            # Ctrl-C: the agent stops working on it too.
            cancel = Cancel(question_id=question.id, reason="the asker stopped waiting")
            await asyncio.wait_for(messager.publish(messager.topics.agent_cancel(role), cancel), 5)
            raise
    if streamed:
        print()
    if isinstance(reply, ErrorReply):
        print(f"argentic ask: {reply.error.code}: {reply.error.message}", file=sys.stderr)
        return 1
    if args.json:
        print(reply.model_dump_json(indent=2))
    else:
        for call in reply.tool_calls:
            outcome = json.dumps(call.result, ensure_ascii=False) if call.ok else call.error
            print(f"tool {call.name}({json.dumps(call.arguments, ensure_ascii=False)}) -> {outcome}")
        print(reply.text if reply.data is None else json.dumps(reply.data, ensure_ascii=False))
        print(f"(conversation {reply.conversation_id})", file=sys.stderr)
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
