"""Conversations: each question runs in its own history, and a conversation id continues one.

The store is bounded twice: at most ``max_conversations`` (the least recently used is forgotten)
and at most ``max_messages`` per conversation (the oldest whole turns are dropped, never a tool
result without the assistant message that asked for it). Questions in the same conversation run
one after the other (each conversation has a lock); different conversations run concurrently.

With ``records`` (a :class:`~argentic.storage.ConversationRecords` on a shared store) the history
lives in the store: any replica of the role continues any conversation with its whole history,
and the turns of one conversation run one after the other across replicas (the store's lease).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from argentic.llm import ChatMessage
from argentic.protocol import Question
from argentic.storage import ConversationRecords, Lease, Step


@dataclass
class StoreTurn:
    """A question's turn whose store work rides on the question's own round trips: ``lease``,
    the conversation's lease taken with the question's claim (its history read), and ``steps``,
    the history saved and the lease let go, for the agent to run with the answer it keeps."""

    lease: Lease | None = None
    steps: list[Step] = field(default_factory=list)


@dataclass
class Conversation:
    id: str
    messages: list[ChatMessage] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # questions holding or waiting for the lock; such a conversation is never evicted


class ConversationStore:
    """Per-conversation histories (without the system prompt, which the agent adds per request)."""

    def __init__(
        self,
        *,
        max_conversations: int = 1000,
        max_messages: int = 200,
        records: ConversationRecords | None = None,
    ) -> None:
        self.max_conversations = max_conversations
        self.max_messages = max_messages
        self.records = records
        self._conversations: OrderedDict[str, Conversation] = OrderedDict()

    def __len__(self) -> int:
        return len(self._conversations)

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self._conversations

    def history(self, conversation_id: str) -> list[ChatMessage]:
        conversation = self._conversations.get(conversation_id)
        return list(conversation.messages) if conversation else []

    @asynccontextmanager
    async def open(
        self, conversation_id: str, *, new: bool = False, turn: StoreTurn | None = None
    ) -> AsyncIterator[Conversation]:
        """Hold ``conversation_id`` (created if new) for one question. ``new``: the id was just
        made, so no other replica can hold it or have turns of it (the store is only written).
        ``turn``: the question's store work done with its own round trips (the lease taken with
        its claim, the history saved with its answer)."""
        conversation = self._conversations.get(conversation_id)
        if conversation is None:
            conversation = self._conversations[conversation_id] = Conversation(conversation_id)
        self._conversations.move_to_end(conversation_id)
        conversation.users += 1
        try:
            records = self.records
            # The store's history and turn, when it may have any (not for an id just made).
            lease = None
            if records is not None and not new:
                lease = turn.lease if turn is not None else None
                if lease is None or lease.key != records.lease_key(conversation_id):
                    lease = records.lease(conversation_id)
            async with conversation.lock, lease if lease is not None else contextlib.nullcontext():
                if lease is not None:
                    # Another replica may have had the last turns: the store's history (read
                    # with the lease) is the one.
                    conversation.messages = ConversationRecords.history(conversation_id, lease.values[0])
                yield conversation
                conversation.messages = trim(conversation.messages, self.max_messages)
                if records is not None:
                    save = records.put(conversation_id, conversation.messages)
                    if turn is not None:  # saved, and the turn let go, with the question's answer
                        turn.steps += [save, *(lease.hand_over() if lease is not None else [])]
                    else:  # saved, and the turn let go, in one round trip
                        await (lease.release(also=[save]) if lease is not None else records.store.batch(save))
        finally:
            conversation.users -= 1
            self._evict()

    def _evict(self) -> None:
        excess = len(self._conversations) - self.max_conversations
        if excess <= 0:
            return
        for cid in [cid for cid, c in self._conversations.items() if c.users == 0][:excess]:
            del self._conversations[cid]


def trim(messages: list[ChatMessage], max_messages: int) -> list[ChatMessage]:
    """The newest whole turns that fit in ``max_messages`` (a turn starts at a user message)."""
    if len(messages) <= max_messages:
        return messages
    starts = [i for i, m in enumerate(messages) if m.role == "user"]
    for start in starts:
        if len(messages) - start <= max_messages:
            return messages[start:]
    # Even the last turn is too long: keep it whole rather than break a tool call from its result.
    return messages[starts[-1] :] if starts else messages[-max_messages:]


def conversation_key(question: Question, conversation_id: str) -> str:
    """Where a question's conversation is kept. A conversation belongs to who asked (known by
    the reply topic): another sender naming the same id starts a conversation of its own instead
    of reading this one."""
    return f"{question.reply_to}\x00{conversation_id}" if question.reply_to else conversation_id
