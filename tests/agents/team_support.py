"""Scripted models and helpers for the team tests: every model decides by what it was asked."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from argentic.agents.client import AgentClient
from argentic.agents.team import Team
from argentic.config import ArgenticConfig
from argentic.llm import ChatMessage, ChatRequest, FunctionLLM
from argentic.llm.scripted import tool_call
from argentic.messaging import Messager
from argentic.protocol import TaskStatus

Reply = Any
Decide = Callable[[str, list[str]], Reply | Awaitable[Reply]]


def asked(messages: Sequence[ChatMessage]) -> str:
    users = [m for m in messages if m.role == "user"]
    return users[-1].text if users else ""


def results(messages: Sequence[ChatMessage]) -> list[str]:
    """The tool results of the current question (after its last user turn)."""
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    return [m.text for m in messages[last_user + 1 :] if m.role == "tool"]


def model(decide: Decide, name: str = "function") -> FunctionLLM:
    """A model that calls ``decide(question, tool_results)`` for each reply."""

    async def reply(request: ChatRequest) -> Reply:
        outcome = decide(asked(request.messages), results(request.messages))
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        return outcome

    return FunctionLLM(reply, model_name=name)


def asks(tool: str, question: str, *, then: str = "done") -> Decide:
    """Calls ``tool`` once with ``question``, then answers ``then: <the results>``."""

    def decide(text: str, tool_results: list[str]) -> Reply:
        if not tool_results:
            return tool_call(tool, {"question": question})
        return f"{then}: " + " | ".join(tool_results)

    return decide


def asks_back(question: str) -> Decide:
    """Asks its asker ``question`` (``ask_back``), then answers ``reviewed <the input>``."""

    def decide(text: str, tool_results: list[str]) -> Reply:
        if not tool_results:
            return tool_call("ask_back", {"question": question})
        return "reviewed " + tool_results[0]

    return decide


def answers(prefix: str) -> Decide:
    return lambda text, _results: f"{prefix}: {text}"


def config(namespace: str, roles: dict[str, dict[str, Any]]) -> ArgenticConfig:
    """A team config: each role on an endpoint of its own name (so a test gives each its model)."""
    for name, role in roles.items():
        role.setdefault("llm", name)
    return ArgenticConfig.model_validate(
        {
            "messaging": {"namespace": namespace},
            "llm": {"provider": "scripted", "endpoints": {name: {} for name in roles}},
            "roles": roles,
        }
    )


def team(
    cfg: ArgenticConfig,
    messager: Messager,
    models: dict[str, FunctionLLM],
    roles: Sequence[str] | None = None,
) -> Team:
    return Team(cfg, messager=messager, llm=FunctionLLM(lambda *_: "default"), endpoints=models, roles=roles)


async def ask_following(
    client: AgentClient, text: str, **options: Any
) -> tuple[Any, list[TaskStatus], BaseException | None]:
    """Ask, collecting the task statuses of the whole tree; (answer or None, statuses, error)."""
    statuses: list[TaskStatus] = []
    async with client.stream(text, **options) as run:
        async for event in run:
            if isinstance(event, TaskStatus):
                statuses.append(event)
    try:
        return await run.answer(), statuses, None
    except Exception as exc:
        return None, statuses, exc


def states(statuses: Sequence[TaskStatus], role: str) -> list[str]:
    return [s.state for s in statuses if s.role == role]


def member_process(port: int, namespace: str, role: str) -> subprocess.Popen[bytes]:
    """A team agent of ``role`` in a process of its own whose model never answers (to be killed)."""
    script = Path(__file__).resolve().parent / "team_member_process.py"
    return subprocess.Popen(
        [sys.executable, str(script), str(port), namespace, role], stdout=subprocess.PIPE, cwd=script.parent
    )
