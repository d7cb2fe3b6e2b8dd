"""Request/response over publish/subscribe: one future per request, matched by correlation id.

A request goes out with this client's inbox as ``reply_to`` and a correlation id; the reply that
arrives on the inbox carrying that id completes the request's future, which is removed from the
pending map in every case.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from argentic.errors import MalformedMessageError, MessagingError, RequestTimeoutError
from argentic.messaging.decoding import decode, raw_correlation
from argentic.messaging.dispatch import sender_key
from argentic.messaging.limits import ReplyPolicy
from argentic.messaging.transport import Inbound
from argentic.observability import metrics
from argentic.protocol import ErrorReply, Message, new_id, parse_message

logger = logging.getLogger("argentic.messaging")

M = TypeVar("M", bound=Message)
REPLAY_MAX = 2000  # recent replies kept to answer a repeated request again
REPLAY_MAX_BYTES = 256 * 1024  # larger replies are not kept
#: Publishes a message on a topic and returns the size of its payload.
Publish = Callable[[str, Message], Coroutine[Any, Any, int]]


#: Seconds after the connection came back during which no copy of a request is sent (the
#: outbox's own copy has just gone).
JUST_BACK_S = 1.0


class Requests:
    """The requests waiting for their reply on ``inbox``."""

    def __init__(
        self,
        *,
        inbox: str,
        max_payload_bytes: int,
        publish: Publish,
        replies: ReplyPolicy | None = None,
        unsettled: Callable[[float], bool] = lambda _seconds: False,
    ) -> None:
        self.inbox = inbox
        # Whether the connection dropped or came back in the last given seconds: silence is then
        # explained by the broker's absence, and a copy sent now could reach a second replica
        # while the first one's answer is still coming.
        self._unsettled = unsettled
        self.replies = replies
        self.max_payload_bytes = max_payload_bytes
        self._publish = publish
        self._pending: dict[str, asyncio.Future[tuple[Message | None, bytes]]] = {}
        self._sent: dict[str, tuple[str, Message]] = {}  # correlation -> (topic, request), to resend
        # sender key of a request answered here -> (reply topic, reply): a repeated request whose
        # first reply was lost (its requester's session expired, say) is answered again.
        self._replies: OrderedDict[str, tuple[str, Message]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def fail_all(self, error: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)

    async def request(
        self,
        topic: str,
        message: Message,
        *,
        response_model: type[M] | None,
        timeout: float,  # noqa: ASYNC109
        retry_after: float | None = None,
    ) -> M | ErrorReply:
        """Publish ``message`` with this inbox as its reply topic and wait for the reply.

        Without a reply after ``retry_after`` seconds the same request (same id) is sent again, and
        again, until ``timeout``: a receiver that has it drops the copy, and another replica takes
        one that waited in the session of a replica that died.
        """
        # The message id is unique already: reusing it spares a uuid4 per request.
        correlation = message.correlation_id or message.id
        if correlation in self._pending:  # the same message requested twice at once
            correlation = new_id()
        expires_at = time.time() + timeout
        if message.expires_at is not None:
            expires_at = min(expires_at, message.expires_at)
        request = message.model_copy(
            update={"reply_to": self.inbox, "correlation_id": correlation, "expires_at": expires_at}
        )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Message | None, bytes]] = loop.create_future()
        self._pending[correlation] = future
        self._sent[correlation] = (topic, request)
        # Copies go out from a timer rather than from a wait with a timeout (which costs more than
        # the rest of the request): one at a time, and a copy that fails fails the request.
        timer: asyncio.TimerHandle | None = None
        copy: asyncio.Task[object] | None = None
        beats = 0

        def copy_failed(task: asyncio.Task[object]) -> None:
            error = None if task.cancelled() else task.exception()
            if error is not None and not future.done():
                future.set_exception(error)

        def send_again() -> None:
            nonlocal timer, copy, beats
            assert retry_after is not None
            timer = loop.call_later(retry_after, send_again)
            # Not while the connection is down or has just come back: the outbox holds the request
            # or has just sent it. Later, a copy goes: the responders may have lost it with the
            # broker, or died holding it, and their kept reply is what the copy brings back.
            if future.done() or (copy is not None and not copy.done()) or self._unsettled(JUST_BACK_S):
                return
            # One copy first. A broker hands a shared group's messages to its members in turn, the
            # session of a replica that died included, so a second silence sends two copies back
            # to back: they reach two members (replicas on one store work on a request once).
            beats += 1
            logger.info("no reply to %s %s yet; sending it again", type(message).__name__, message.id)
            metrics.request_resent("no_reply")
            copy = loop.create_task(self._send_copies(topic, request, 1 if beats == 1 else 2))
            copy.add_done_callback(copy_failed)

        try:
            async with asyncio.timeout(timeout):
                await self._publish(topic, request)
                if retry_after is not None:
                    timer = loop.call_later(retry_after, send_again)
                reply, payload = await future
        except TimeoutError:
            raise RequestTimeoutError(
                f"no reply to {type(message).__name__} {message.id} on {topic} within {timeout:g}s "
                "(is a responder subscribed and connected?)"
            ) from None
        finally:
            if timer is not None:
                timer.cancel()
            if copy is not None and not copy.done():
                copy.cancel()
            self._pending.pop(correlation, None)
            self._sent.pop(correlation, None)
        if isinstance(reply, ErrorReply):
            return reply
        if response_model is None:
            if reply is None:
                raise MalformedMessageError(f"the reply on {self.inbox} is not an argentic message")
            return reply  # type: ignore[return-value]
        if isinstance(reply, response_model):
            return reply
        return parse_message(payload, response_model)

    async def _send_copies(self, topic: str, request: Message, copies: int) -> None:
        # A broker hands a shared subscription's messages to its members in turn, the dead
        # session of a killed member included: consecutive copies reach different members.
        # Started together, the copies leave back to back, not interleaved with other requests'.
        await asyncio.gather(*(self._publish(topic, request) for _ in range(copies)))

    async def resend(self, topics: set[str], ids: set[str] | None = None) -> None:
        """Send the waiting requests to ``topics`` (those of ``ids``: all when None) again, under
        the same ids: a client that held some is gone."""
        for correlation, (topic, request) in list(self._sent.items()):
            future = self._pending.get(correlation)
            if future is None or future.done() or topic not in topics:
                continue
            if ids is not None and request.id not in ids:
                continue
            metrics.request_resent("responder_gone")
            try:
                await self._send_copies(topic, request, 2)
            except MessagingError as exc:
                logger.warning("could not send %s again: %s", request.id, exc)

    async def reply(self, request: Message, response: Message) -> None:
        if request.reply_to is None:
            raise MessagingError(
                f"{type(request).__name__} {request.id} has no reply_to: it is not a request"
            )
        if self.replies is not None:
            self.replies.check(request.reply_to)  # InvalidTopicError: not where answers may go
        correlation = request.correlation_id or (request.id if isinstance(request.id, str) else None)
        if response.correlation_id != correlation:
            response = response.model_copy(update={"correlation_id": correlation})
        if await self._publish(request.reply_to, response) <= REPLAY_MAX_BYTES:
            self._replies[sender_key(request)] = (request.reply_to, response)
            if len(self._replies) > REPLAY_MAX:
                self._replies.popitem(last=False)

    async def replay(self, request: Message) -> None:
        """A request seen before: send its reply again, if it was answered here and kept."""
        kept = self._replies.get(sender_key(request))
        if kept is not None:
            await self._publish(*kept)

    def on_reply(self, inbound: Inbound) -> None:
        """A message on the inbox: complete the request it answers, if one still waits."""
        payload = inbound.payload
        if len(payload) > self.max_payload_bytes:
            logger.warning("dropped an oversized reply on %s (%d bytes)", inbound.topic, len(payload))
            return
        message: Message | None
        correlation: str | None
        try:
            message = decode(payload, None)
            correlation = message.correlation_id
            if message.expired():
                logger.info("dropped expired reply %s on %s", message.id, inbound.topic)
                return
        except MalformedMessageError as exc:
            # Maybe a message type only the requester's response_model knows: find its correlation id.
            message = None
            correlation = raw_correlation(payload)
            if correlation is None:
                logger.warning("dropped a malformed reply on %s: %s", inbound.topic, exc)
                return
        if correlation is None and inbound.correlation_data is not None:
            correlation = inbound.correlation_data.decode(errors="replace")
        future = self._pending.get(correlation) if correlation is not None else None
        if future is None or future.done():
            logger.debug("dropped a reply on %s that no request waits for (%s)", inbound.topic, correlation)
            return
        future.set_result((message, payload))
