"""How a question becomes what the model reads: the seam every question of an agent goes through.

A :class:`MessageBuilder` makes the user message for a question (:meth:`~MessageBuilder.build`),
adapts the messages of each model request made for it (:meth:`~MessageBuilder.prepare`), and says
what the conversation history keeps of that user message (:meth:`~MessageBuilder.remember`). The
default sends the question's text as is; the visual agent's builder attaches video frames.
"""

from __future__ import annotations

from argentic.llm import ChatMessage
from argentic.protocol import Question


class MessageBuilder:
    """The question's text as the user message; requests and history unchanged."""

    async def build(self, question: Question) -> ChatMessage:
        """The user message for ``question``."""
        return ChatMessage.user(question.text)

    def prepare(self, messages: list[ChatMessage]) -> list[ChatMessage]:
        """The messages one model request sends (system, history, the question, tool turns)."""
        return messages

    def remember(self, message: ChatMessage) -> ChatMessage:
        """What the conversation history keeps of the user message :meth:`build` made."""
        return message
