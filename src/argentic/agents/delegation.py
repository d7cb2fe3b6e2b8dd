"""Roles as tools: an agent asks another role over MQTT and reads its answer as a tool result.

For each role it may ask, the model sees a tool ``ask_<role>`` described by that role's
description. The call becomes a :class:`~argentic.protocol.Question` to the role (any replica
takes it) that carries the chain of askers, the first question's id and its deadline; the answer,
or the error reply, comes back as the tool's result. Meanwhile:

- the sub-task's states (and those of the tasks it spawned) are republished on the asking task's
  events topic, so the first question's events show the whole tree;
- an ``input-required`` status of the sub-task is answered by the asking agent's model;
- when the asking task is cancelled (a ``cancel`` message, its deadline, its agent stopping), a
  ``cancel`` goes to the sub-task too;
- when the client working on the sub-task is reported gone (its last will), the question is sent
  again for another replica of the role to take over (with a store, from the last step the dead
  one recorded); when none is left, the call ends at once with an ``unavailable`` error rather
  than waiting for an answer that cannot come.

A supervisor (``supervise: true``) gets one ``assign`` tool instead, which asks several roles at
once, in parallel, and returns their answers together. An agent with the ``ask_back`` option (any
agent: it is in :class:`~argentic.config.AgentOptions`) gets an ``ask_back`` tool that puts its
task in ``input-required`` until its asker answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from argentic.agents.client import AgentClient, AgentRun
from argentic.agents.loop import NullEvents
from argentic.agents.tasks import AgentTask, TaskBoard, running_task, task_status
from argentic.deprecation import deprecated
from argentic.errors import (
    AgentReplyError,
    ArgenticError,
    NoAgentOnlineError,
    RequestTimeoutError,
    ToolArgumentsError,
    ToolExecutionError,
    ToolTimeoutError,
)
from argentic.errors_wire import error_from, error_info
from argentic.llm import ChatMessage, ChatRequest, ChatResponse, ToolDefinition
from argentic.messaging import Messager
from argentic.protocol import (
    ErrorReply,
    Presence,
    Question,
    TaskInput,
    TaskStatus,
    ToolResult,
)

log = logging.getLogger(__name__)

#: Longest question text the model may write into a delegation tool (keeps small models short).
MAX_QUESTION_CHARS = 2000
#: Seconds a delegation waits past the deadline for the sub-task's own deadline error.
DEADLINE_GRACE_S = 2.0
#: How long a role's retained presence is awaited when it has not been seen yet.
PRESENCE_WAIT_S = 1.0
#: Seconds to wait, once the replica working on a sub-task is gone, for another one to say it serves.
REPLACEMENT_WAIT_S = 3.0


def tool_name(role: str) -> str:
    """The tool that asks ``role`` (tool names allow letters, digits, ``_`` and ``-``)."""
    return "ask_" + re.sub(r"[^A-Za-z0-9_-]", "_", role)


def _failure(name: str, error: BaseException, message: str | None = None) -> ToolResult:
    """A failed result of tool ``name``: ``error``'s wire code, its message unless another is given."""
    info = error_info(error)
    if message is not None:
        info = info.model_copy(update={"message": message})
    return ToolResult(call_id="", tool=name, ok=False, error=info)


class Directory:
    """The roles' retained presences (agent cards) as one messager sees them: one subscription per
    role looked up, shared by every agent on the messager (``messager.shared(Directory)``), which
    closes it when it disconnects."""

    def __init__(self, messager: Messager) -> None:
        self.messager = messager
        self._presence: dict[str, Presence] = {}
        self._seen: dict[str, asyncio.Event] = {}
        self._subscriptions: list[Any] = []
        self._lock = asyncio.Lock()

    @classmethod
    def of(cls, messager: Messager) -> Directory:
        """Deprecated: the older spelling of ``messager.shared(Directory)``."""
        deprecated("Directory.of(messager) is deprecated: use messager.shared(Directory)")
        return messager.shared(cls)

    async def close(self) -> None:
        """Stop following the roles' presences."""
        async with self._lock:
            subscriptions, self._subscriptions = self._subscriptions, []
            self._seen.clear()
            self._presence.clear()
        for subscription in subscriptions:
            with contextlib.suppress(Exception):
                await self.messager.unsubscribe(subscription)

    async def _follow(self, role: str) -> asyncio.Event:
        async with self._lock:
            seen = self._seen.get(role)
            if seen is None:
                seen = self._seen[role] = asyncio.Event()

                async def on_presence(presence: Presence) -> None:
                    # A card is believed only from a client that is online: a retained presence
                    # naming a gone client (stale, or forged) must not hide the role's real one.
                    if not presence.online or self.messager.peers.online(presence.client_id):
                        self._presence[role] = presence
                    seen.set()

                await self.messager.peers.start()
                subscription = await self.messager.subscribe(
                    self.messager.topics.agent_status(role), on_presence, model=Presence
                )
                self._subscriptions.append(subscription)
            return seen

    async def presence(self, role: str, timeout: float = PRESENCE_WAIT_S) -> Presence | None:  # noqa: ASYNC109
        """The role's latest presence (waiting up to ``timeout`` for the first), None if none."""
        seen = await self._follow(role)
        if not seen.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(seen.wait(), timeout)
        return self._presence.get(role)

    async def discover(self, timeout: float = PRESENCE_WAIT_S) -> dict[str, Presence]:  # noqa: ASYNC109
        """The roles online now, with their agent cards: the retained presences of every role,
        read for ``timeout`` seconds, from clients that are online."""
        await self.messager.peers.start()
        found: dict[str, Presence] = {}
        topic = self.messager.topics.agent_status_all()
        async with self.messager.messages(topic, model=Presence) as presences:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    async for presence in presences:
                        found[presence.role] = presence
        return {
            role: presence
            for role, presence in sorted(found.items())
            if presence.online and self.messager.peers.online(presence.client_id)
        }

    async def online(self, role: str, timeout: float = PRESENCE_WAIT_S) -> bool:  # noqa: ASYNC109
        """Whether an agent of ``role`` says it is online, from a client that is online."""
        presence = await self.presence(role, timeout)
        return presence is not None and presence.online and self.messager.peers.online(presence.client_id)


@dataclass(frozen=True)
class Asker:
    """What a delegation needs from the asking agent."""

    role: str
    messager: Messager
    #: The asking agent's one-shot model call (messages) -> reply, to answer an input-required.
    think: Callable[[list[ChatMessage]], Any]
    system_prompt: str | None


class Delegation:
    """The roles one agent may ask (``delegates``: role -> description), as its model's tools."""

    def __init__(
        self,
        asker: Asker,
        delegates: Mapping[str, str],
        *,
        supervise: bool = False,
        ask_back: bool = False,
        timeout_s: float = 300.0,
    ) -> None:
        self.asker = asker
        self.delegates = dict(delegates)
        self.supervise = supervise
        self.ask_back = ask_back
        self.timeout_s = timeout_s
        self._tools = {tool_name(role): role for role in self.delegates}
        self._definitions = self._build_definitions()

    @property
    def messager(self) -> Messager:
        return self.asker.messager

    # --- what the model sees ------------------------------------------------------------------

    def _build_definitions(self) -> list[ToolDefinition]:
        question = {"type": "string", "maxLength": MAX_QUESTION_CHARS}
        definitions: list[ToolDefinition] = []
        if self.supervise and self.delegates:
            roles = "; ".join(f"{role}: {text or role}" for role, text in self.delegates.items())
            definitions.append(
                ToolDefinition(
                    name="assign",
                    description=(
                        "Give parts of the task to team members, all at once; returns each one's "
                        f"answer. Members: {roles}"
                    ),
                    parameters={
                        "type": "object",
                        "properties": {
                            "tasks": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 2 * len(self.delegates),
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "role": {"type": "string", "enum": list(self.delegates)},
                                        "question": question,
                                    },
                                    "required": ["role", "question"],
                                    "additionalProperties": False,
                                },
                            }
                        },
                        "required": ["tasks"],
                        "additionalProperties": False,
                    },
                )
            )
        else:
            for name, role in self._tools.items():
                description = self.delegates[role]
                definitions.append(
                    ToolDefinition(
                        name=name,
                        description=f"Ask the {role}" + (f": {description}" if description else ""),
                        parameters={
                            "type": "object",
                            "properties": {
                                "question": {**question, "description": f"what to ask the {role}"}
                            },
                            "required": ["question"],
                            "additionalProperties": False,
                        },
                    )
                )
        if self.ask_back:
            definitions.append(
                ToolDefinition(
                    name="ask_back",
                    description="Ask whoever gave you this task for something you need to go on",
                    parameters={
                        "type": "object",
                        "properties": {"question": {**question, "description": "what you need to know"}},
                        "required": ["question"],
                        "additionalProperties": False,
                    },
                )
            )
        return definitions

    def definitions(self) -> list[ToolDefinition]:
        return list(self._definitions)

    def handles(self, name: str) -> bool:
        return (
            name in self._tools
            or (name == "assign" and self.supervise and bool(self.delegates))
            or (name == "ask_back" and self.ask_back)
        )

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        """Run one of this delegation's tools (errors come back as a failed result)."""
        if name == "ask_back":
            return await self._ask_back(str(arguments.get("question", "")))
        if name == "assign":
            return await self._assign(arguments.get("tasks"))
        text = str(arguments.get("question", "")).strip()
        if not text:
            return _failure(name, ToolArgumentsError("give a non-empty 'question'"))
        return await self.ask(self._tools[name], text, tool=name)

    # --- asking -------------------------------------------------------------------------------

    async def _assign(self, tasks: object) -> ToolResult:
        most = 2 * len(self.delegates)
        if not isinstance(tasks, list) or not 0 < len(tasks) <= most:
            return _failure(
                "assign", ToolArgumentsError(f"give 'tasks': a list of 1 to {most} {{role, question}}")
            )
        parts: list[tuple[str, str]] = []
        for item in tasks:
            role = item.get("role") if isinstance(item, dict) else None
            text = str(item.get("question", "")).strip() if isinstance(item, dict) else ""
            if role not in self.delegates or not text:
                known = ", ".join(self.delegates)
                return _failure(
                    "assign", ToolArgumentsError(f"each task needs a role ({known}) and a question")
                )
            parts.append((str(role), text))
        results = await asyncio.gather(*(self.ask(role, text, tool="assign") for role, text in parts))
        answers = [
            {"role": role, "answer": r.result}
            if r.ok
            else {"role": role, "error": r.error.message if r.error else ""}
            for (role, _), r in zip(parts, results, strict=True)
        ]
        if not any(r.ok for r in results):
            return _failure("assign", ToolExecutionError("no member could answer: " + json.dumps(answers)))
        return ToolResult(call_id="", tool="assign", ok=True, result=answers)

    async def ask(self, role: str, text: str, *, tool: str | None = None) -> ToolResult:
        """Ask ``role`` as part of the current task; its answer's text, or the error, as a result
        (noted on the task: a task whose delegates all failed fails too)."""
        task = running_task.get()
        result = await self._ask(task, role, text, tool or tool_name(role))
        if task is not None:
            task.record_delegation(result)
        return result

    async def _ask(self, task: AgentTask | None, role: str, text: str, name: str) -> ToolResult:
        question = self._question(task, text[:MAX_QUESTION_CHARS])
        if not await self.messager.shared(Directory).online(role):
            return _failure(name, NoAgentOnlineError(f"no {role} agent is online; answer without the {role}"))
        timeout = self.timeout_s
        if question.deadline is not None:
            timeout = min(timeout, max(0.0, question.deadline - time.time()) + DEADLINE_GRACE_S)
        worker: list[str | None] = [None]
        gone = asyncio.Event()

        async def on_gone(client_id: str) -> None:
            if client_id == worker[0]:
                gone.set()

        stop_watching = self.messager.peers.watch(on_gone)
        try:
            async with AgentClient(self.messager, role).stream(question, timeout=timeout) as run:
                follow = asyncio.ensure_future(self._follow(run, task, worker, gone))
                gone_wait = asyncio.ensure_future(gone.wait())
                try:
                    while True:
                        await asyncio.wait({follow, gone_wait}, return_when=asyncio.FIRST_COMPLETED)
                        answered = follow.done()  # else its agent went offline first
                        if answered or not await self._replaced(role, worker[0]):
                            break
                        # The run sent the question again: another replica of the role takes
                        # it over (with a store, from the last step the dead one recorded).
                        log.info("the %s on %s went offline; another replica takes over", role, question.id)
                        worker[0] = None
                        gone.clear()
                        gone_wait = asyncio.ensure_future(gone.wait())
                except asyncio.CancelledError:
                    await self._cancel(role, question.id, f"{self.asker.role} stopped")
                    # Let the sub-task's last states (canceled, or its deadline) through first.
                    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                        await asyncio.wait_for(asyncio.shield(follow), DEADLINE_GRACE_S)
                    raise
                finally:
                    gone_wait.cancel()
                    if not follow.done():
                        follow.cancel()
                    else:
                        _log_failure(follow)
                if not answered:
                    await self._cancel(role, question.id, "its agent went offline")
                    return _failure(
                        name,
                        NoAgentOnlineError(f"the {role} agent working on it went offline before answering"),
                    )
                answer = await run.answer()
        except AgentReplyError as exc:
            return _failure(name, exc, f"the {role} could not answer: {exc.reason}")
        except RequestTimeoutError:
            await self._cancel(role, question.id, "no answer in time")
            return _failure(name, ToolTimeoutError(f"the {role} did not answer within {timeout:.0f}s"))
        except ArgenticError as exc:
            return _failure(name, ToolExecutionError(f"asking the {role} failed: {exc}"))
        finally:
            stop_watching()
        return ToolResult(call_id="", tool=name, ok=True, result=answer.text)

    async def _replaced(self, role: str, dead: str | None) -> bool:
        """Whether another replica of ``role`` serves once client ``dead`` is gone (the live ones
        say so again when the dead one's will arrives, so look for a moment)."""
        directory = self.messager.shared(Directory)
        deadline = time.monotonic() + REPLACEMENT_WAIT_S
        while True:
            presence = await directory.presence(role, 0.0)
            if (
                presence is not None
                and presence.online
                and presence.client_id != dead
                and self.messager.peers.online(presence.client_id)
            ):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)

    def _question(self, task: AgentTask | None, text: str) -> Question:
        if task is None:  # asked outside a task (a local query): a tree of its own
            return Question(text=text, asked_by=self.asker.role, chain=[self.asker.role])
        parent = task.question
        return Question(
            text=text,
            asked_by=self.asker.role,
            chain=[*parent.chain, self.asker.role],
            parent_id=parent.id,
            root_id=task.root_id,
            deadline=parent.deadline,
            expires_at=parent.deadline,
        )

    async def _follow(
        self, run: AgentRun, task: AgentTask | None, worker: list[str | None], gone: asyncio.Event
    ) -> None:
        """Read the sub-task's events: note its worker, answer its input requests, pass statuses up."""
        question_id = run.question.id
        answering: set[asyncio.Task[None]] = set()
        try:
            async for event in run:
                if not isinstance(event, TaskStatus):
                    continue
                if event.question_id == question_id:
                    if event.client_id and worker[0] != event.client_id:
                        worker[0] = event.client_id
                        if self.messager.peers.gone(event.client_id):
                            gone.set()
                    if event.state == "input-required" and event.reply_to:
                        job = asyncio.ensure_future(self._give_input(run, event))
                        answering.add(job)
                        job.add_done_callback(answering.discard)
                if task is not None:
                    await self._pass_up(task, event)
        finally:
            for job in answering:
                job.cancel()

    async def _pass_up(self, task: AgentTask, status: TaskStatus) -> None:
        # The same message id: a watcher of every events topic sees each status once.
        copy = status.model_copy(update={"reply_to": None, "correlation_id": None})
        try:
            await self.messager.publish(task.topic, copy)
        except ArgenticError as exc:
            log.warning("could not pass up the status of %s: %s", status.question_id, exc)

    async def _give_input(self, run: AgentRun, status: TaskStatus) -> None:
        """The asking agent's model answers what the asked role wants to know."""
        prompt = [
            *([ChatMessage.system(self.asker.system_prompt)] if self.asker.system_prompt else []),
            ChatMessage.user(
                f"You asked the {status.role}: {run.question.text}\n\n"
                f"The {status.role} asks you: {status.text or ''}\n\nAnswer its question briefly."
            ),
        ]
        try:
            reply: ChatResponse = await self.asker.think(prompt)
            text = (reply.content or "").strip() or "I have nothing to add; go on as you see fit."
        except Exception as exc:
            log.warning("could not answer the input request of %s: %s", status.question_id, exc)
            text = "I cannot answer that now; go on as you see fit."
        try:
            await run.give_input(status, text)
        except ArgenticError as exc:
            log.warning("could not send input to %s: %s", status.question_id, exc)

    async def _cancel(self, role: str, question_id: str, reason: str) -> None:
        try:
            # The sub-question was asked from this messager, whose client owns it.
            await AgentClient(self.messager, role).cancel(question_id, reason)
        except ArgenticError as exc:
            log.warning("could not cancel %s: %s", question_id, exc)

    # --- asking back --------------------------------------------------------------------------

    async def _ask_back(self, text: str) -> ToolResult:
        task = running_task.get()
        if task is None or not text.strip():
            return _failure("ask_back", ToolArgumentsError("there is no asker to ask, or no question"))
        board = self.messager.shared(TaskBoard)
        timeout = self.timeout_s
        remaining = task.remaining_s()
        if remaining is not None:
            timeout = max(0.0, min(timeout, remaining))
        deadline = time.monotonic() + timeout
        try:
            while True:
                # Input counts only from the task's owner; anyone else is refused and the asker
                # is asked again for what is left of the time.
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RequestTimeoutError("no input in time")
                status = task_status(task, "input-required", self.messager, text.strip())  # a new id
                reply = await self.messager.request(
                    task.topic, status, response_model=TaskInput, timeout=left
                )
                if isinstance(reply, ErrorReply) or reply.reply_to == task.owner:
                    break
                await board.refuse(reply, task, "give input to")
        except RequestTimeoutError:
            return _failure("ask_back", ToolTimeoutError("no answer from the asker; go on without it"))
        finally:
            await board.status(task, "working")
        if isinstance(reply, ErrorReply):
            return _failure("ask_back", error_from(reply.error))
        return ToolResult(call_id="", tool="ask_back", ok=True, result=reply.text)


def _log_failure(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.warning("following a sub-task failed: %s", done.exception())


def think_with(agent: Any) -> Callable[[list[ChatMessage]], Any]:
    """The asking agent's model call for input requests: no tools, no events."""

    async def think(messages: list[ChatMessage]) -> ChatResponse:
        response: ChatResponse = await agent.call_llm(ChatRequest(messages=messages), NullEvents())
        return response

    return think
