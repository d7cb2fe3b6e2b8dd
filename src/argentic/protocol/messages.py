"""Every message on the wire: a JSON object with a ``type`` tag and a protocol version ``v``.

The envelope fields are shared by all messages:

- ``id``: unique per message; receivers drop a message whose id they have already handled.
- ``ts``: when it was sent (Unix seconds).
- ``reply_to``, ``correlation_id``: set on requests; the reply goes to ``reply_to`` carrying the
  same ``correlation_id``. They live in the JSON so MQTT 3.1.1 brokers work; on MQTT 5 the same
  values are also sent as Response Topic and Correlation Data properties.
- ``expires_at``: Unix seconds after which the message is stale and is dropped unanswered.

``docs/protocol.md`` shows a JSON example of each type.
"""

from __future__ import annotations

import json
import os
import time
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from argentic.errors import ErrorCode, MalformedMessageError
from argentic.protocol.topics import topic_level
from argentic.validation import describe_validation_error

PROTOCOL_VERSION = 1


def new_id() -> str:
    """A new id: 32 hex digits, the milliseconds since 1970 (48 bits) and then 80 random bits.
    Ids made later sort later (as UUIDv7s do), so a store that keeps records by id (a B-tree:
    SQLite's index of keys) writes a turn's new records into the same few last pages instead of
    into pages all over the file; 80 random bits keep them unique and unguessable. Made for every
    message, so no UUID object."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


class Message(BaseModel):
    """The envelope every message shares. Subclasses fix ``type``."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    KIND: ClassVar[str] = ""

    type: str
    v: int = PROTOCOL_VERSION
    id: str = Field(default_factory=new_id, min_length=1, max_length=128)
    ts: float = Field(default_factory=time.time)
    reply_to: str | None = None
    correlation_id: str | None = Field(default=None, max_length=256)
    expires_at: float | None = None
    #: W3C trace context of the sender's span (also an MQTT 5 user property), when it traces.
    traceparent: str | None = Field(default=None, max_length=256)

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (time.time() if now is None else now) > self.expires_at

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @field_validator("reply_to")
    @classmethod
    def _reply_topic_has_no_wildcards(cls, value: str | None) -> str | None:
        if value is not None:
            for level in value.split("/"):
                topic_level(level, "reply_to level")
        return value


# --- agents -------------------------------------------------------------------------------------


class Question(Message):
    """A question or task for an agent, published to ``{ns}/agents/{role}/questions``."""

    type: Literal["question"] = "question"
    text: str = Field(min_length=1, max_length=200_000)
    conversation_id: str | None = Field(default=None, max_length=128)
    user_id: str | None = Field(default=None, max_length=128)
    stream: bool = Field(default=False, description="publish token events while answering")
    output_schema: dict[str, Any] | None = Field(default=None, description="JSON schema of the answer's data")
    # A task between agents: who asked, the roles up the chain (cycles and depth are checked
    # against it), the first question of the tree, and the deadline the first asker set.
    asked_by: str | None = Field(default=None, max_length=128, description="the asking role or client")
    chain: list[Annotated[str, Field(max_length=128)]] = Field(
        default=[], max_length=64, description="roles asking, first asker first"
    )
    parent_id: str | None = Field(default=None, max_length=128, description="the question this one serves")
    root_id: str | None = Field(default=None, max_length=128, description="the first question of the tree")
    deadline: float | None = Field(default=None, description="Unix seconds: the whole tree ends by then")

    @property
    def depth(self) -> int:
        """How many agents asked on the way to this question (0: asked by a client)."""
        return len(self.chain)


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ToolCallRecord(BaseModel):
    """One tool call an agent made while answering."""

    name: str
    arguments: dict[str, Any]
    ok: bool
    result: Any = None
    error: str | None = None


class Answer(Message):
    """An agent's final answer, sent to the question's ``reply_to``."""

    type: Literal["answer"] = "answer"
    question_id: str
    conversation_id: str
    text: str = ""
    data: Any = Field(default=None, description="the structured answer when an output schema was asked")
    tool_calls: list[ToolCallRecord] = []
    usage: Usage = Usage()
    agent: str | None = None


class ErrorInfo(BaseModel):
    """What went wrong; ``code`` maps to one exception class (:data:`argentic.errors.ERROR_CLASSES`,
    converted by :mod:`argentic.errors_wire`)."""

    code: ErrorCode
    message: str
    details: Any = None


class ErrorReply(Message):
    """A request that could not be served; sent to its ``reply_to`` in place of the answer."""

    type: Literal["error"] = "error"
    request_id: str | None = None
    error: ErrorInfo


#: The steps of a task at work. Where the task is (submitted, working, completed, failed...) is its
#: :class:`TaskStatus`: one vocabulary for the state, another for the steps within ``working``.
ProgressStage = Literal["llm_call", "tool_call", "tool_result"]


class Progress(Message):
    """A step an agent takes for a question: on ``{ns}/agents/{role}/events/{question_id}``."""

    type: Literal["progress"] = "progress"
    question_id: str
    stage: ProgressStage
    tool: str | None = None
    arguments: dict[str, Any] | None = None
    detail: str | None = None


class Token(Message):
    """A piece of streamed answer text, on the question's events topic."""

    type: Literal["token"] = "token"
    question_id: str
    index: int = Field(ge=0)
    text: str


class AgentCard(BaseModel):
    """What a role does and can use, in the spirit of A2A's agent card: carried by its presence."""

    model_config = ConfigDict(frozen=True)

    description: str = ""
    model: str | None = None
    tools: list[str] = Field(default=[], description="tool names it may call")
    delegates: list[str] = Field(default=[], description="roles it may ask")
    asks_back: bool = Field(default=False, description="may ask its asker for input (input-required)")
    max_depth: int | None = Field(default=None, description="deepest delegation chain it accepts")


class Presence(Message):
    """An agent's retained status. The last will publishes ``online: false``."""

    type: Literal["presence"] = "presence"
    role: str
    online: bool
    client_id: str | None = None
    card: AgentCard | None = None


#: A task's life, as A2A names it.
TaskState = Literal["submitted", "working", "input-required", "completed", "failed", "canceled", "rejected"]


class TaskStatus(Message):
    """A task's state, on ``{ns}/agents/{role}/events/{question_id}``.

    A delegating agent also republishes the statuses of the tasks it spawned on its own events
    topic, so following the first question's events shows the whole tree. ``input-required``
    is a request: its ``reply_to`` and ``correlation_id`` take the ``task_input`` that answers.
    """

    type: Literal["task_status"] = "task_status"
    question_id: str
    state: TaskState
    role: str
    asked_by: str | None = None
    parent_id: str | None = None
    root_id: str | None = None
    depth: int = Field(default=0, ge=0)
    client_id: str | None = Field(default=None, description="the client working on it")
    owner: str | None = Field(
        default=None,
        description="the question's reply_to: whose task it is (only it cancels or gives input)",
    )
    text: str | None = Field(default=None, description="the question, the answer, or what is asked back")
    error: ErrorInfo | None = None


class TaskInput(Message):
    """The answer to an ``input-required`` status, sent to that status's ``reply_to``.

    Its own ``reply_to`` names the sender: input is taken only from the task's owner (the
    question's ``reply_to``); any other sender gets a ``forbidden`` error reply."""

    type: Literal["task_input"] = "task_input"
    question_id: str
    text: str = Field(min_length=1, max_length=200_000)


class TaskGet(Message):
    """Ask where a task is, and its answer once done: to ``{ns}/agents/{role}/tasks`` (A2A's
    tasks/get). Works after the asker reconnected, and from another process: the question id is
    what names the task. The reply is a :class:`TaskRecord`, or an error reply ``not_found``."""

    type: Literal["task_get"] = "task_get"
    question_id: str = Field(min_length=1, max_length=128)


class TaskRecord(Message):
    """A task as the store keeps it: its latest status and, once completed, its answer."""

    type: Literal["task_record"] = "task_record"
    status: TaskStatus
    answer: Answer | None = None


class Cancel(Message):
    """Stop the work on a question and on what it spawned: to ``{ns}/agents/{role}/cancel``.

    Its ``reply_to`` names the sender: a running task is cancelled only by its owner (a cancel
    with the question's ``reply_to``); any other sender gets a ``forbidden`` error reply."""

    type: Literal["cancel"] = "cancel"
    question_id: str = Field(min_length=1, max_length=128)
    reason: str | None = Field(default=None, max_length=1000)


class ClientStatus(Message):
    """A client's retained liveness on ``{ns}/clients/{client_id}/status``.

    Every Messager says ``online: true`` when it connects, and its last will says ``online: false``,
    so one will covers everything a client announced: an agent's presence or a tool service's
    announcement that names a client the broker reports gone is stale. A graceful exit withdraws
    the announcements itself and clears this status (an empty retained payload).

    ``roles`` are the roles whose agents serve on the client, with how many agents each (``{}``:
    none); the status is published again whenever that changes, so every replica is seen, busy or
    idle. A client that leaves it out (an older one) says nothing about its roles.
    """

    type: Literal["client_status"] = "client_status"
    client_id: str
    online: bool
    roles: dict[str, int] | None = Field(default=None, description="roles served here: agents of each")


class Observation(Message):
    """What a visual agent saw in watch mode."""

    type: Literal["observation"] = "observation"
    role: str
    question: str
    text: str
    frame_ts: float | None = None
    data: Any = None


# --- tools --------------------------------------------------------------------------------------


class ToolSpec(BaseModel):
    """A tool as the LLM sees it: ``parameters`` is the JSON schema of its argument model."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    description: str = ""
    parameters: dict[str, Any]
    timeout_s: float | None = None

    @field_validator("name")
    @classmethod
    def _name_is_a_topic_level(cls, value: str) -> str:
        return topic_level(value, "tool name")


class ToolAnnouncement(Message):
    """A tool service's tools, retained on ``{ns}/tools/services/{service_id}``."""

    type: Literal["tool_announcement"] = "tool_announcement"
    service_id: str
    tools: list[ToolSpec]
    client_id: str | None = Field(default=None, description="the announcing client: stale once it is gone")


class ToolCall(Message):
    """A request to run a tool, published to ``{ns}/tools/{tool}/calls``."""

    type: Literal["tool_call"] = "tool_call"
    tool: str
    arguments: dict[str, Any] = {}
    caller: str | None = None


class ToolResult(Message):
    """The outcome of a tool call: ``result`` when ``ok``, else ``error``."""

    type: Literal["tool_result"] = "tool_result"
    call_id: str
    tool: str
    ok: bool
    result: Any = None
    error: ErrorInfo | None = None
    service_id: str | None = None


# --- video --------------------------------------------------------------------------------------


class WebRTCOffer(Message):
    """A peer's SDP offer, sent as a request to ``{ns}/video/{stream}/offer``."""

    type: Literal["webrtc_offer"] = "webrtc_offer"
    sdp: str
    sdp_type: Literal["offer"] = "offer"
    stream: str | None = None


class WebRTCAnswer(Message):
    """The receiving side's SDP answer, sent to the offer's ``reply_to``."""

    type: Literal["webrtc_answer"] = "webrtc_answer"
    sdp: str
    sdp_type: Literal["answer"] = "answer"


AnyMessage = Annotated[
    Question
    | Answer
    | ErrorReply
    | Progress
    | Token
    | Presence
    | TaskStatus
    | TaskInput
    | TaskGet
    | TaskRecord
    | Cancel
    | ClientStatus
    | Observation
    | ToolAnnouncement
    | ToolCall
    | ToolResult
    | WebRTCOffer
    | WebRTCAnswer,
    Field(discriminator="type"),
]
#: Validates any protocol message by its ``type`` tag.
MESSAGE_ADAPTER: TypeAdapter[Message] = TypeAdapter(AnyMessage)

M = TypeVar("M", bound=Message)


def parse_message(payload: bytes | str, model: type[M] | None = None, *, max_bytes: int | None = None) -> M:
    """Parse and validate a payload; ``model=None`` accepts any known message type.

    Raises :class:`MalformedMessageError` naming what is wrong.
    """
    size = len(payload)
    if max_bytes is not None and size > max_bytes:
        raise MalformedMessageError(f"payload of {size} bytes exceeds the limit of {max_bytes}")
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # also too deep, or an integer of too many digits
        raise MalformedMessageError(f"payload is not JSON argentic can read: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise MalformedMessageError(f"payload must be a JSON object, got {type(data).__name__}")
    try:
        if model is None:
            return MESSAGE_ADAPTER.validate_python(data)  # type: ignore[return-value]
        return model.model_validate(data)
    except ValidationError as exc:
        expected = model.__name__ if model else "an argentic message"
        raise MalformedMessageError(f"payload is not {expected}: {describe_validation_error(exc)}") from exc
