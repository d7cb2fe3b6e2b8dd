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
from types import TracebackType
from typing import TypeVar

from pydantic import TypeAdapter, ValidationError

from argentic.errors import LeaseTimeoutError, StorageError
from argentic.llm import ChatMessage
from argentic.protocol import Answer, Message, TaskRecord, TaskStatus
from argentic.storage.base import Store

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

_HISTORY = TypeAdapter(list[ChatMessage])

#: How long a conversation is kept after its last turn (seconds; storage.conversation_ttl_s).
CONVERSATION_TTL_S = 7 * 24 * 3600.0


class Lease:
    """One holder at a time for ``key`` across every process on the store::

    async with Lease(store, "conversation-lease:c1", ttl_s=30, wait_s=600):
        ...  # renewed every ttl_s / 3 while here
    """

    def __init__(self, store: Store, key: str, *, ttl_s: float = 30.0, wait_s: float = 600.0) -> None:
        self.store = store
        self.key = key
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self.token = uuid.uuid4().hex.encode()
        self._renewing: asyncio.Task[None] | None = None
        #: False once a renewal found the lease taken (it had expired): the work is no longer alone.
        self.held = False

    async def __aenter__(self) -> Lease:
        deadline = time.monotonic() + self.wait_s
        pause = 0.01
        while not await self.store.add(self.key, self.token, self.ttl_s):
            if time.monotonic() >= deadline:
                raise LeaseTimeoutError(
                    f"{self.key} stayed held for {self.wait_s:g}s (another replica's turn)"
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.2)  # a turn of a conversation takes a model call or more
        self.held = True
        self._renewing = asyncio.create_task(self._renew(), name=f"lease {self.key}")
        return self

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
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewing
        try:
            await self.store.delete_if(self.key, self.token)
        except StorageError as error:
            log.warning("could not release lease %s (it expires by itself): %s", self.key, error)


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
        return Lease(
            self.store, f"conversation-lease:{conversation_id}", ttl_s=self.lease_ttl_s, wait_s=self.wait_s
        )

    async def load(self, conversation_id: str) -> list[ChatMessage]:
        data = await self.store.get(f"conversation:{conversation_id}")
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
        await self.store.set(f"conversation:{conversation_id}", _HISTORY.dump_json(messages), self.ttl_s)


#: How long a task's record is kept after its last change (seconds).
TASK_TTL_S = 7 * 24 * 3600.0


class TaskRecords:
    """Each question's task on record: its latest status, and its answer once done, so that a
    client learns how its question ended after reconnecting (``task_get``)."""

    def __init__(self, store: Store, *, ttl_s: float | None = TASK_TTL_S) -> None:
        self.store = store
        self.ttl_s = ttl_s

    async def put_status(self, status: TaskStatus) -> None:
        await self.store.set(
            f"task:{status.question_id}:status", status.model_dump_json().encode(), self.ttl_s
        )

    async def put_answer(self, answer: Answer) -> None:
        await self.store.set(
            f"task:{answer.question_id}:answer", answer.model_dump_json().encode(), self.ttl_s
        )

    async def get(self, question_id: str) -> TaskRecord | None:
        """The task's record; None when there is none (or what is stored does not parse)."""
        status_data = await self.store.get(f"task:{question_id}:status")
        if status_data is None:
            return None
        answer_data = await self.store.get(f"task:{question_id}:answer")
        try:
            status = TaskStatus.model_validate_json(status_data)
            answer = Answer.model_validate_json(answer_data) if answer_data is not None else None
        except ValidationError as exc:
            log.error("task %r: the stored record does not parse, skipped: %s", question_id, str(exc)[:300])
            return None
        return TaskRecord(status=status, answer=answer)


class Once:
    """A request worked on once across replicas, however often it is resent: the first replica to
    claim its key runs it and keeps its reply; a duplicate that reaches any replica gets the kept
    reply (or nothing while the first one still works: its reply is on the way).

    A claim expires after ``claim_ttl_s``, so a request whose replica died is run again when it is
    resent after that; replies are kept ``reply_ttl_s``."""

    def __init__(self, store: Store, *, claim_ttl_s: float = 300.0, reply_ttl_s: float = 3600.0) -> None:
        self.store = store
        self.claim_ttl_s = claim_ttl_s
        self.reply_ttl_s = reply_ttl_s

    async def claim(self, key: str, ttl_s: float | None = None) -> bool:
        """Whether this caller is the one to run the request of ``key``."""
        return await self.store.add(f"once:{key}", b"1", self.claim_ttl_s if ttl_s is None else ttl_s)

    async def keep(self, key: str, reply: Message) -> None:
        await self.store.set(f"reply:{key}", reply.model_dump_json().encode(), self.reply_ttl_s)

    async def kept(self, key: str, model: type[M]) -> M | None:
        """The reply the replica that ran the request kept, if it has (and it parses)."""
        data = await self.store.get(f"reply:{key}")
        if data is None:
            return None
        try:
            return model.model_validate_json(data)
        except ValidationError as exc:
            log.error("the kept reply of %r does not parse, skipped: %s", key, str(exc)[:300])
            return None
