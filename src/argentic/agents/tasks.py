"""Tasks: the state a question an agent takes over MQTT moves through, its limits, its owner.

Every question an agent takes over MQTT becomes a task, for every kind of agent. Its state
follows A2A's (``submitted``, ``working``, ``input-required``, ``completed``, ``failed``,
``canceled``, ``rejected``) and is published as a :class:`~argentic.protocol.TaskStatus` on the
question's events topic. The task runs in an asyncio task of its own so that a ``cancel``
message, or the deadline the first asker set, can stop it (and, through
:mod:`argentic.agents.delegation`, the tasks it spawned).

A task belongs to whoever asked it, known by the question's ``reply_to``: tasks are keyed by
that owner and the question's id, and only the owner may cancel one or give it input. A cancel
from anyone else gets a ``forbidden`` error reply and changes nothing.

:class:`TaskBoard` holds the running tasks of every agent on one messager
(``messager.shared(TaskBoard)``), so cancellation costs one subscription per role served, however
many replicas of it run in the process; the messager closes it when it disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from argentic.deprecation import deprecated
from argentic.errors import (
    DeadlineError,
    DelegationCycleError,
    DelegationFailedError,
    DepthLimitError,
    ForbiddenError,
    TaskCanceledError,
    TaskError,
)
from argentic.errors_wire import error_info
from argentic.messaging import Messager
from argentic.observability import metrics
from argentic.protocol import Cancel, ErrorInfo, ErrorReply, Question, TaskState, TaskStatus, ToolResult
from argentic.storage import TaskRecords

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Cancelled question ids remembered for questions that arrive after their cancel.
MAX_CANCELED = 1000

#: Who owns a task: the question's ``reply_to`` (None: asked with no way to answer back).
TaskKey = tuple[str | None, str]

#: The state of a task refused by the task rules (a cycle, too deep, late, busy).
REFUSED: TaskState = "rejected"
#: Error codes of a delegate's refusal: the asking task goes on without it.
REFUSALS = frozenset({"delegation_cycle", "depth_limit"})


@dataclass
class AgentTask:
    """A question being worked on by an agent of ``role``."""

    question: Question
    role: str
    topic: str  # its events topic
    runner: asyncio.Task[Any] | None = None
    canceled: str | None = None  # why, once cancelled
    #: What the roles it asked answered: errors of those that failed, and how many answered.
    delegate_errors: list[ErrorInfo] = field(default_factory=list)
    delegates_answered: int = 0
    #: Where its states are written as they change (the agent's store), if anywhere.
    records: TaskRecords | None = None
    #: The state it was last given (None: none yet).
    state: TaskState | None = None

    @property
    def owner(self) -> str | None:
        """Whose task it is: where its asker takes replies."""
        return self.question.reply_to

    @property
    def key(self) -> TaskKey:
        return (self.owner, self.question.id)

    @property
    def root_id(self) -> str:
        return self.question.root_id or self.question.id

    def remaining_s(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        if self.question.deadline is None:
            return None
        return self.question.deadline - time.time()

    def record_delegation(self, result: ToolResult) -> None:
        """Note what a role this task asked answered (see :meth:`delegation_failure`)."""
        if result.ok:
            self.delegates_answered += 1
        elif result.error is not None and result.error.code not in REFUSALS:
            # A refusal by the task rules (a cycle, too deep) tells the model to answer itself;
            # any other error means the work it asked for was not done.
            self.delegate_errors.append(result.error)

    def delegation_failure(self) -> DelegationFailedError | None:
        """The error to end with when the task asked other roles and none of them answered: its
        answer would rest on nothing but their errors."""
        if self.delegates_answered or not self.delegate_errors:
            return None
        errors = "; ".join(f"{e.code}: {e.message}" for e in self.delegate_errors)
        return DelegationFailedError(
            f"every role {self.role} asked failed ({errors})",
            [e.model_dump(mode="json") for e in self.delegate_errors],
        )


#: The task the current coroutine works for (set inside the task's runner).
running_task: ContextVar[AgentTask | None] = ContextVar("argentic_running_task", default=None)

#: Older names of this module's (they shadowed asyncio's ``Task`` and ``current_task``): still
#: importable, with a DeprecationWarning.
_OLDER_NAMES = {"Task": "AgentTask", "current_task": "running_task"}


def __getattr__(name: str) -> Any:
    newer = _OLDER_NAMES.get(name)
    if newer is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    deprecated(f"{__name__}.{name} is deprecated: use {newer}")
    return globals()[newer]


def check_question(question: Question, role: str, max_depth: int) -> None:
    """Refuse a question that would close a cycle, is too deep, or is already late."""
    if role in question.chain:
        chain = " -> ".join([*question.chain, role])
        raise DelegationCycleError(
            f"{role} is already working on this task further up the chain ({chain}); answer without "
            f"asking {role} again"
        )
    if question.depth > max_depth:
        raise DepthLimitError(
            f"the chain of askers ({' -> '.join(question.chain)}) is {question.depth} deep; {role} "
            f"accepts at most {max_depth} (roles.{role}.max_depth)"
        )
    if question.deadline is not None and question.deadline <= time.time():
        raise DeadlineError(f"the task's deadline passed before {role} could start on it")


class TaskBoard:
    """The running tasks of the agents on one messager: ``messager.shared(TaskBoard)``."""

    def __init__(self, messager: Messager) -> None:
        self.messager = messager
        self.running: dict[TaskKey, AgentTask] = {}
        self._canceled: OrderedDict[TaskKey, str] = OrderedDict()
        self._roles: dict[str, tuple[int, Any]] = {}  # role -> (agents serving it, subscription)
        self._lock = asyncio.Lock()

    @classmethod
    def of(cls, messager: Messager) -> TaskBoard:
        """Deprecated: the older spelling of ``messager.shared(TaskBoard)``."""
        deprecated("TaskBoard.of(messager) is deprecated: use messager.shared(TaskBoard)")
        return messager.shared(cls)

    async def close(self) -> None:
        """Stop following cancels (the messager calls this when it disconnects)."""
        async with self._lock:
            roles, self._roles = self._roles, {}
        for _count, subscription in roles.values():
            if subscription is not None:
                with contextlib.suppress(Exception):
                    await self.messager.unsubscribe(subscription)

    # --- which roles listen for cancel messages -----------------------------------------------

    @property
    def roles(self) -> dict[str, int]:
        """The roles whose agents take tasks here, and how many agents each."""
        return {role: count for role, (count, _) in self._roles.items()}

    async def serve(self, role: str) -> None:
        """One more agent of ``role`` takes tasks here (the first subscribes to its cancels); the
        client's status says so (see :meth:`Messager.announce_roles`)."""
        async with self._lock:
            count, subscription = self._roles.get(role, (0, None))
            if subscription is None:
                subscription = await self.messager.subscribe(
                    self.messager.topics.agent_cancel(role), self._on_cancel, model=Cancel
                )
            self._roles[role] = (count + 1, subscription)
            await self.messager.announce_roles(self.roles)

    async def leave(self, role: str) -> None:
        async with self._lock:
            count, subscription = self._roles.get(role, (0, None))
            if count > 1:
                self._roles[role] = (count - 1, subscription)
            else:
                self._roles.pop(role, None)
                if subscription is not None:
                    with contextlib.suppress(Exception):
                        await self.messager.unsubscribe(subscription)
            await self.messager.announce_roles(self.roles)

    def held(self, question_id: str) -> list[AgentTask]:
        """The running tasks of that question id, whoever owns them."""
        return [task for (_, qid), task in self.running.items() if qid == question_id]

    async def _on_cancel(self, cancel: Cancel) -> None:
        reason = cancel.reason or "canceled by the asker"
        key: TaskKey = (cancel.reply_to, cancel.question_id)
        task = self.running.get(key)
        if task is None:
            others = self.held(cancel.question_id)
            if others:
                await self.refuse(cancel, others[0], "cancel")
                return
            # Not here (another replica has it) or not yet arrived: refuse it if it comes.
            self._canceled[key] = reason
            while len(self._canceled) > MAX_CANCELED:
                self._canceled.popitem(last=False)
            return
        log.info("question %s canceled: %s", cancel.question_id, reason)
        task.canceled = reason
        if task.runner is not None:
            task.runner.cancel()

    async def refuse(self, request: Cancel | Any, task: AgentTask, what: str) -> None:
        """Answer a cancel or an input from a client that does not own ``task`` with an error."""
        log.warning(
            "refused a %s of question %s from %s: the task belongs to %s",
            what,
            task.question.id,
            request.reply_to or "a sender with no reply_to",
            task.owner or "an asker with no reply_to",
        )
        if not request.reply_to:
            return
        error = ForbiddenError(f"question {task.question.id} is not yours: only its asker may {what} it")
        reply = ErrorReply(request_id=request.id, error=error_info(error))
        try:
            await self.messager.reply(request, reply)
        except Exception as exc:
            log.warning("could not send the refusal of a %s: %s", what, exc)

    # --- running ------------------------------------------------------------------------------

    async def run(
        self,
        task: AgentTask,
        work: Callable[[], Awaitable[T]],
        *,
        max_depth: int,
        slots: asyncio.Semaphore | None = None,
    ) -> T:
        """Run ``work()`` as ``task``: refused when it closes a cycle, is too deep or late; stopped
        by its owner's cancel or the deadline; its states published. ``slots`` bounds how many
        tasks work at once: a task waits for one in ``submitted`` (waiting holds no handler)."""
        question = task.question
        try:
            reason = self._canceled.pop(task.key, None)
            if reason is not None:
                raise TaskCanceledError(f"question {question.id} was canceled before it started: {reason}")
            check_question(question, task.role, max_depth)
        except TaskError as exc:
            state: TaskState = "canceled" if exc.code == "canceled" else REFUSED
            await self.status(task, "submitted", text=question.text)
            await self.status(task, state, error=error_info(exc))
            raise
        await self.status(task, "submitted", text=question.text)

        async def working() -> T:
            if slots is None:
                await self.status(task, "working")
                return await work()
            async with slots:
                await self.status(task, "working")
                return await work()

        token = running_task.set(task)
        try:
            runner: asyncio.Task[T] = asyncio.ensure_future(working())
        finally:
            running_task.reset(token)
        task.runner = runner
        self.running[task.key] = task
        try:
            await asyncio.wait({runner}, timeout=task.remaining_s())
            if not runner.done():
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await runner
                raise DeadlineError(f"{task.role} did not finish before the task's deadline")
            if runner.cancelled():
                raise TaskCanceledError(f"{task.role} stopped: {task.canceled or 'canceled'}")
            result = runner.result()
            failure = task.delegation_failure()
            if failure is not None:
                raise failure
        except asyncio.CancelledError:
            # The agent itself is stopping: stop the work too.
            runner.cancel()
            await self.status(task, "canceled", error=error_info(TaskCanceledError("the agent stopped")))
            raise
        except Exception as exc:
            error = error_info(exc)
            await self.status(task, "canceled" if error.code == "canceled" else "failed", error=error)
            raise
        finally:
            self.running.pop(task.key, None)
        await self.status(task, "completed", text=_answer_text(result))
        return result

    async def status(
        self, task: AgentTask, state: TaskState, *, text: str | None = None, error: ErrorInfo | None = None
    ) -> None:
        """Publish ``task``'s state on its events topic, and put it on record (never fails the task)."""
        status = task_status(task, state, self.messager, text, error)
        metrics.task_state(task.role, task.state, state)
        task.state = state
        try:
            await self.messager.publish(task.topic, status)
        except Exception as exc:
            log.warning("could not publish the status of %s: %s", task.question.id, exc)
        if task.records is not None:
            try:
                await task.records.put_status(status)
            except Exception as exc:
                log.warning("could not put the status of %s on record: %s", task.question.id, exc)


def task_status(
    task: AgentTask,
    state: TaskState,
    messager: Messager,
    text: str | None = None,
    error: ErrorInfo | None = None,
) -> TaskStatus:
    question = task.question
    return TaskStatus(
        question_id=question.id,
        state=state,
        role=task.role,
        asked_by=question.asked_by,
        parent_id=question.parent_id,
        root_id=task.root_id,
        depth=question.depth,
        client_id=messager.client_id,
        owner=task.owner,
        text=None if text is None else text[:2000],
        error=error,
    )


def _answer_text(result: object) -> str | None:
    text = getattr(result, "text", None)
    return text if isinstance(text, str) else None
