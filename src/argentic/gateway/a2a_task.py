"""One A2A task behind one argentic question: the task as A2A clients see it, kept up to date from
the question's events over MQTT, and each change as an A2A event for whoever follows the task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from a2a.helpers import new_text_message
from a2a.types import (
    Artifact,
    Message,
    Part,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatusUpdateEvent,
)
from a2a.types import TaskStatus as A2ATaskStatus
from a2a.utils.errors import InternalError

from argentic.agents.client import AgentClient, AgentRun, EventFeed
from argentic.errors import ArgenticError
from argentic.protocol import Answer, Progress, Question, TaskStatus, Token

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
TERMINAL = {
    TaskState.TASK_STATE_COMPLETED,
    TaskState.TASK_STATE_FAILED,
    TaskState.TASK_STATE_CANCELED,
    TaskState.TASK_STATE_REJECTED,
}
#: States in which the task waits for its client: a stream that follows it ends there.
INTERRUPTED = {TaskState.TASK_STATE_INPUT_REQUIRED, TaskState.TASK_STATE_AUTH_REQUIRED}
#: Error codes that are a refusal to take the task rather than a failure of it.
REJECTED = {"busy", "forbidden", "delegation_cycle", "depth_limit"}
#: Events a follower may lag behind before it is dropped (its stream then ends with an error).
FOLLOW_QUEUE = 4096

Event = Task | TaskStatusUpdateEvent | TaskArtifactUpdateEvent


class Follower:
    """One stream's view of a task: the task as it was when the stream began (``task``), then
    its events, until the task is done or waits for its client."""

    def __init__(self, run: TaskRun, silence_s: float) -> None:
        self.run = run
        self.task = run.snapshot()
        self.silence_s = silence_s
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=FOLLOW_QUEUE)
        self.fell_behind = False

    async def events(self) -> AsyncIterator[Event]:
        try:
            while True:
                if self.queue.empty() and self.fell_behind:
                    raise InternalError(message=f"the stream of task {self.run.task.id} fell behind")
                try:
                    async with asyncio.timeout(self.silence_s):
                        event = await self.queue.get()
                except TimeoutError:
                    raise InternalError(
                        message=f"task {self.run.task.id} sent nothing for {self.silence_s:.0f} s"
                    ) from None
                yield event
                if isinstance(event, TaskStatusUpdateEvent) and _settles(event.status.state):
                    return
        finally:
            self.run.unfollow(self)


class TaskRun:
    """``task`` (the A2A task) while argentic works on ``question``: the question's events become
    status and artifact updates, applied to ``task`` and passed to its followers."""

    def __init__(self, task: Task, question: Question, client: AgentClient, feed: EventFeed | None) -> None:
        self.task = task
        self.question = question
        self.client = client
        self.feed = feed
        #: argentic's ``input-required`` status the task waits on, if it waits for input.
        self.waiting: TaskStatus | None = None
        #: When the task last heard from its role (event loop time).
        self.heard = asyncio.get_running_loop().time()
        self._followers: list[Follower] = []
        self._run: AgentRun | None = None
        self._driving: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        #: Set while the task is done or waits for its client.
        self._settled = asyncio.Event()

    @property
    def id(self) -> str:
        return self.task.id

    @property
    def terminal(self) -> bool:
        return self.task.status.state in TERMINAL

    def follow(self, silence_s: float) -> Follower:
        """A follower of the task's events from now on (take it before starting or resuming the
        task, so that nothing it does is missed)."""
        follower = Follower(self, silence_s)
        if self.terminal:
            follower.queue.put_nowait(self._status_event(self.task.status))
        else:
            self._followers.append(follower)
        return follower

    async def settled(self, timeout: float) -> None:  # noqa: ASYNC109
        """Wait until the task is done or waits for its client (what a blocking message/send
        returns at): no events are made for it."""
        try:
            async with asyncio.timeout(timeout):
                await self._settled.wait()
        except TimeoutError:
            raise InternalError(message=f"task {self.id} did not end within {timeout:.0f} s") from None

    def unfollow(self, follower: Follower) -> None:
        with contextlib.suppress(ValueError):
            self._followers.remove(follower)

    def snapshot(self) -> Task:
        task = Task()
        task.CopyFrom(self.task)
        return task

    def start(self) -> None:
        self._driving = asyncio.create_task(self._drive(), name=f"argentic-a2a-{self.id}")

    async def give_input(self, message: Message, text: str) -> None:
        """``message`` (from the task's client) answers the question the task waits on."""
        status, self.waiting = self.waiting, None
        if status is None or self._run is None:
            raise ArgenticError("the task asks for no input")
        self._settled.clear()
        self._keep_status_message()
        self.task.history.append(message)
        self.heard = asyncio.get_running_loop().time()
        await self._run.give_input(status, text)

    async def cancel(self, reason: str, wait_s: float) -> None:
        """Ask the role to stop; the task is canceled when it says so, or after ``wait_s``."""
        await self.client.cancel(self.id, reason)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), wait_s)
        if not self.terminal:
            self.end(TaskState.TASK_STATE_CANCELED, reason)
        await self.close()

    async def give_up(self, why: str) -> None:
        """No answer will come (the role went away): the task fails with ``why``."""
        self.end(TaskState.TASK_STATE_FAILED, why)
        await self.client.stop_waiting(self.id, why)
        await self.close()

    async def close(self) -> None:
        if self._driving is not None and not self._driving.done():
            self._driving.cancel()
            await asyncio.gather(self._driving, return_exceptions=True)

    def end(self, state: TaskState, text: str) -> None:
        if not self.terminal:
            self._set_status(state, text)

    # From the question's events to A2A's.

    async def _drive(self) -> None:
        try:
            async with self.client.stream(self.question, feed=self.feed) as run:
                self._run = run
                async for event in run:
                    self._on_event(event)
                answer = await run.answer()
        except (ArgenticError, TimeoutError) as exc:
            self._ended_with(exc)
        else:
            self._answered(answer)
        finally:
            self._run = None  # the task is kept for tasks/get; its run is over
            self._done.set()

    def _on_event(self, event: Any) -> None:
        self.heard = asyncio.get_running_loop().time()
        if self.terminal:
            return
        if isinstance(event, TaskStatus) and event.question_id == self.id:
            if event.state == "input-required":
                self.waiting = event
                self._set_status(TaskState.TASK_STATE_INPUT_REQUIRED, event.text or "")
            elif event.state in ("submitted", "working"):
                self._set_status(STATES[event.state], metadata=self._meta(event))
        elif isinstance(event, TaskStatus):
            # A task it spawned: the A2A task stays where it is; the sub-task rides in metadata.
            self._set_status(self.task.status.state, metadata=self._meta(event))
        elif isinstance(event, Token):
            self._add_artifact(
                Artifact(artifact_id=f"{self.id}-tokens", name="tokens", parts=[Part(text=event.text)]),
                append=event.index > 0,
                last_chunk=False,
            )
        elif isinstance(event, Progress):
            meta = event.model_dump(mode="json", exclude_none=True, include={"stage", "tool", "detail"})
            self._set_status(self.task.status.state, metadata={"argentic_progress": meta})

    def _answered(self, answer: Answer) -> None:
        if self.terminal:
            return
        parts = [Part(text=answer.text)]
        if answer.data is not None:
            parts.append(Part(data=answer.data))
        self._add_artifact(
            Artifact(artifact_id=f"{self.id}-answer", name="answer", parts=parts), last_chunk=True
        )
        self._set_status(TaskState.TASK_STATE_COMPLETED, answer.text)

    def _ended_with(self, exc: BaseException) -> None:
        code = str(getattr(exc, "code", "internal"))
        text = str(exc) if str(exc).startswith(code) else f"{code}: {exc}"
        if code == "canceled":
            self.end(TaskState.TASK_STATE_CANCELED, text)
        elif code in REJECTED:
            self.end(TaskState.TASK_STATE_REJECTED, text)
        else:
            self.end(TaskState.TASK_STATE_FAILED, text)

    # Changes to the task, passed on.

    def _set_status(
        self, state: TaskState, text: str | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        status = A2ATaskStatus(state=state)
        status.timestamp.GetCurrentTime()
        if text is not None:
            status.message.CopyFrom(new_text_message(text, task_id=self.id, context_id=self.task.context_id))
        self._keep_status_message()
        self.task.status.CopyFrom(status)
        if self._followers:
            self._emit(self._status_event(status, metadata))
        if _settles(state):
            self._settled.set()
        if state in TERMINAL:
            self._followers.clear()
            self._done.set()

    def _meta(self, status: TaskStatus) -> dict[str, Any] | None:
        """An argentic status as an A2A status update's metadata, when a stream will see it."""
        return {"argentic": _status_meta(status)} if self._followers else None

    def _keep_status_message(self) -> None:
        # The message a status carried goes into the history when a newer one replaces it.
        if self.task.status.HasField("message"):
            self.task.history.append(self.task.status.message)
            self.task.status.ClearField("message")

    def _status_event(
        self, status: A2ATaskStatus, metadata: dict[str, Any] | None = None
    ) -> TaskStatusUpdateEvent:
        return TaskStatusUpdateEvent(
            task_id=self.id, context_id=self.task.context_id, status=status, metadata=metadata
        )

    def _add_artifact(self, artifact: Artifact, *, append: bool = False, last_chunk: bool) -> None:
        kept = next((a for a in self.task.artifacts if a.artifact_id == artifact.artifact_id), None)
        if kept is not None and append:
            kept.parts.extend(artifact.parts)
        elif kept is not None:
            kept.CopyFrom(artifact)
        else:
            self.task.artifacts.append(artifact)
        if self._followers:
            self._emit(
                TaskArtifactUpdateEvent(
                    task_id=self.id,
                    context_id=self.task.context_id,
                    artifact=artifact,
                    append=append,
                    last_chunk=last_chunk,
                )
            )

    def _emit(self, event: Event) -> None:
        for follower in list(self._followers):
            try:
                follower.queue.put_nowait(event)
            except asyncio.QueueFull:
                follower.fell_behind = True
                self.unfollow(follower)
                log.warning("a stream of A2A task %s fell behind; it ends", self.id)


def _settles(state: TaskState) -> bool:
    return state in TERMINAL or state in INTERRUPTED


def _status_meta(status: TaskStatus) -> dict[str, Any]:
    return status.model_dump(
        mode="json",
        exclude_none=True,
        include={"question_id", "state", "role", "asked_by", "parent_id", "root_id", "depth", "text"},
    )
