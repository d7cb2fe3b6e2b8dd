"""Progress and token events of one question, published on ``{ns}/agents/{role}/events/{question_id}``,
and its finished steps, recorded in the store when the agent has one."""

from __future__ import annotations

import logging
from typing import Any

from argentic.agents.loop import EventSink, LoopState
from argentic.errors import StorageError
from argentic.messaging import Messager
from argentic.protocol import Progress, ProgressStage, Token
from argentic.storage import TaskRecords

log = logging.getLogger(__name__)


class MqttEvents(EventSink):
    """Publishes one question's events. Failing to publish never fails the question."""

    def __init__(
        self,
        messager: Messager,
        role: str,
        question_id: str,
        *,
        streaming: bool = False,
        steps: TaskRecords | None = None,
    ) -> None:
        self.messager = messager
        self.topic = messager.topics.agent_events(role, question_id)
        self.question_id = question_id
        self.streaming = streaming
        #: Where each finished round of tool calls is recorded, for a replica taking over.
        self.steps = steps
        #: Whether a step was recorded (and is to be dropped once the question is answered).
        self.recorded = False
        self._index = 0

    async def checkpoint(self, state: LoopState) -> None:
        if self.steps is None:
            return
        try:
            await self.steps.put_steps(self.question_id, state)
            self.recorded = True
        except StorageError as exc:
            # The question goes on; only a takeover after this replica died would redo the step.
            log.warning("could not record a step of %s: %s", self.question_id, exc)

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
