"""One role as an A2A agent: its card from the role's card on the broker, and a request handler
that asks the role over MQTT for each task (each task's events become A2A's in
:mod:`argentic.gateway.a2a_task`). The a2a-sdk's JSON-RPC routes call it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator

from a2a.helpers import get_message_text, new_text_message
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers.request_handler import RequestHandler
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Artifact,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskPushNotificationConfig,
    TaskState,
)
from a2a.types import TaskStatus as A2ATaskStatus
from a2a.utils.errors import (
    ExtendedAgentCardNotConfiguredError,
    InvalidParamsError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from a2a.utils.task import (
    apply_history_length,
    decode_page_token,
    encode_page_token,
    validate_history_length,
    validate_page_size,
)

from argentic.agents.client import AgentClient
from argentic.errors import ArgenticError
from argentic.gateway.a2a_task import INTERRUPTED, STATES, Event, Follower, TaskRun
from argentic.gateway.roster import Roster
from argentic.protocol import Presence, Question

log = logging.getLogger(__name__)

CANCEL_WAIT_S = 10.0
TASK_GET_S = 2.0
#: How often the role's tasks check that the role is still online.
OFFLINE_CHECK_S = 1.0
#: Beyond the question's own timeout, how long a task may hear nothing before it fails.
SILENCE_MARGIN_S = 30.0
#: Tasks kept for tasks/get and tasks/list; the oldest finished ones go first.
MAX_TASKS = 10_000
LIST_PAGE_SIZE = 50


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


class RoleHandler(RequestHandler):
    """The A2A methods of one role. A message starts a task, which asks the role over MQTT, or
    answers the question a task waits on (argentic's ``task_input``). Tasks stay here for
    tasks/get and tasks/list; the role's own record (``task_get``) answers for tasks this gateway
    did not see."""

    def __init__(self, role: str, client: AgentClient, roster: Roster, *, timeout_s: float) -> None:
        self.role = role
        self.client = client
        self.roster = roster
        #: A task that hears nothing for this long fails (the question's own timeout, and a margin).
        self.silence_s = timeout_s + SILENCE_MARGIN_S
        self._tasks: OrderedDict[str, TaskRun] = OrderedDict()
        self._live: dict[str, TaskRun] = {}
        self._watching: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.gather(self._watching, return_exceptions=True)
        runs, self._live = list(self._live.values()), {}
        for run in runs:
            await run.close()

    # message/send, message/stream

    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Task | Message:
        config = params.configuration if params.HasField("configuration") else None
        validate_history_length(config)
        at_once = config is not None and config.return_immediately
        # A blocking send returns the finished task only, so nobody could see the answer's tokens.
        run, _ = await self._take(params.message, tokens=at_once, follow=False)
        if not at_once:
            await run.settled(self.silence_s)
        return apply_history_length(run.snapshot(), config)

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        config = params.configuration if params.HasField("configuration") else None
        validate_history_length(config)
        run, follower = await self._take(params.message, tokens=True, follow=True)
        assert follower is not None
        try:
            yield apply_history_length(follower.task, config)
            async for event in follower.events():
                yield event
        finally:
            run.unfollow(follower)

    async def _take(self, message: Message, *, tokens: bool, follow: bool) -> tuple[TaskRun, Follower | None]:
        """The task ``message`` starts (its answer's tokens streamed with ``tokens``) or resumes,
        and with ``follow`` a follower of it from before it did."""
        if message.role != Role.ROLE_USER or not message.parts:
            raise InvalidParamsError(message="a message to an agent comes from a user and has parts")
        text = get_message_text(message) or " "
        if message.task_id:
            return await self._resume(message, text, follow=follow)
        task = Task(
            id=str(uuid.uuid4()),
            context_id=message.context_id or str(uuid.uuid4()),
            status=A2ATaskStatus(state=TaskState.TASK_STATE_SUBMITTED),
        )
        kept = task.history.add()
        kept.CopyFrom(message)
        kept.task_id, kept.context_id = task.id, task.context_id
        run = TaskRun(task, Question(id=task.id, text=text, stream=tokens), self.client, self.roster.follow)
        self._tasks[run.id] = run
        while len(self._tasks) > MAX_TASKS:
            self._tasks.popitem(last=False)
        follower = run.follow(self.silence_s) if follow else None
        if self.roster.online(self.role) is None:
            run.end(TaskState.TASK_STATE_FAILED, f"no agent of role {self.role!r} is online")
        else:
            self._live[run.id] = run
            run.start()
            if self._watching is None or self._watching.done():
                self._watching = asyncio.create_task(self._watch(), name=f"argentic-a2a-watch-{self.role}")
        return run, follower

    async def _resume(self, message: Message, text: str, *, follow: bool) -> tuple[TaskRun, Follower | None]:
        run = self._find(message.task_id)
        if run.terminal:
            state = TaskState.Name(run.task.status.state)
            raise UnsupportedOperationError(message=f"task {run.id} is in terminal state {state}")
        if run.waiting is None:
            raise InvalidParamsError(message=f"task {run.id} is working and asks for no input")
        follower = run.follow(self.silence_s) if follow else None
        try:
            await run.give_input(message, text)
        except ArgenticError as exc:
            if follower is not None:
                run.unfollow(follower)
            raise InvalidParamsError(message=f"task {run.id} could not take the input: {exc}") from exc
        return run, follower

    def _find(self, task_id: str) -> TaskRun:
        run = self._live.get(task_id) or self._tasks.get(task_id)
        if run is None:
            raise TaskNotFoundError(message=f"no task {task_id} at the {self.role} role's A2A agent")
        return run

    async def _watch(self) -> None:
        """Fail the tasks no answer will come for: their role went offline, or they heard nothing
        for longer than a question may take."""
        loop = asyncio.get_running_loop()
        while self._live:
            await asyncio.sleep(OFFLINE_CHECK_S)
            offline = self.roster.online(self.role) is None
            for run in list(self._live.values()):
                if run.terminal:
                    self._live.pop(run.id, None)
                    continue
                if offline:
                    why = "went offline"
                elif run.waiting is None and loop.time() - run.heard > self.silence_s:
                    why = "sent nothing"
                else:
                    continue
                self._live.pop(run.id, None)
                await run.give_up(f"unavailable: the {self.role} role {why} mid-task")

    # tasks/get, tasks/list, tasks/cancel, tasks/resubscribe

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        validate_history_length(params)
        with contextlib.suppress(TaskNotFoundError):
            return apply_history_length(self._find(params.id).snapshot(), params)
        try:
            record = await self.client.task(params.id, timeout=TASK_GET_S)
        except (ArgenticError, TimeoutError):
            raise TaskNotFoundError(
                message=f"no task {params.id}: this gateway did not see it, and the {self.role} role "
                "has no record of it"
            ) from None
        task = Task(id=params.id, context_id=params.id)
        task.status.state = STATES[record.status.state]
        if record.status.text:
            task.status.message.CopyFrom(
                new_text_message(record.status.text, task_id=task.id, context_id=task.id)
            )
        if record.answer is not None:
            task.artifacts.append(
                Artifact(
                    artifact_id=f"{task.id}-answer", name="answer", parts=[Part(text=record.answer.text)]
                )
            )
        return apply_history_length(task, params)

    async def on_list_tasks(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        validate_history_length(params)
        size = params.page_size if params.HasField("page_size") else LIST_PAGE_SIZE
        validate_page_size(size)
        after = (
            params.status_timestamp_after.ToNanoseconds() if params.HasField("status_timestamp_after") else 0
        )
        runs = [
            run
            for run in reversed(self._tasks.values())
            if (not params.context_id or run.task.context_id == params.context_id)
            and (not params.status or run.task.status.state == params.status)
            and run.task.status.timestamp.ToNanoseconds() >= after
        ]
        start = 0
        if params.page_token:
            last = decode_page_token(params.page_token)
            ids = [run.id for run in runs]
            if last not in ids:
                raise InvalidParamsError(message="the page token names no task in this list")
            start = ids.index(last) + 1
        page = runs[start : start + size]
        tasks = []
        for run in page:
            task = run.snapshot()
            if not params.include_artifacts:
                task.ClearField("artifacts")
            tasks.append(apply_history_length(task, params))
        more = start + size < len(runs)
        return ListTasksResponse(
            tasks=tasks,
            next_page_token=encode_page_token(page[-1].id) if more and page else "",
            page_size=size,
            total_size=len(runs),
        )

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task | None:
        run = self._find(params.id)
        if run.terminal:
            state = TaskState.Name(run.task.status.state)
            raise TaskNotCancelableError(message=f"task {run.id} cannot be canceled: it is {state}")
        self._live.pop(run.id, None)
        await run.cancel("canceled through A2A", CANCEL_WAIT_S)
        return run.snapshot()

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        run = self._find(params.id)
        if run.terminal:
            state = TaskState.Name(run.task.status.state)
            raise UnsupportedOperationError(message=f"task {run.id} is in terminal state {state}")
        follower = run.follow(self.silence_s)
        try:
            yield follower.task
            if follower.task.status.state not in INTERRUPTED:
                async for event in follower.events():
                    yield event
        finally:
            run.unfollow(follower)

    # What this agent does not offer (its card says so).

    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError

    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError

    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        raise PushNotificationNotSupportedError

    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        raise PushNotificationNotSupportedError

    async def on_get_extended_agent_card(
        self, params: GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> AgentCard:
        raise ExtendedAgentCardNotConfiguredError
