"""What argentic accepts from the wire before acting on it: topic shapes, where replies may go,
and how big a value may be. See ``docs/security.md``.

A broker disconnects a client for a topic it cannot take (mosquitto: more than 200 levels), so
every topic is checked before it is published: a bad one fails that publish alone instead of
taking the connection down. Replies go only to topics matching the reply filters (by default the
clients' inboxes, ``{ns}/clients/+/inbox``), so a request cannot make a service publish where its
sender may not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from argentic.errors import InvalidTopicError, MalformedMessageError
from argentic.protocol import matches

#: Levels in a topic argentic publishes to or replies on (brokers refuse a few hundred).
MAX_TOPIC_LEVELS = 32
#: Bytes in such a topic (MQTT allows 65,535).
MAX_TOPIC_BYTES = 1024
#: Digits of an integer in a result: Python's own int/str conversion limit is 4,300.
MAX_INT_DIGITS = 4000
#: Nesting of lists and objects in a result.
MAX_DEPTH = 64
#: Times a queued publish is sent before it is dropped: a broker that drops the connection at
#: each attempt refuses that publish, and resending it would take the connection down forever.
MAX_SEND_ATTEMPTS = 3

DEFAULT_REPLY_FILTER = "{namespace}/clients/+/inbox"


def check_topic(topic: str, what: str = "topic") -> str:
    """``topic`` if argentic may publish to it, else :class:`InvalidTopicError` saying why."""
    if not isinstance(topic, str) or not topic:
        raise InvalidTopicError(f"{what} must be a non-empty string")
    if "+" in topic or "#" in topic or "\x00" in topic:
        raise InvalidTopicError(f"{what} may not contain '+', '#' or NUL")
    if topic[0] == "$":
        raise InvalidTopicError(f"{what} may not start with '$' (reserved by brokers)")
    # Encoding only when the topic might be too long: UTF-8 takes at most 4 bytes a character.
    if len(topic) * 4 > MAX_TOPIC_BYTES:
        size = len(topic.encode("utf-8", errors="replace"))
        if size > MAX_TOPIC_BYTES:
            raise InvalidTopicError(f"{what} is {size} bytes long (at most {MAX_TOPIC_BYTES})")
    levels = topic.count("/") + 1
    if levels > MAX_TOPIC_LEVELS:
        raise InvalidTopicError(f"{what} has {levels} levels (at most {MAX_TOPIC_LEVELS})")
    return topic


@dataclass(frozen=True)
class ReplyPolicy:
    """Where replies may go: topics matching one of ``filters`` (MQTT wildcards allowed)."""

    filters: tuple[str, ...]

    @classmethod
    def of(cls, filters: Iterable[str] | None, namespace: str) -> ReplyPolicy:
        chosen = [DEFAULT_REPLY_FILTER] if filters is None else list(filters)
        return cls(tuple(f.replace("{namespace}", namespace) for f in chosen))

    def check(self, topic: str) -> str:
        """``topic`` if a reply may go there, else :class:`InvalidTopicError`."""
        check_topic(topic, "reply topic")
        if not any(matches(f, topic) for f in self.filters):
            raise InvalidTopicError(
                f"reply topic {topic[:120]!r} is not one of {', '.join(self.filters)} "
                "(messaging.reply_topics)"
            )
        return topic

    def allows(self, topic: str) -> bool:
        try:
            self.check(topic)
        except InvalidTopicError:
            return False
        return True


def check_value(value: Any, what: str = "value") -> None:
    """Raise MalformedMessageError (a ValueError) if ``value`` (JSON-ready) nests deeper than
    MAX_DEPTH or holds an integer of more than MAX_INT_DIGITS digits, which receivers could not parse."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, bool):
            continue
        if isinstance(item, int):
            # bit_length avoids the str conversion that itself fails above 4,300 digits.
            if item.bit_length() * 0.30103 > MAX_INT_DIGITS:
                raise MalformedMessageError(
                    f"{what} holds an integer of about {int(item.bit_length() * 0.30103)} digits "
                    f"(at most {MAX_INT_DIGITS}); return it as a string"
                )
        elif isinstance(item, dict | list | tuple):
            if depth >= MAX_DEPTH:
                raise MalformedMessageError(f"{what} nests deeper than {MAX_DEPTH} levels")
            children: Sequence[Any] = list(item.values()) if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
