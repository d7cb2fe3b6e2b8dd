"""What agents keep in the store, written once for every backend: conversation histories, the
lease that makes the turns of one conversation run one after the other across replicas, and
each question's task on record.

A lease is a key only its holder's token may renew or delete (``add``, ``replace_if``,
``delete_if``); it expires after ``ttl_s`` unless renewed, so a holder that died blocks nobody for
longer than that. A history that does not parse (edited by hand, written by a newer version) is
reported and the conversation starts afresh; it never stops the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Annotated, TypeVar

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from argentic.deprecation import renamed
from argentic.errors import LeaseTimeoutError, MalformedMessageError, StorageError
from argentic.llm import ChatMessage
from argentic.protocol import Answer, Message, TaskRecord, TaskStatus, parse_message
from argentic.storage.base import Add, Delete, DeleteIf, Get, Put, Step, Store

log = logging.getLogger(__name__)

B = TypeVar("B", bound=BaseModel)

_HISTORY = TypeAdapter(list[ChatMessage])

#: How long a conversation is kept after its last turn (seconds; storage.conversation_ttl_s).
CONVERSATION_TTL_S = 7 * 24 * 3600.0


class Lease:
    """One holder at a time for ``key`` across every process on the store::

    async with Lease(store, "conversation-lease:c1", ttl_s=30, wait_s=600):
        ...  # renewed every ttl_s / 3 while here

    ``read`` names keys read in the same round trip as each try to take it (:attr:`values`), and
    :meth:`release` writes what it is given in the same round trip as letting go.
    """

    def __init__(
        self, store: Store, key: str, *, ttl_s: float = 30.0, wait_s: float = 600.0, read: Sequence[str] = ()
    ) -> None:
        self.store = store
        self.key = key
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self.read = list(read)
        self.token = uuid.uuid4().hex.encode()
        self._renewing: asyncio.Task[None] | None = None
        #: False once a renewal found the lease taken (it had expired): the work is no longer alone.
        self.held = False
        #: The values of the keys ``read`` names, as of the last try to take the lease.
        self.values: list[bytes | None] = []

    async def __aenter__(self) -> Lease:
        # A lease already taken (with other steps, see take_steps) is entered as it is.
        if not self.held and not await self.acquire(self.wait_s):
            raise LeaseTimeoutError(f"{self.key} stayed held for {self.wait_s:g}s (another replica's turn)")
        return self

    async def acquire(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 (public API)
        *,
        wait_s: float | None = None,
    ) -> bool:
        """Take the lease, waiting up to ``timeout`` seconds (default 0: one try) for its holder;
        whether it was taken. Once taken it is renewed until released (``async with``'s exit, or
        :meth:`release`). ``wait_s=`` is the older, deprecated name of ``timeout=``."""
        timeout = renamed(timeout, wait_s, where="Lease.acquire", name="timeout", older_name="wait_s")
        deadline = time.monotonic() + (timeout or 0.0)
        pause = 0.01
        while not self.took(await self.store.batch(*self.take_steps())):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.2)  # a turn of a conversation takes a model call or more
        return True

    def take_steps(self) -> list[Step]:
        """The steps of one try to take the lease (and read the keys ``read`` names), to run with
        others in one round trip; their outcomes go to :meth:`took`."""
        return [Add(self.key, self.token, self.ttl_s), *(Get(key) for key in self.read)]

    def took(self, outcomes: Sequence[object]) -> bool:
        """Whether the try whose outcomes these are took the lease (renewed from now on)."""
        taken, *values = outcomes
        self.values = [value if isinstance(value, bytes) else None for value in values]
        if taken:
            self.held = True
            self._renewing = asyncio.create_task(self._renew(), name=f"lease {self.key}")
        return bool(taken)

    def hand_over(self) -> list[Step]:
        """Stop renewing the lease and give the step that lets it go, for the caller to run with
        its own (the lease expires by itself if that never runs)."""
        renewing, self._renewing = self._renewing, None
        if renewing is not None:
            renewing.cancel()
        held, self.held = self.held or renewing is not None, False
        return [DeleteIf(self.key, self.token)] if held else []

    def lapse(self) -> None:
        """Stop renewing the lease and leave it to expire by itself (within ``ttl_s``), not let go:
        for a claim whose request's reply is being kept (see :meth:`Once.keep_step`)."""
        self.hand_over()

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                if not await self.store.replace_if(self.key, self.token, self.token, self.ttl_s):
                    self.held = False
                    log.warning(
                        "lease %s expired before it was renewed; another holder may have it", self.key
                    )
                    return
            except StorageError as exc:
                log.warning("could not renew lease %s: %s", self.key, exc)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.release()

    async def release(self, also: Sequence[Step] = ()) -> None:
        """Let the lease go (only this holder's: one that expired and was taken stays taken), with
        ``also`` run before, in the same round trip (their failure is raised). Once released,
        releasing again does nothing (``also`` runs)."""
        renewing = self._renewing  # hand_over cancels it at once: no renewal follows the release
        steps = [*also, *self.hand_over()]
        try:
            try:
                if steps:
                    await self.store.batch(*steps)
            except StorageError as error:
                if also:
                    raise
                log.warning("could not release lease %s (it expires by itself): %s", self.key, error)
        finally:
            if renewing is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await renewing


class Claim(Lease):
    """A :class:`Lease` on a request, with what was read when it was taken (see :meth:`Once.take`)."""

    also: list[bytes | None]

    def __init__(self, store: Store, key: str, *, ttl_s: float, read: Sequence[str] = ()) -> None:
        super().__init__(store, key, ttl_s=ttl_s, wait_s=0.0, read=read)
        self.also = []


class ConversationRecords:
    """Conversation histories in the store, and the lease of each conversation's turn."""

    def __init__(
        self,
        store: Store,
        *,
        ttl_s: float | None = CONVERSATION_TTL_S,
        lease_ttl_s: float = 30.0,
        wait_s: float = 600.0,
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.lease_ttl_s = lease_ttl_s
        self.wait_s = wait_s

    def lease(self, conversation_id: str) -> Lease:
        """The lease of the conversation's turn; taking it reads the history (:meth:`history`)."""
        return Lease(
            self.store,
            self.lease_key(conversation_id),
            ttl_s=self.lease_ttl_s,
            wait_s=self.wait_s,
            read=[self._key(conversation_id)],
        )

    @staticmethod
    def lease_key(conversation_id: str) -> str:
        return f"conversation-lease:{conversation_id}"

    @staticmethod
    def _key(conversation_id: str) -> str:
        return f"conversation:{conversation_id}"

    async def load(self, conversation_id: str) -> list[ChatMessage]:
        return self.history(conversation_id, await self.store.get(self._key(conversation_id)))

    @staticmethod
    def history(conversation_id: str, data: bytes | None) -> list[ChatMessage]:
        """The history stored as ``data`` (read by :meth:`load`, or with the lease)."""
        if data is None:
            return []
        try:
            return _HISTORY.validate_json(data)
        except ValidationError as exc:
            log.error(
                "conversation %r: the stored history does not parse (%d bytes), starting afresh: %s",
                conversation_id,
                len(data),
                str(exc)[:300],
            )
            return []

    async def save(self, conversation_id: str, messages: list[ChatMessage]) -> None:
        await self.store.batch(self.put(conversation_id, messages))

    def put(self, conversation_id: str, messages: list[ChatMessage]) -> Put:
        """The step that saves the history (to run with the lease's release)."""
        return Put(self._key(conversation_id), _HISTORY.dump_json(messages), self.ttl_s)


def _status_key(question_id: str) -> str:
    return f"task:{question_id}:status"


def _answer_key(question_id: str) -> str:
    return f"task:{question_id}:answer"


#: What a task's status key holds: its record once finished, its last status before.
_STORED_TASK: TypeAdapter[TaskRecord | TaskStatus] = TypeAdapter(
    Annotated[TaskRecord | TaskStatus, Field(discriminator="type")]
)


def _json(message: BaseModel) -> bytes:
    return message.model_dump_json().encode()


#: Seconds a claim outlives a holder that died (renewed every third of it while the holder works):
#: how long a request waits before another replica takes it over.
CLAIM_TTL_S = 10.0

#: Longest pause between two looks for a reply another replica keeps (seconds).
KEPT_POLL_S = 0.5

#: How long a task's record is kept after its last change (seconds).
TASK_TTL_S = 7 * 24 * 3600.0


class TaskRecords:
    """Each question's task on record: its latest status, and its answer once done, so that a
    client learns how its question ended after reconnecting (``task_get``).

    A status is progress: it is noted at once and written within ``flush_s``, together with the
    other tasks' (a status superseded meanwhile is never written). The answer is written at once,
    with the task's last status, by :meth:`finish`."""

    def __init__(self, store: Store, *, ttl_s: float | None = TASK_TTL_S, flush_s: float = 0.2) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.flush_s = flush_s
        self._pending: dict[str, TaskStatus] = {}
        self._flushing: asyncio.Task[None] | None = None
        self._writing: set[str] = set()  # question ids whose status the running flush writes

    async def put_status(self, status: TaskStatus) -> None:
        self._pending[status.question_id] = status
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush_later(), name="argentic task records")

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.flush_s)
        await self.flush()

    async def flush(self) -> None:
        """Write the statuses noted so far (a stopping agent calls it)."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        self._writing = set(pending)
        try:
            await self.store.set_many({_status_key(q): _json(s) for q, s in pending.items()}, self.ttl_s)
        except StorageError as exc:
            log.warning("could not put %d task statuses on record: %s", len(pending), exc)
        finally:
            self._writing = set()

    async def finish(
        self,
        question_id: str,
        answer: Answer | None,
        also: Sequence[Step] = (),
        *,
        claim: Lease | None = None,
    ) -> None:
        """Write the task's answer (if any), its last status and ``also``, in one round trip that
        also lets ``claim`` go (after them)."""
        if question_id in self._writing and self._flushing is not None:
            await asyncio.shield(self._flushing)  # an earlier status must not land after the last
        steps = list(also)
        status = self._pending.pop(question_id, None)
        if status is not None and answer is not None:  # one record, one write
            record = TaskRecord(status=status, answer=answer)
            steps.append(Put(_status_key(question_id), _json(record), self.ttl_s))
        elif status is not None:
            steps.append(Put(_status_key(question_id), _json(status), self.ttl_s))
        elif answer is not None:
            steps.append(Put(_answer_key(question_id), _json(answer), self.ttl_s))
        if claim is not None:
            await claim.release(also=steps)
        elif steps:
            await self.store.batch(*steps)

    async def put_answer(self, answer: Answer) -> None:
        await self.finish(answer.question_id, answer)

    async def put_steps(self, question_id: str, steps: BaseModel) -> None:
        """The task's finished steps so far (the tool loop's state): a replica that takes the
        question over after this one died continues from them."""
        await self.store.set(self.steps_key(question_id), _json(steps), self.ttl_s)

    @staticmethod
    def steps_key(question_id: str) -> str:
        return f"task:{question_id}:steps"

    async def steps(self, question_id: str, model: type[B]) -> B | None:
        """The task's finished steps, if any were recorded (and they parse)."""
        return self.parse_steps(question_id, await self.store.get(self.steps_key(question_id)), model)

    @staticmethod
    def parse_steps(question_id: str, data: bytes | None, model: type[B]) -> B | None:
        """Steps as read by :meth:`steps` (or with other keys, by the caller)."""
        if data is None:
            return None
        try:
            return model.model_validate_json(data)
        except ValidationError as exc:
            log.error(
                "task %r: the recorded steps do not parse, starting over: %s", question_id, str(exc)[:300]
            )
            return None

    def drop_steps(self, question_id: str) -> Delete:
        """The step that forgets the task's steps (once it is answered)."""
        return Delete(self.steps_key(question_id))

    async def get(self, question_id: str) -> TaskRecord | None:
        """The task's record; None when there is none (or what is stored does not parse)."""
        status_data, answer_data = await self.store.get_many(
            [_status_key(question_id), _answer_key(question_id)]
        )
        noted = self._pending.get(question_id)
        try:
            # A finished task's record, or a status (an answer of its own: as older versions kept it).
            stored = _STORED_TASK.validate_json(status_data) if status_data is not None else None
            answer = Answer.model_validate_json(answer_data) if answer_data is not None else None
        except ValidationError as exc:
            log.error("task %r: the stored record does not parse, skipped: %s", question_id, str(exc)[:300])
            return None
        status = stored
        if isinstance(stored, TaskRecord):
            status, answer = stored.status, stored.answer or answer
        status = noted or status
        if status is None:
            return None
        return TaskRecord(status=status, answer=answer)


class Once:
    """A request worked on once across replicas, however often it is resent: the replica that
    takes its claim works on it and keeps its reply; a copy that reaches any other replica waits
    for that reply and sends it too (the copy may be the one its asker still waits on).

    A claim is a :class:`Lease`, renewed while its holder works: when the holder dies it lapses
    within ``claim_ttl_s``, and a replica holding a copy takes the request over. Replies are kept
    ``reply_ttl_s``."""

    def __init__(
        self, store: Store, *, claim_ttl_s: float = CLAIM_TTL_S, reply_ttl_s: float | None = 3600.0
    ) -> None:
        self.store = store
        self.claim_ttl_s = claim_ttl_s
        self.reply_ttl_s = reply_ttl_s

    async def take(
        self,
        key: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (public API)
        also: Sequence[str] = (),
        wait_s: float | None = None,
        alongside: Lease | None = None,
    ) -> Claim | Message | None:
        """This caller's claim on the request of ``key`` (it works on it, then keeps its reply and
        releases the claim); or the reply another replica kept; or None when another one still
        held it after ``timeout`` seconds (default 0: one look). The claim carries the values of
        the keys ``also`` names, read with the look for a kept reply, in the round trip that takes
        the claim. ``alongside``: another lease, tried in the same round trip as the first look
        (its holder lets it go). ``wait_s=`` is the older, deprecated name of ``timeout=``."""
        timeout = renamed(timeout, wait_s, where="Once.take", name="timeout", older_name="wait_s")
        claim = Claim(self.store, f"claim:{key}", ttl_s=self.claim_ttl_s, read=[f"reply:{key}", *also])
        deadline = time.monotonic() + (timeout or 0.0)
        pause = 0.02
        while True:
            if alongside is not None:  # the first look takes it too, in the same round trip
                steps = claim.take_steps()
                outcomes = await self.store.batch(*steps, *alongside.take_steps())
                taken = claim.took(outcomes[: len(steps)])
                alongside.took(outcomes[len(steps) :])
                alongside = None
            else:
                taken = await claim.acquire()
            data, *claim.also = claim.values
            kept = self._parse_reply(key, data)
            if taken:
                if kept is None:
                    return claim
                await claim.release()  # answered by a holder that let go
                return kept
            if kept is not None:
                return kept
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(pause)
            pause = min(pause * 2, KEPT_POLL_S)

    async def take_or_reply(
        self,
        key: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (public API)
        what: str,
        reply: Callable[[Message], Awaitable[None]],
        also: Sequence[str] = (),
        wait_s: float | None = None,
        alongside: Lease | None = None,
    ) -> tuple[bool, Claim | None]:
        """:meth:`take` for a request a replica received (``what`` names it in the log): whether
        to work on it, and the claim. Not when another replica answered it (its kept reply goes
        to ``reply``: this copy may be the one the sender still waits on) or still works on it
        after ``timeout`` seconds. When the store cannot say, work on it without a claim.
        ``wait_s=`` is the older, deprecated name of ``timeout=``."""
        timeout = renamed(timeout, wait_s, where="Once.take_or_reply", name="timeout", older_name="wait_s")
        try:
            taken = await self.take(key, timeout=timeout, also=also, alongside=alongside)
        except StorageError as exc:
            log.warning("the store cannot say whether %s was answered; working on it: %s", what, exc)
            return True, None
        if isinstance(taken, Claim):
            return True, taken
        if taken is not None:
            log.info("%s was answered already; sending the kept reply again", what)
            await reply(taken)
        return False, None

    async def keep(self, key: str, reply: Message) -> None:
        await self.store.batch(self.keep_step(key, reply))

    def keep_step(self, key: str, reply: Message, *, claim: Claim | None = None) -> Put:
        """The step :meth:`keep` runs, to run with others in one round trip. ``claim``, the
        request's, then lapses rather than being let go: once the reply is kept a copy gets it
        whether or not the claim is held, so letting it go would be a write for nothing."""
        if claim is not None:
            claim.lapse()
        return Put(f"reply:{key}", _json(reply), self.reply_ttl_s)

    async def kept_reply(self, key: str) -> Message | None:
        """The kept reply whatever its type (an answer, an error reply, a tool result), if it parses."""
        return self._parse_reply(key, await self.store.get(f"reply:{key}"))

    @staticmethod
    def _parse_reply(key: str, data: bytes | None) -> Message | None:
        if data is None:
            return None
        try:
            return parse_message(data)
        except MalformedMessageError as exc:
            log.error("the kept reply of %r does not parse, skipped: %s", key, exc)
            return None
