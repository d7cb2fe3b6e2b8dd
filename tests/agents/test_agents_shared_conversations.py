"""Replicas of a role share conversations through the store: two agents of one role on two
clients of mosquitto, one conversation of eight turns, and each turn sees every earlier one;
a restarted agent continues; a dead replica's turn blocks nobody past its lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from argentic import Agent, AgentClient
from argentic.errors import StorageError
from argentic.llm import ChatRequest, FunctionLLM
from argentic.messaging.dispatch import sender_key
from argentic.protocol import Answer, Message, Question
from argentic.storage import (
    ConversationRecords,
    MemoryStore,
    Once,
    Put,
    SQLiteStore,
    Step,
    Store,
    TaskRecords,
)
from argentic.testing.messagers import MakeMessager

TURNS = 8


def counting(name: str) -> FunctionLLM:
    """A model that answers with its replica's name and the user turns it was shown."""

    def reply(request: ChatRequest) -> str:
        return f"{name}:{sum(m.role == 'user' for m in request.messages)}"

    return FunctionLLM(reply)


@contextlib.asynccontextmanager
async def two_replicas(
    mqtt: MakeMessager, stores: tuple[Store, Store], *, timeout_s: float
) -> AsyncIterator[AgentClient]:
    """Two agents of role ``helper`` on two clients, each on its handle of the store (replica A
    and replica B), and a client asking the role."""
    first, second = stores
    async with (
        Agent(counting("A"), await mqtt(), role="helper", store=first),
        Agent(counting("B"), await mqtt(), role="helper", store=second),
    ):
        yield AgentClient(await mqtt(), "helper", timeout_s=timeout_s)


async def test_replicas_continue_each_others_conversation(
    mqtt: MakeMessager, store_pair: tuple[Store, Store]
) -> None:
    async with two_replicas(mqtt, store_pair, timeout_s=20) as client:
        answer = await client.answer("turn 1")
        replies = [answer.text]
        for turn in range(2, TURNS + 1):
            answer = await client.answer(f"turn {turn}", conversation_id=answer.conversation_id)
            replies.append(answer.text)
    # Every turn saw the whole conversation, whichever replica took it.
    assert [int(r.split(":")[1]) for r in replies] == list(range(1, TURNS + 1)), replies
    assert {r.split(":")[0] for r in replies} == {"A", "B"}, replies  # the broker shared the turns


async def test_concurrent_turns_of_one_conversation_run_one_after_the_other(
    mqtt: MakeMessager, store_pair: tuple[Store, Store]
) -> None:
    async with two_replicas(mqtt, store_pair, timeout_s=30) as client:
        opening = await client.answer("turn 1")
        cid = opening.conversation_id
        answers = await asyncio.gather(*(client.answer(f"turn {i}", conversation_id=cid) for i in range(6)))
    # Six turns at once across two replicas: each saw a history no other turn saw (2..7 user turns).
    assert sorted(int(a.text.split(":")[1]) for a in answers) == list(range(2, 8))


async def test_a_restarted_agent_continues_the_conversation(mqtt: MakeMessager, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    async with SQLiteStore(url) as store, Agent(counting("A"), await mqtt(), role="helper", store=store):
        client = AgentClient(await mqtt(), "helper", timeout_s=20)
        first = await client.answer("turn 1")
    # Every part gone; a new process would open the same file.
    async with SQLiteStore(url) as store, Agent(counting("B"), await mqtt(), role="helper", store=store):
        later = await AgentClient(client.messager, "helper", timeout_s=20).answer(
            "turn 2", conversation_id=first.conversation_id
        )
    assert later.text == "B:2"


async def test_a_dead_holders_turn_blocks_only_until_its_lease_expires(mqtt: MakeMessager) -> None:
    store = MemoryStore()
    records = ConversationRecords(store, lease_ttl_s=0.5)
    async with Agent(counting("A"), await mqtt(), role="helper", store=records):
        client = AgentClient(await mqtt(), "helper", timeout_s=20)
        first = await client.answer("turn 1")
        key = next(k for k in store._values if k.startswith("conversation:"))
        # A replica that died mid-turn left its lease behind (it will never release it).
        await store.add(key.replace("conversation:", "conversation-lease:", 1), b"dead", ttl_s=0.5)
        later = await client.answer("turn 2", conversation_id=first.conversation_id)
    assert later.text == "A:2"


async def test_a_history_that_does_not_parse_is_reported_and_the_conversation_starts_afresh(
    mqtt: MakeMessager, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    async with Agent(counting("A"), await mqtt(), role="helper", store=store):
        client = AgentClient(await mqtt(), "helper", timeout_s=20)
        first = await client.answer("turn 1")
        key = next(k for k in store._values if k.startswith("conversation:"))
        await store.set(key, b'[{"role": "nobody", "content": 7}]')  # edited by hand
        with caplog.at_level(logging.ERROR, logger="argentic.storage.records"):
            later = await client.answer("turn 2", conversation_id=first.conversation_id)
    assert later.text == "A:1"
    assert any("does not parse" in r.getMessage() for r in caplog.records)


async def test_a_store_that_fails_gives_a_storage_unavailable_error_reply(
    mqtt: MakeMessager, tmp_path: Path
) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'store.db'}")
    await store.start()
    async with Agent(counting("A"), await mqtt(), role="helper", store=store):
        client = AgentClient(await mqtt(), "helper", timeout_s=20)
        assert (await client.answer("turn 1")).text == "A:1"
        await store.stop()  # the store goes away while the agent serves
        with pytest.raises(StorageError) as caught:
            await client.answer("turn 2")
        assert caught.value.code == "storage_unavailable"
        await store.start()  # back: the agent serves again
        assert (await client.answer("turn 3")).text == "A:1"


async def test_a_question_sent_many_times_to_two_replicas_is_answered_once(
    mqtt: MakeMessager, store_pair: tuple[Store, Store], caplog: pytest.LogCaptureFixture
) -> None:
    asked: list[str] = []

    def replica(name: str) -> FunctionLLM:
        async def reply(request: ChatRequest) -> str:
            asked.append(name)
            await asyncio.sleep(0.5)  # copies arrive while it works, and after
            return f"answered by {name}"

        return FunctionLLM(reply)

    first, second = store_pair
    asker = await mqtt()
    replies: asyncio.Queue[Message] = asyncio.Queue()
    inbox = f"{asker.topics.namespace}/clients/raw-asker/inbox"  # an asker of its own, not a messager
    await asker.subscribe(inbox, replies.put, model=Answer)
    question = Question(id="once", text="only once", reply_to=inbox)
    caplog.set_level(logging.INFO, "argentic.storage.records")
    async with (
        Agent(replica("A"), await mqtt(), role="helper", store=first),
        Agent(replica("B"), await mqtt(), role="helper", store=second),
    ):
        topic = asker.topics.agent_questions("helper")
        for copy in range(8):
            # Distinct message ids (the broker's and the messager's own duplicate checks are not
            # what is tested); one question id and asker: the same question each time.
            await asker.publish(topic, question.model_copy(update={"correlation_id": f"c{copy}"}))
            await asyncio.sleep(0.15 if copy < 4 else 0.4)
        first_reply = await asyncio.wait_for(replies.get(), 10)
        await asyncio.sleep(1.0)  # the copies' replies
    assert len(asked) == 1  # one model call for the question, across both replicas
    assert isinstance(first_reply, Answer) and first_reply.text == f"answered by {asked[0]}"
    more = [replies.get_nowait() for _ in range(replies.qsize())]
    assert all(isinstance(r, Answer) and r.text == first_reply.text for r in more)
    # The replica that did not answer received copies too, and sent the kept answer for them.
    assert "was answered already; sending the kept reply again" in caplog.text


class CountingStore(MemoryStore):
    """A memory store that counts its round trips (batches), but for the task statuses noted as
    progress, which go in batches of their own now and then (TaskRecords.flush)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    async def batch(self, *steps: Step) -> list[Any]:
        if not all(isinstance(step, Put) and step.key.endswith(":status") for step in steps):
            self.batches += 1
        return await super().batch(*steps)


async def test_a_turn_takes_two_round_trips_to_the_store(mqtt: MakeMessager) -> None:
    """The conversation's lease rides with the question's claim, and its history with the
    answer: two round trips a turn, whether the conversation is new or continued."""
    store = CountingStore()
    async with Agent(counting("A"), await mqtt(), role="helper", store=store):
        client = AgentClient(await mqtt(), "helper", timeout_s=20)
        answer = await client.answer("turn 1")
        counts = [store.batches]
        for turn in range(2, 5):
            answer = await client.answer(f"turn {turn}", conversation_id=answer.conversation_id)
            counts.append(store.batches)
        assert answer.text == "A:4"  # every turn saw the whole conversation
    turns = [after - before for before, after in zip([0, *counts], counts, strict=False)]
    assert turns == [2, 2, 2, 2], turns


class RecordingStore(MemoryStore):
    """A memory store that notes every step it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[Step] = []

    async def batch(self, *steps: Step) -> list[Any]:
        self.steps += steps
        return await super().batch(*steps)


async def test_an_answered_questions_claim_lapses_and_its_answer_is_one_record(mqtt: MakeMessager) -> None:
    """Once its reply is kept, a question's claim is left to lapse rather than deleted (a write
    for nothing: the kept reply answers any copy), and its answer is written with its last status
    as one record; a copy sent after the answer still gets the kept reply, from no second model
    call."""
    store = RecordingStore()
    calls: list[str] = []

    def reply(request: ChatRequest) -> str:
        calls.append(request.messages[-1].text)
        return "done"

    asker = await mqtt()
    replies: asyncio.Queue[Message] = asyncio.Queue()
    inbox = f"{asker.topics.namespace}/clients/raw-asker/inbox"
    await asker.subscribe(inbox, replies.put, model=Answer)
    question = Question(id="q-lapse", text="once", reply_to=inbox)
    topic = asker.topics.agent_questions("helper")
    async with Agent(FunctionLLM(reply), await mqtt(), role="helper", store=store):
        await asker.publish(topic, question)
        first = await asyncio.wait_for(replies.get(), 10)
    # Another replica (a fresh agent: the first one would drop the copy as a duplicate it saw)
    # gets a copy while the claim is still there, lapsing. A fresh listener hears the reply (the
    # first one would drop it too: the same message again).
    listener = await mqtt()
    await listener.subscribe(inbox, replies.put, model=Answer)
    async with Agent(FunctionLLM(reply), await mqtt(), role="helper", store=store):
        await asker.publish(topic, question.model_copy(update={"correlation_id": "copy"}))
        again = await asyncio.wait_for(replies.get(), 10)
    assert isinstance(first, Answer) and isinstance(again, Answer) and again.text == first.text == "done"
    assert calls == ["once"]
    claim = f"claim:question:{sender_key(question)}"
    assert [type(step).__name__ for step in store.steps if step.key == claim] == ["Add", "Add"]
    record = await TaskRecords(store).get(question.id)
    assert record is not None and record.status.state == "completed"
    assert record.answer is not None and record.answer.text == "done"
    written = [step.key for step in store.steps if isinstance(step, Put)]
    assert f"task:{question.id}:status" in written and f"task:{question.id}:answer" not in written


async def test_a_question_another_replica_answers_lets_the_conversations_lease_go(
    mqtt: MakeMessager, store_pair: tuple[Store, Store]
) -> None:
    """A question in a conversation takes the conversation's lease with its claim. When another
    replica holds the claim (here: put in the store by hand) and then keeps its reply, this one
    sends that reply and lets the lease go at once, so the conversation's next turn waits for
    nobody (a lease kept, and renewed, would block it)."""
    first, _ = store_pair
    asker = await mqtt()
    replies: asyncio.Queue[Message] = asyncio.Queue()
    inbox = f"{asker.topics.namespace}/clients/raw-asker/inbox"
    await asker.subscribe(inbox, replies.put, model=Answer)
    question = Question(id="turn-1", text="turn 1", reply_to=inbox, conversation_id="c1")
    once = Once(first)
    assert await first.add(f"claim:question:{sender_key(question)}", b"another replica", ttl_s=30)
    async with Agent(counting("A"), await mqtt(), role="helper", store=first):
        topic = asker.topics.agent_questions("helper")
        await asker.publish(topic, question)
        await asyncio.sleep(0.5)  # it waits for the other replica's reply, holding the lease
        kept = Answer(question_id=question.id, conversation_id="c1", text="kept by the other replica")
        await once.keep(f"question:{sender_key(question)}", kept)
        answer = await asyncio.wait_for(replies.get(), 10)
        assert isinstance(answer, Answer) and answer.text == kept.text
        second_turn = Question(id="turn-2", text="turn 2", reply_to=inbox, conversation_id="c1")
        await asker.publish(topic, second_turn)
        answer = await asyncio.wait_for(replies.get(), 5)
    assert isinstance(answer, Answer) and answer.text == "A:1", answer  # turn 1 was the other's
