"""A second process for the messaging tests.

    python messaging_peer.py responder HOST PORT NAMESPACE PROTOCOL
        answers Questions on {ns}/agents/echo/questions with an Answer of the upper-cased text
    python messaging_peer.py will HOST PORT NAMESPACE PROTOCOL
        connects with a last will on {ns}/agents/dying/status, publishes online presence, waits

Each prints "ready" once subscribed, then runs until killed.
"""

from __future__ import annotations

import asyncio
import sys

from argentic.messaging import Messager, Will
from argentic.protocol import Answer, Presence, Question


async def main(mode: str, host: str, port: int, namespace: str, protocol: str) -> None:
    topics_ns = namespace
    will = None
    if mode == "will":
        will = Will(f"{topics_ns}/agents/dying/status", Presence(role="dying", online=False))
    messager = Messager(host, port, namespace=namespace, protocol=protocol, will=will)  # type: ignore[arg-type]
    await messager.connect()
    if mode == "responder":

        async def answer(question: Question) -> None:
            reply = Answer(question_id=question.id, conversation_id="peer", text=question.text.upper())
            await messager.reply(question, reply)

        await messager.subscribe(messager.topics.agent_questions("echo"), answer, model=Question)
    else:
        await messager.publish(
            messager.topics.agent_status("dying"), Presence(role="dying", online=True), retain=True
        )
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]))
