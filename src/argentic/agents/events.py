"""Progress and token events of one question, published on ``{ns}/agents/{role}/events/{question_id}``."""

from __future__ import annotations

import logging
from typing import Any

from argentic.agents.loop import EventSink
from argentic.messaging import Messager
from argentic.protocol import Progress, ProgressStage, Token

log = logging.getLogger(__name__)


class MqttEvents(EventSink):
    """Publishes one question's events. Failing to publish never fails the question."""

    def __init__(self, messager: Messager, role: str, question_id: str, *, streaming: bool = False) -> None:
        self.messager = messager
        self.topic = messager.topics.agent_events(role, question_id)
        self.question_id = question_id
        self.streaming = streaming
        self._index = 0

    async def progress(
        self,
        stage: ProgressStage,
        *,
        tool: str | None = None,
        arguments: dict[str, Any] | None = None,
        detail: str | None = None,
    ) -> None:
        event = Progress(
            question_id=self.question_id, stage=stage, tool=tool, arguments=arguments, detail=detail
        )
        try:
            await self.messager.publish(self.topic, event)
        except Exception as exc:
            log.warning("could not publish progress on %s: %s", self.topic, exc)

    async def token(self, text: str) -> None:
        event = Token(question_id=self.question_id, index=self._index, text=text)
        self._index += 1
        try:
            # Tokens are many and each is superseded by the answer: QoS 0 is enough.
            await self.messager.publish(self.topic, event, qos=0)
        except Exception as exc:
            log.warning("could not publish a token on %s: %s", self.topic, exc)
