"""One role as an A2A agent: its card from the role's card on the broker, and an executor that asks
the role over MQTT and turns the task's events into A2A task status and artifact updates."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from a2a.helpers import new_task_from_user_message, new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Artifact,
    GetTaskRequest,
    Part,
    Task,
    TaskState,
)
from a2a.types import TaskStatus as A2ATaskStatus
from a2a.utils.errors import TaskNotFoundError

from argentic.agents.client import AgentClient, EventFeed
from argentic.errors import ArgenticError
from argentic.gateway.roster import Roster
from argentic.protocol import Answer, Presence, Progress, Question, TaskStatus, Token

log = logging.getLogger(__name__)

#: argentic's task states, one to one.
STATES: dict[str, TaskState] = {
    "submitted": TaskState.TASK_STATE_SUBMITTED,
    "working": TaskState.TASK_STATE_WORKING,
    "input-required": TaskState.TASK_STATE_INPUT_REQUIRED,
    "completed": TaskState.TASK_STATE_COMPLETED,
    "failed": TaskState.TASK_STATE_FAILED,
    "canceled": TaskState.TASK_STATE_CANCELED,
    "rejected": TaskState.TASK_STATE_REJECTED,
}
#: Error codes that are a refusal to take the task rather than a failure of it.
REJECTED = {"busy", "forbidden", "delegation_cycle", "depth_limit"}
RELAY_QUEUE = 4096
PUT_S = 30.0
CANCEL_WAIT_S = 10.0
TASK_GET_S = 2.0
#: How often a task waiting for its next event checks that its role is still online.
OFFLINE_CHECK_S = 1.0


def agent_card(role: str, presence: Presence | None, url: str) -> AgentCard:
    """The A2A card of ``role`` (served at ``url``), from its argentic card."""
    card = presence.card if presence is not None else None
    description = (card.description if card else "") or f"the {role} role of an argentic team"
    skills = [AgentSkill(id=role, name=role, description=description, tags=["argentic"])]
    for tool in card.tools if card else []:
        skills.append(
            AgentSkill(id=f"tool:{tool}", name=tool, description=f"uses the tool {tool}", tags=["tool"])
        )
    for delegate in card.delegates if card else []:
        skills.append(
            AgentSkill(
                id=f"asks:{delegate}",
                name=f"asks {delegate}",
                description=f"asks the {delegate} role",
                tags=["role"],
            )
        )
    return AgentCard(
        name=role,
        description=description,
        version=card.model or "argentic" if card else "argentic",
        supported_interfaces=[AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=skills,
    )


class Relay:
    """One argentic question behind one A2A task: its events, then its answer or error, queued for
    whichever ``execute`` call follows the task (the first, then each after an input)."""

    def __init__(self, client: AgentClient, question: Question, feed: EventFeed | None = None) -> None:
        self.client = client
        self.question = question
        self.feed = feed
        self.items: asyncio.Queue[Any] = asyncio.Queue(maxsize=RELAY_QUEUE)
        self.waiting: TaskStatus | None = None
        self.state: TaskState = TaskState.TASK_STATE_SUBMITTED
        self._run: Any = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._relay(), name=f"argentic-a2a-{self.question.id}")

    async def _put(self, item: Any) -> None:
        await asyncio.wait_for(self.items.put(item), PUT_S)

    async def _relay(self) -> None:
        try:
            async with self.client.stream(self.question, feed=self.feed) as run:
                self._run = run
                async for event in run:
                    await self._put(event)
                try:
                    await self._put(await run.answer())
                except ArgenticError as exc:
                    await self._put(exc)
        except (ArgenticError, TimeoutError) as exc:
            with contextlib.suppress(asyncio.QueueFull):
                self.items.put_nowait(exc)

    async def give_input(self, text: str) -> None:
        status, self.waiting = self.waiting, None
        if status is None or self._run is None:
            raise ArgenticError("the task asks for no input")
        await self._run.give_input(status, text)

    async def ended(self, timeout: float) -> None:  # noqa: ASYNC109
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _message(text: str, task_id: str, context_id: str) -> Any:
    return new_text_message(text, task_id=task_id, context_id=context_id)


class RoleExecutor(AgentExecutor):
    """Asks ``role`` over MQTT for each A2A message; a follow-up message on a task that waits for
    input is that input (argentic's ``task_input``)."""

    def __init__(self, role: str, messager_client: AgentClient, roster: Roster, *, timeout_s: float) -> None:
        self.role = role
        self.client = messager_client
        self.roster = roster
        self.timeout_s = timeout_s
        self.relays: dict[str, Relay] = {}

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task_id, context_id = context.task_id or "", context.context_id or ""
        updater = TaskUpdater(event_queue, task_id, context_id)
        text = context.get_user_input()
        relay = self.relays.get(task_id)
        if relay is not None and relay.waiting is not None:
            await relay.give_input(text)
        else:
            if context.current_task is None and context.message is not None:
                await event_queue.enqueue_event(new_task_from_user_message(context.message))
            if self.roster.online(self.role) is None:
                await updater.failed(
                    _message(f"no agent of role {self.role!r} is online", task_id, context_id)
                )
                return
            question = Question(id=task_id, text=text or " ", stream=_watched(context))
            relay = Relay(self.client, question, self.roster.follow)
            self.relays[task_id] = relay
            relay.start()
        await self._follow(relay, updater)

    async def _follow(self, relay: Relay, updater: TaskUpdater) -> None:
        task_id, context_id = updater.task_id, updater.context_id
        waited = 0.0
        while True:
            try:
                item = await asyncio.wait_for(relay.items.get(), OFFLINE_CHECK_S)
            except TimeoutError:
                waited += OFFLINE_CHECK_S
                if self.roster.online(self.role) is None or waited > self.timeout_s + PUT_S:
                    # Every replica of the role went away (or nothing came for too long): no answer
                    # will come, and an A2A client must not wait for one.
                    await self.client.stop_waiting(task_id, "the role went offline")
                    await relay.close()
                    self._forget(task_id)
                    why = "went offline" if self.roster.online(self.role) is None else "sent nothing"
                    await updater.failed(
                        _message(f"unavailable: the {self.role} role {why} mid-task", task_id, context_id)
                    )
                    return
                continue
            waited = 0.0
            if isinstance(item, TaskStatus) and item.question_id == task_id:
                state = STATES[item.state]
                if item.state == "input-required":
                    relay.waiting = item
                    relay.state = state
                    await updater.requires_input(_message(item.text or "", task_id, context_id))
                    return
                if item.state in ("submitted", "working"):
                    relay.state = state
                    await updater.update_status(state, metadata={"argentic": _status_meta(item)})
            elif isinstance(item, TaskStatus):
                # A task it spawned: the A2A task stays where it is; the sub-task rides in metadata.
                await updater.update_status(relay.state, metadata={"argentic": _status_meta(item)})
            elif isinstance(item, Token):
                await updater.add_artifact(
                    [Part(text=item.text)],
                    artifact_id=f"{task_id}-tokens",
                    name="tokens",
                    append=item.index > 0,
                    last_chunk=False,
                )
            elif isinstance(item, Progress):
                meta = item.model_dump(mode="json", exclude_none=True, include={"stage", "tool", "detail"})
                await updater.update_status(relay.state, metadata={"argentic_progress": meta})
            elif isinstance(item, Answer):
                parts = [Part(text=item.text)]
                if item.data is not None:
                    parts.append(Part(data=item.data))
                await updater.add_artifact(
                    parts, artifact_id=f"{task_id}-answer", name="answer", last_chunk=True
                )
                await updater.complete(_message(item.text, task_id, context_id))
                self._forget(task_id)
                return
            elif isinstance(item, BaseException):
                await _ended_with(updater, item)
                self._forget(task_id)
                return

    def _forget(self, task_id: str) -> None:
        self.relays.pop(task_id, None)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        task_id, context_id = context.task_id or "", context.context_id or ""
        relay = self.relays.pop(task_id, None)
        if relay is not None:
            await self.client.cancel(task_id, "canceled through A2A")
            await relay.ended(CANCEL_WAIT_S)
            await relay.close()
        await TaskUpdater(event_queue, task_id, context_id).cancel(
            _message("canceled through A2A", task_id, context_id)
        )

    async def close(self) -> None:
        relays, self.relays = list(self.relays.values()), {}
        for relay in relays:
            await relay.close()


def _watched(context: RequestContext) -> bool:
    """Whether the answer's tokens can reach anyone: not through a blocking ``message/send``,
    which returns only the finished task (the answer is its artifact), so the agent need not
    publish them, nor the gateway relay them."""
    blocking_send = context.call_context.state.get("method") == "SendMessage" and not (
        context.configuration is not None and context.configuration.return_immediately
    )
    return not blocking_send


def _status_meta(status: TaskStatus) -> dict[str, Any]:
    return status.model_dump(
        mode="json",
        exclude_none=True,
        include={"question_id", "state", "role", "asked_by", "parent_id", "root_id", "depth", "text"},
    )


async def _ended_with(updater: TaskUpdater, exc: BaseException) -> None:
    code = str(getattr(exc, "code", "internal"))
    text = str(exc) if str(exc).startswith(code) else f"{code}: {exc}"
    message = _message(text, updater.task_id, updater.context_id)
    if code == "canceled":
        await updater.cancel(message)
    elif code in REJECTED:
        await updater.reject(message)
    else:
        await updater.failed(message)


class RoleRequestHandler(DefaultRequestHandler):
    """tasks/get: the role's own record (argentic's ``task_get``) when its agents keep a store,
    else what the gateway saw."""

    def __init__(self, client: AgentClient, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client = client

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        seen: Task | None = None
        with contextlib.suppress(TaskNotFoundError):
            seen = await super().on_get_task(params, context)
        try:
            record = await self.client.task(params.id, timeout=TASK_GET_S)
        except (ArgenticError, TimeoutError):
            if seen is None:
                raise TaskNotFoundError from None
            return seen
        task = Task()
        if seen is not None:
            task.CopyFrom(seen)
        else:
            task.id = params.id
            task.context_id = params.id
        task.status.CopyFrom(A2ATaskStatus(state=STATES[record.status.state]))
        if record.status.text:
            task.status.message.CopyFrom(_message(record.status.text, task.id, task.context_id))
        if record.answer is not None and not any(a.name == "answer" for a in task.artifacts):
            task.artifacts.append(
                Artifact(
                    artifact_id=f"{task.id}-answer", name="answer", parts=[Part(text=record.answer.text)]
                )
            )
        return task


def role_handler(
    role: str, client: AgentClient, roster: Roster, card: AgentCard, *, timeout_s: float
) -> tuple[RoleRequestHandler, RoleExecutor]:
    executor = RoleExecutor(role, client, roster, timeout_s=timeout_s)
    handler = RoleRequestHandler(
        client, agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=card
    )
    return handler, executor
