"""Tasks between agents: the state a question moves through, its limits, and its cancellation.

A question an agent of a team takes becomes a task. Its state follows A2A's (``submitted``,
``working``, ``input-required``, ``completed``, ``failed``, ``canceled``) and is published as a
:class:`~argentic.protocol.TaskStatus` on the question's events topic. The task runs in an
asyncio task of its own so that a ``cancel`` message, or the deadline the first asker set, can
stop it (and, through :mod:`argentic.agents.delegation`, the tasks it spawned).

:class:`TaskBoard` holds the running tasks of every agent on one messager, so cancellation costs
one subscription per role served, however many replicas of it run in the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from argentic.errors import (
    DeadlineError,
    DelegationCycleError,
    DepthLimitError,
    TaskCanceledError,
    TaskError,
)
from argentic.errors_wire import error_info
from argentic.messaging import Messager
from argentic.protocol import Cancel, ErrorInfo, Question, TaskState, TaskStatus

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Cancelled question ids remembered for questions that arrive after their cancel.
MAX_CANCELED = 1000


@dataclass
class Task:
    """A question being worked on by an agent of ``role``."""

    question: Question
    role: str
    topic: str  # its events topic
    runner: asyncio.Task[Any] | None = None
    canceled: str | None = None  # why, once cancelled

    @property
    def root_id(self) -> str:
        return self.question.root_id or self.question.id

    def remaining_s(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        if self.question.deadline is None:
            return None
        return self.question.deadline - time.time()


#: The task the current coroutine works for (set inside the task's runner).
current_task: ContextVar[Task | None] = ContextVar("argentic_current_task", default=None)


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
    """The running tasks of the agents on one messager (``TaskBoard.of(messager)``)."""

    _boards: ClassVar[weakref.WeakKeyDictionary[Messager, TaskBoard]] = weakref.WeakKeyDictionary()

    def __init__(self, messager: Messager) -> None:
        self.messager = messager
        self.running: dict[str, Task] = {}
        self._canceled: OrderedDict[str, str] = OrderedDict()
        self._roles: dict[str, tuple[int, Any]] = {}  # role -> (agents serving it, subscription)
        self._lock = asyncio.Lock()

    @classmethod
    def of(cls, messager: Messager) -> TaskBoard:
        board = cls._boards.get(messager)
        if board is None:
            board = cls._boards[messager] = cls(messager)
        return board

    # --- which roles listen for cancel messages -----------------------------------------------

    async def serve(self, role: str) -> None:
        """One more agent of ``role`` takes tasks here (the first subscribes to its cancels)."""
        async with self._lock:
            count, subscription = self._roles.get(role, (0, None))
            if subscription is None:
                subscription = await self.messager.subscribe(
                    self.messager.topics.agent_cancel(role), self._on_cancel, model=Cancel
                )
            self._roles[role] = (count + 1, subscription)

    async def leave(self, role: str) -> None:
        async with self._lock:
            count, subscription = self._roles.get(role, (0, None))
            if count > 1:
                self._roles[role] = (count - 1, subscription)
                return
            self._roles.pop(role, None)
            if subscription is not None:
                with contextlib.suppress(Exception):
                    await self.messager.unsubscribe(subscription)

    async def _on_cancel(self, cancel: Cancel) -> None:
        reason = cancel.reason or "canceled by the asker"
        task = self.running.get(cancel.question_id)
        if task is None:
            # Not here (another replica has it) or not yet arrived: refuse it if it comes.
            self._canceled[cancel.question_id] = reason
            while len(self._canceled) > MAX_CANCELED:
                self._canceled.popitem(last=False)
            return
        log.info("question %s canceled: %s", cancel.question_id, reason)
        task.canceled = reason
        if task.runner is not None:
            task.runner.cancel()

    # --- running ------------------------------------------------------------------------------

    async def run(self, task: Task, work: Callable[[], Awaitable[T]], *, max_depth: int) -> T:
        """Run ``work()`` as ``task``: refused when it closes a cycle, is too deep or late; stopped
        by a cancel or the deadline; its states published."""
        question = task.question
        try:
            reason = self._canceled.pop(question.id, None)
            if reason is not None:
                raise TaskCanceledError(f"question {question.id} was canceled before it started: {reason}")
            check_question(question, task.role, max_depth)
        except TaskError as exc:
            state: TaskState = "canceled" if exc.code == "canceled" else "failed"
            await self.status(task, "submitted", text=question.text)
            await self.status(task, state, error=ErrorInfo(code=exc.code, message=str(exc)))
            raise
        token = current_task.set(task)
        try:
            runner: asyncio.Task[T] = asyncio.ensure_future(work())
        finally:
            current_task.reset(token)
        task.runner = runner
        self.running[question.id] = task
        try:
            # The work starts at once; its first states go out meanwhile, in order.
            await self.status(task, "submitted", text=question.text)
            await self.status(task, "working")
            await asyncio.wait({runner}, timeout=task.remaining_s())
            if not runner.done():
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await runner
                raise DeadlineError(f"{task.role} did not finish before the task's deadline")
            if runner.cancelled():
                raise TaskCanceledError(f"{task.role} stopped: {task.canceled or 'canceled'}")
            result = runner.result()
        except asyncio.CancelledError:
            # The agent itself is stopping: stop the work too.
            runner.cancel()
            await self.status(task, "canceled", error=ErrorInfo(code="canceled", message="the agent stopped"))
            raise
        except Exception as exc:
            error = error_info(exc)
            await self.status(task, "canceled" if error.code == "canceled" else "failed", error=error)
            raise
        finally:
            self.running.pop(question.id, None)
        await self.status(task, "completed", text=_answer_text(result))
        return result

    async def status(
        self, task: Task, state: TaskState, *, text: str | None = None, error: ErrorInfo | None = None
    ) -> None:
        """Publish ``task``'s state on its events topic (never fails the task)."""
        try:
            await self.messager.publish(task.topic, task_status(task, state, self.messager, text, error))
        except Exception as exc:
            log.warning("could not publish the status of %s: %s", task.question.id, exc)


def task_status(
    task: Task,
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
        text=None if text is None else text[:2000],
        error=error,
    )


def _answer_text(result: object) -> str | None:
    text = getattr(result, "text", None)
    return text if isinstance(text, str) else None
