"""The caller's side of an agent: ask a role over MQTT, get the answer and, when wanted, its events.

::

    client = AgentClient(messager, role="assistant")
    print(await client.query("What is 2 + 2?"))                  # the answer's text
    result = await client.query("What is 2 + 2?", output=Sum)    # a validated Sum
    answer = await client.answer("What is 2 + 2?")               # the whole Answer message

    async with client.stream("What is 2 + 2?", output=Sum) as run:
        async for event in run:                                  # Progress and Token messages
            print(describe_event(event))
        answer = await run.answer()                              # the whole Answer, or
        total = await run.query()                                # its value (a validated Sum)

As on an :class:`~argentic.agents.Agent` in process: ``query`` gives the value, ``answer`` the
whole answer (``ask`` is the older name of ``query``); a run's ``answer()`` and ``query()`` the
same once the question is answered. Waits are ``timeout=`` seconds per call;
``timeout_s`` is the client's default.

The question goes to ``{ns}/agents/{role}/questions`` (any replica of the role takes it); events
come from ``{ns}/agents/{role}/events/{question_id}``; the answer, or an error reply, comes to the
messager's inbox. An error reply raises the class of its code (``except DeadlineError``,
``except TaskCanceledError``, ``except LLMUnavailableError``; see
:data:`argentic.errors.ERROR_CLASSES`), which is also an :class:`~argentic.errors.AgentReplyError`
with the wire ``.code`` and the agent's message as ``.reason``; no answer in time raises
:class:`~argentic.errors.RequestTimeoutError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar, overload

from pydantic import BaseModel

from argentic.deprecation import deprecated, renamed
from argentic.errors import ArgenticError, ArgumentError, RequestTimeoutError, UsageError
from argentic.errors_wire import error_from
from argentic.llm.types import OutputSpec
from argentic.messaging import Messager
from argentic.protocol import (
    Answer,
    Cancel,
    ErrorReply,
    Message,
    Presence,
    Progress,
    Question,
    TaskGet,
    TaskInput,
    TaskRecord,
    TaskStatus,
    Token,
    topic_level,
)

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

DEFAULT_TIMEOUT_S = 300.0
#: Events held for a reader that is not reading; more are dropped (the answer never is).
EVENT_QUEUE_SIZE = 10_000
#: Seconds given to sending a cancel when the asker stops waiting.
CANCEL_SEND_S = 5.0

Event = Progress | Token | TaskStatus
#: Hands a question's events to a callback, from a subscription that already covers them: called
#: with the role, the question id and the callback; returns the function that stops it.
EventFeed = Callable[[str, str, Callable[[Message], Awaitable[None]]], Callable[[], None]]


def describe_event(event: Message) -> str:
    """One line for a progress event (a token is its text)."""
    if isinstance(event, Token):
        return event.text
    if isinstance(event, TaskStatus):
        line = f"{event.asked_by or 'client'} -> {event.role}: {event.state}"
        if event.error is not None:
            return f"{line} ({event.error.code}: {event.error.message[:200]})"
        return f"{line} ({event.text[:200]})" if event.text else line
    if not isinstance(event, Progress):
        return event.type
    parts: list[str] = [event.stage]
    if event.tool:
        parts.append(event.tool)
    if event.arguments is not None:
        parts.append(json.dumps(event.arguments, ensure_ascii=False))
    if event.detail:
        parts.append(f"({event.detail[:200]})")
    return " ".join(parts)


def _output_value(answer: Answer, output: OutputSpec | None) -> Any:
    if output is None:
        return answer.text
    if isinstance(output, dict):
        return answer.data
    return output.model_validate(answer.data)


class AgentRun:
    """One question in flight: iterate it for its events; then ``await run.answer()`` gives the
    whole answer and ``await run.query()`` its value, as on :class:`AgentClient`.

    ``wait()`` and ``result()`` are the older names of ``answer()`` and ``query()`` (deprecated)."""

    def __init__(
        self,
        client: AgentClient,
        question: Question,
        output: OutputSpec | None,
        timeout: float,
        feed: EventFeed | None = None,
    ) -> None:
        self.client = client
        self.feed = feed
        self._unfeed: Callable[[], None] = lambda: None
        self.question = question
        self.output = output
        self.timeout = timeout
        self._events: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=EVENT_QUEUE_SIZE)
        self._subscription: Any = None
        self._reply: asyncio.Task[Answer | ErrorReply] | None = None
        self._dropped = 0
        #: The client working on the question, once its first status has said so.
        self.worker: str | None = None
        self._unwatch: Callable[[], None] = lambda: None

    async def __aenter__(self) -> AgentRun:
        messager = self.client.messager
        await messager.peers.start()
        self._unwatch = messager.peers.watch(self._on_client_gone)
        if self.feed is not None:
            self._unfeed = self.feed(self.client.role, self.question.id, self._on_event)
        else:
            self._subscription = await messager.subscribe(
                messager.topics.agent_events(self.client.role, self.question.id), self._on_event
            )
        self._reply = asyncio.create_task(
            messager.request(
                messager.topics.agent_questions(self.client.role),
                self.question,
                response_model=Answer,
                timeout=self.timeout,
            ),
            name=f"argentic-ask-{self.question.id}",
        )
        self._reply.add_done_callback(self._replied)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._unwatch()
        self._unfeed()
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            try:
                await self.client.messager.unsubscribe(subscription)
            except ArgenticError:
                log.debug("unsubscribe failed", exc_info=True)
        if exc_type is not None and self._reply is not None and not self._reply.done():
            self._reply.cancel()
            # The asker left (an error, Ctrl-C): the agent stops working on it too.
            await self.client.stop_waiting(self.question.id)

    async def _on_client_gone(self, client_id: str) -> None:
        # The replica working on the question died: the question goes out again for another
        # replica to take over (with a store, from the last step the dead one recorded).
        if client_id == self.worker and self._reply is not None and not self._reply.done():
            log.info("the replica working on %s is gone; asking again", self.question.id)
            messager = self.client.messager
            await messager.resend({messager.topics.agent_questions(self.client.role)}, {self.question.id})

    async def _on_event(self, event: Message) -> None:
        if not isinstance(event, Progress | Token | TaskStatus):
            return
        if isinstance(event, TaskStatus) and not self._believed(event):
            log.warning(
                "ignored a %s status of question %s from %s: not from the client working on it",
                event.state,
                event.question_id,
                event.client_id,
            )
            return
        if self._events.full():
            self._dropped += 1
            if self._dropped == 1:
                log.warning("events of question %s are not read fast enough; dropping", self.question.id)
            return
        self._events.put_nowait(event)

    def _believed(self, status: TaskStatus) -> bool:
        """A status of this run's question counts only when it is of this asker's task and from
        the client working on it (the first to report it, or after the broker reported that one
        gone, the replica that took the question over); statuses of the tasks it spawned are
        passed up by that client."""
        if status.question_id != self.question.id:
            return True
        if status.owner is not None and status.owner != self.client.messager.inbox:
            return False  # another asker's question with the same id
        if self.worker is None or (
            status.client_id != self.worker and self.client.messager.peers.gone(self.worker)
        ):
            self.worker = status.client_id  # the first to report it, or the replica taking it over
        return status.client_id == self.worker

    async def __aiter__(self) -> AsyncIterator[Event]:
        """The question's events as they come; ends once the answer (or error) has arrived."""
        reply = self._started()
        while not (reply.done() and self._events.empty()):
            event = await self._events.get()
            if event is not None:
                yield event

    def _replied(self, _: object) -> None:
        # Wakes __aiter__, which waits on the events alone (cheaper than waiting on two things
        # for each event); a queue that is full has events to give before it ends anyway.
        with contextlib.suppress(asyncio.QueueFull):
            self._events.put_nowait(None)

    def _started(self) -> asyncio.Task[Answer | ErrorReply]:
        if self._reply is None:
            raise UsageError("use the run inside `async with client.stream(...) as run:`")
        return self._reply

    async def give_input(self, status: TaskStatus, text: str) -> None:
        """Answer an ``input-required`` status of this run (the task goes on with ``text``)."""
        if status.reply_to is None:
            raise ArgumentError("this status asks for no input (it has no reply_to)")
        messager = self.client.messager
        # reply_to names this asker: the agent takes input only from the task's owner.
        await messager.reply(
            status, TaskInput(question_id=status.question_id, text=text, reply_to=messager.inbox)
        )

    async def cancel(self, reason: str | None = None) -> None:
        """Ask the agent to stop; the answer becomes a ``canceled`` error reply."""
        await self.client.cancel(self.question.id, reason)

    @property
    def answer(self) -> _RunAnswer:
        """``await run.answer()``: the whole answer message (tool calls, usage, conversation id),
        once it arrives; an error reply raises the class of its code, also an
        :class:`~argentic.errors.AgentReplyError`. (``run.answer.text``, from when this was a
        property, still reads the arrived answer, with a DeprecationWarning.)"""
        return _RunAnswer(self)

    async def _answer(self) -> Answer:
        reply = await self._started()
        if isinstance(reply, ErrorReply):
            raise error_from(reply.error)
        return reply

    async def query(self) -> Any:
        """The answer's value: its text, or with ``output`` the validated structured answer."""
        return _output_value(await self._answer(), self.output)

    # --- older names ----------------------------------------------------------------------------

    async def wait(self) -> Answer:
        """Deprecated: the older name of :meth:`answer`."""
        deprecated("AgentRun.wait() is deprecated: use `await run.answer()`")
        return await self._answer()

    async def result(self) -> Any:
        """Deprecated: the older name of :meth:`query`."""
        deprecated("AgentRun.result() is deprecated: use `await run.query()`")
        return await self.query()

    def _arrived(self) -> Answer:
        """The answer that has arrived (what ``run.answer.<field>``, the older property, reads)."""
        reply = self._started()
        if not reply.done():
            raise UsageError("the answer has not arrived yet: iterate the run or await run.answer()")
        result = reply.result()
        if isinstance(result, ErrorReply):
            raise error_from(result.error)
        return result


class _RunAnswer:
    """What ``run.answer`` is: called (``await run.answer()``), the whole answer; a field read
    off it (``run.answer.text``, from when ``answer`` was a property), that field of the answer
    that has arrived, with a DeprecationWarning."""

    def __init__(self, run: AgentRun) -> None:
        self._run = run

    def __call__(self) -> Coroutine[Any, Any, Answer]:
        return self._run._answer()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        deprecated(f"run.answer.{name} is deprecated: use `(await run.answer()).{name}`")
        return getattr(self._run._arrived(), name)


class AgentClient:
    """Asks one role's agents over ``messager`` (connected)."""

    def __init__(self, messager: Messager, role: str = "assistant", *, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.messager = messager
        self.role = topic_level(role, "agent role")
        self.timeout_s = timeout_s

    def question(
        self,
        text: str | Question,
        *,
        output: OutputSpec | None = None,
        conversation_id: str | None = None,
        stream: bool = False,
        deadline_s: float | None = None,
    ) -> Question:
        """The question message for ``text`` (a Question is taken as it is).

        ``deadline_s`` bounds the whole task, with every task it spawns, to that many seconds."""
        if isinstance(text, Question):
            return text
        schema = None
        if output is not None:
            schema = output if isinstance(output, dict) else output.model_json_schema()
        return Question(
            text=text,
            conversation_id=conversation_id,
            stream=stream,
            output_schema=schema,
            deadline=None if deadline_s is None else time.time() + deadline_s,
        )

    async def cancel(self, question_id: str, reason: str | None = None) -> None:
        """Stop the role's work on ``question_id`` and on the tasks it spawned (a question this
        client asked: the cancel names this client's inbox, and an agent takes a cancel only from
        the question's asker)."""
        cancel = Cancel(question_id=question_id, reason=reason, reply_to=self.messager.inbox)
        await self.messager.publish(self.messager.topics.agent_cancel(self.role), cancel)

    async def task(
        self,
        question_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (public API)
    ) -> TaskRecord:
        """Where the task of ``question_id`` is, and its answer once completed (A2A's tasks/get),
        from the store the role's agents keep: also after this client reconnected, or from another
        process. No such task on record raises :class:`~argentic.errors.TaskNotFoundError`."""
        reply = await self.messager.request(
            self.messager.topics.agent_tasks(self.role),
            TaskGet(question_id=question_id),
            response_model=TaskRecord,
            timeout=self.timeout_s if timeout is None else timeout,
        )
        if isinstance(reply, ErrorReply):
            raise error_from(reply.error)
        return reply

    async def stop_waiting(self, question_id: str, reason: str = "the asker stopped waiting") -> None:
        """Cancel ``question_id`` because nobody waits for its answer any more: best effort, bounded
        (the caller is already leaving, often because it was cancelled)."""
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(self.cancel(question_id, reason), CANCEL_SEND_S)

    def stream(
        self,
        text: str | Question,
        *,
        output: OutputSpec | None = None,
        conversation_id: str | None = None,
        tokens: bool = False,
        timeout: float | None = None,
        deadline_s: float | None = None,
        feed: EventFeed | None = None,
    ) -> AgentRun:
        """Ask, and follow the question's events: ``async with client.stream(...) as run``.

        ``tokens=True`` asks the agent to stream its answer's tokens as Token events; the events
        include the task's states (``task_status``), those of the tasks it spawned too. ``feed``
        takes them from a subscription the caller already holds (see :data:`EventFeed`) rather
        than one of the run's own: no subscribe round trip, and the broker sends each event once."""
        question = self.question(
            text, output=output, conversation_id=conversation_id, stream=tokens, deadline_s=deadline_s
        )
        return AgentRun(self, question, output, self.timeout_s if timeout is None else timeout, feed)

    async def answer(
        self,
        text: str | Question,
        *,
        output: OutputSpec | None = None,
        conversation_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (public API)
        deadline_s: float | None = None,
    ) -> Answer:
        """The whole answer message: text, structured data, tool calls, usage, conversation id.

        ``deadline_s`` bounds the task, with every task it spawns, to that many seconds."""
        question = self.question(text, output=output, conversation_id=conversation_id, deadline_s=deadline_s)
        try:
            reply = await self.messager.request(
                self.messager.topics.agent_questions(self.role),
                question,
                response_model=Answer,
                timeout=self.timeout_s if timeout is None else timeout,
            )
        except (asyncio.CancelledError, RequestTimeoutError):
            # Nobody waits for the answer any more: the agent stops working on it too.
            await self.stop_waiting(question.id)
            raise
        if isinstance(reply, ErrorReply):
            raise error_from(reply.error)
        return reply

    @overload
    async def query(
        self,
        text: str | Question,
        *,
        output: None = None,
        conversation_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (public API)
        deadline_s: float | None = None,
    ) -> str: ...

    @overload
    async def query(
        self,
        text: str | Question,
        *,
        output: type[T],
        conversation_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (public API)
        deadline_s: float | None = None,
    ) -> T: ...

    @overload
    async def query(
        self,
        text: str | Question,
        *,
        output: dict[str, Any],
        conversation_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (public API)
        deadline_s: float | None = None,
    ) -> Any: ...

    async def query(
        self,
        text: str | Question,
        *,
        output: OutputSpec | None = None,
        conversation_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (public API)
        deadline_s: float | None = None,
    ) -> Any:
        """The answer's value: its text, or with ``output`` (a pydantic model or JSON schema) the
        structured answer. :meth:`answer` gives the whole answer message."""
        answer = await self.answer(
            text, output=output, conversation_id=conversation_id, timeout=timeout, deadline_s=deadline_s
        )
        return _output_value(answer, output)

    #: The older name of :meth:`query` (same arguments, same value).
    ask = query

    async def online(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 (public API)
        *,
        wait_s: float | None = None,
    ) -> bool:
        """Whether an agent of the role says it is online (its retained presence, from a live
        client), waiting up to ``timeout`` seconds (default 1) for it. ``wait_s=`` is its older,
        deprecated name."""
        timeout = renamed(timeout, wait_s, where="AgentClient.online", name="timeout", older_name="wait_s")
        if timeout is None:
            timeout = 1.0
        peers = self.messager.peers
        await peers.start()
        seen: asyncio.Queue[Presence] = asyncio.Queue(maxsize=8)

        async def on_presence(presence: Presence) -> None:
            if not seen.full():
                seen.put_nowait(presence)

        subscription = await self.messager.subscribe(
            self.messager.topics.agent_status(self.role), on_presence, model=Presence
        )
        try:
            # A card counts only from a client that is online; a stale or forged one is rewritten
            # by a serving replica, so look on until then.
            async with asyncio.timeout(timeout):
                while True:
                    presence = await seen.get()
                    if presence.online and peers.online(presence.client_id):
                        return True
        except TimeoutError:
            return False
        finally:
            await self.messager.unsubscribe(subscription)
