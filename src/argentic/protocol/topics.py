"""The topic contract. Every argentic topic starts with a namespace (``argentic`` by default).

==========================================  =============================================  ========
topic                                       messages                                   retained
==========================================  =============================================  ========
``{ns}/agents/{role}/questions``            ``question`` (a request: has ``reply_to``)  no
``{ns}/agents/{role}/events/{question_id}`` ``progress``, ``token``, ``task_status``     no
``{ns}/agents/{role}/status``               ``presence`` and agent card (will: stale)   yes
``{ns}/agents/{role}/cancel``               ``cancel`` (to every replica of the role)   no
``{ns}/agents/{role}/observations``         ``observation`` (visual watch mode)         no
``{ns}/tools/services/{service_id}``        ``tool_announcement`` (empty = withdrawn)   yes
``{ns}/tools/{tool_name}/calls``            ``tool_call`` (a request)                   no
``{ns}/clients/{client_id}/inbox``          replies: ``answer``, ``tool_result``, ...   no
``{ns}/clients/{client_id}/status``         ``client_status`` (the last will: offline)  yes
``{ns}/video/{stream}/offer``               ``webrtc_offer`` (a request)                no
==========================================  =============================================  ========

Values that become one topic level (roles, ids, tool names) are checked by :func:`topic_level`,
so a user id of ``a/b`` or ``#`` cannot redirect messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from argentic.errors import InvalidTopicError

_FORBIDDEN = re.compile(r"[+#/\x00]")
MAX_LEVEL_LENGTH = 128


def topic_level(value: str, what: str = "topic level") -> str:
    """Return ``value`` if it is safe as one topic level, else raise :class:`InvalidTopicError`."""
    if not isinstance(value, str) or not value:
        raise InvalidTopicError(f"{what} must be a non-empty string, got {value!r}")
    if _FORBIDDEN.search(value):
        raise InvalidTopicError(f"{what} {value!r} may not contain '+', '#', '/' or NUL")
    if value.startswith("$"):
        raise InvalidTopicError(f"{what} {value!r} may not start with '$' (reserved by brokers)")
    if len(value) > MAX_LEVEL_LENGTH:
        raise InvalidTopicError(f"{what} is longer than {MAX_LEVEL_LENGTH} characters")
    return value


def matches(topic_filter: str, topic: str) -> bool:
    """True when ``topic`` matches the MQTT ``topic_filter`` (with ``+`` and ``#``)."""
    if topic_filter.startswith("$share/"):
        topic_filter = topic_filter.split("/", 2)[2]
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)


@dataclass(frozen=True)
class Topics:
    """Builds the topics of one namespace; every argument is validated as one level."""

    namespace: str = "argentic"

    def __post_init__(self) -> None:
        for level in self.namespace.split("/"):
            topic_level(level, "namespace level")

    def _join(self, *levels: str) -> str:
        return "/".join((self.namespace, *levels))

    def agent_questions(self, role: str) -> str:
        return self._join("agents", topic_level(role, "agent role"), "questions")

    def agent_events(self, role: str, question_id: str) -> str:
        return self._join(
            "agents", topic_level(role, "agent role"), "events", topic_level(question_id, "question id")
        )

    def agent_events_all(self, role: str) -> str:
        return self._join("agents", topic_level(role, "agent role"), "events", "+")

    def agent_events_every_role(self) -> str:
        return self._join("agents", "+", "events", "+")

    def agent_status(self, role: str) -> str:
        return self._join("agents", topic_level(role, "agent role"), "status")

    def agent_status_all(self) -> str:
        return self._join("agents", "+", "status")

    def agent_tasks(self, role: str) -> str:
        """Where a role's agents answer ``task_get`` requests."""
        return self._join("agents", topic_level(role, "agent role"), "tasks")

    def agent_cancel(self, role: str) -> str:
        return self._join("agents", topic_level(role, "agent role"), "cancel")

    def agent_observations(self, role: str) -> str:
        return self._join("agents", topic_level(role, "agent role"), "observations")

    def tool_service(self, service_id: str) -> str:
        return self._join("tools", "services", topic_level(service_id, "tool service id"))

    def tool_services_all(self) -> str:
        return self._join("tools", "services", "+")

    def tool_calls(self, tool_name: str) -> str:
        return self._join("tools", topic_level(tool_name, "tool name"), "calls")

    def client_inbox(self, client_id: str) -> str:
        return self._join("clients", topic_level(client_id, "client id"), "inbox")

    def client_status(self, client_id: str) -> str:
        return self._join("clients", topic_level(client_id, "client id"), "status")

    def client_status_all(self) -> str:
        return self._join("clients", "+", "status")

    def video_offer(self, stream: str) -> str:
        return self._join("video", topic_level(stream, "video stream"), "offer")


def shared(topic_filter: str, group: str) -> str:
    """The MQTT 5 shared-subscription form of ``topic_filter`` for worker ``group``."""
    return f"$share/{topic_level(group, 'share group')}/{topic_filter}"
