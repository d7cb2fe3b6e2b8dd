"""Request/response: in one process, across two processes, timeouts and error replies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from messaging_support import BrokerUnderTest, start_peer, stop_peer

from argentic.errors import NotConnectedError, RequestTimeoutError
from argentic.messaging import Messager
from argentic.protocol import Answer, ErrorInfo, ErrorReply, Question

Connect = Callable[..., Awaitable[Messager]]


@pytest.fixture
async def responder_process(
    broker: BrokerUnderTest, namespace: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await start_peer("responder", broker, namespace)
    yield process
    await stop_peer(process)


async def test_request_response_in_process(connect: Connect) -> None:
    requester, responder = await connect(), await connect()

    async def answer(question: Question) -> None:
        await responder.reply(
            question, Answer(question_id=question.id, conversation_id="c", text=question.text[::-1])
        )

    topic = responder.topics.agent_questions("echo")
    await responder.subscribe(topic, answer, model=Question)
    replies = await asyncio.gather(
        *(
            requester.request(topic, Question(text=f"abc{i}"), response_model=Answer, timeout=10)
            for i in range(10)
        )
    )
    assert [r.text for r in replies if isinstance(r, Answer)] == [f"{i}cba" for i in range(10)]
    assert requester.pending_requests == 0


async def test_a_request_nobody_heard_is_sent_again_until_answered(connect: Connect) -> None:
    requester, responder = await connect(), await connect()
    topic = responder.topics.agent_questions("late")
    heard: list[str] = []

    async def answer(question: Question) -> None:
        heard.append(question.id)
        await responder.reply(question, Answer(question_id=question.id, conversation_id="c", text="late"))

    asking = asyncio.ensure_future(
        requester.request(topic, Question(text="anyone?"), response_model=Answer, timeout=20, retry_after=0.2)
    )
    await asyncio.sleep(0.3)  # the first copy went where nobody listens
    await responder.subscribe(topic, answer, model=Question)
    reply = await asyncio.wait_for(asking, 20)
    assert isinstance(reply, Answer) and reply.text == "late"
    assert len(heard) == 1 and requester.pending_requests == 0


async def test_request_response_across_processes(
    connect: Connect, responder_process: asyncio.subprocess.Process
) -> None:
    requester = await connect()
    reply = await requester.request(
        requester.topics.agent_questions("echo"),
        Question(text="from another process"),
        response_model=Answer,
        timeout=30,
    )
    assert isinstance(reply, Answer)
    assert reply.text == "FROM ANOTHER PROCESS"
    assert requester.pending_requests == 0


async def test_error_reply_is_returned(connect: Connect) -> None:
    requester, responder = await connect(), await connect()

    async def refuse(question: Question) -> None:
        error = ErrorReply(request_id=question.id, error=ErrorInfo(code="internal", message="no"))
        await responder.reply(question, error)

    topic = responder.topics.agent_questions("refuser")
    await responder.subscribe(topic, refuse, model=Question)
    reply = await requester.request(topic, Question(text="please"), response_model=Answer, timeout=10)
    assert isinstance(reply, ErrorReply)
    assert reply.error.code == "internal"


async def test_request_timeout_leaves_no_pending_future(connect: Connect) -> None:
    requester = await connect()
    with pytest.raises(RequestTimeoutError, match="no reply"):
        await requester.request(
            requester.topics.agent_questions("nobody"), Question(text="hello?"), timeout=0.3
        )
    assert requester.pending_requests == 0


async def test_a_late_reply_after_timeout_is_ignored(connect: Connect) -> None:
    requester, responder = await connect(), await connect()
    replied = asyncio.Event()

    async def slow(question: Question) -> None:
        await asyncio.sleep(0.5)
        await responder.reply(question, Answer(question_id=question.id, conversation_id="c"))
        replied.set()

    topic = responder.topics.agent_questions("slow")
    await responder.subscribe(topic, slow, model=Question)
    with pytest.raises(RequestTimeoutError):
        await requester.request(topic, Question(text="hurry"), timeout=0.1)
    await asyncio.wait_for(replied.wait(), 10)
    await asyncio.sleep(0.1)
    assert requester.pending_requests == 0
    assert requester.is_connected


async def test_disconnect_fails_waiting_requests(connect: Connect) -> None:
    requester = await connect()
    waiting = asyncio.create_task(
        requester.request(requester.topics.agent_questions("void"), Question(text="?"), timeout=30)
    )
    await asyncio.sleep(0.1)
    await requester.disconnect()
    with pytest.raises(NotConnectedError):
        await asyncio.wait_for(waiting, 10)
    assert requester.pending_requests == 0
    with pytest.raises(NotConnectedError):
        await requester.publish(requester.topics.agent_questions("void"), Question(text="?"))
