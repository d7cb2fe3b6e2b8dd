"""The exceptions argentic raises, all in one tree.

    ArgenticError                   (wire code)
    ├── ConfigError                 a config key or value is wrong (names key, value, expectation)
    ├── ArgumentError               a call got an argument it cannot take (also a ValueError)
    ├── UsageError                  an object used in the wrong state: outside its ``async with``,
    │                               entered twice, read too early, already busy (a RuntimeError)
    ├── MessagingError
    │   ├── BrokerUnavailableError  no broker answers at the configured address
    │   ├── AuthenticationError     the broker refused the credentials
    │   ├── NotConnectedError       used before connect() or after disconnect()
    │   ├── RequestTimeoutError     no reply arrived before the request's timeout
    │   ├── OutboxFullError         the broker is away and the outbox of publishes is full
    │   ├── ConnectionLostError     the connection dropped (the Messager reconnects by itself)
    │   └── ProtocolRefusedError    the broker refused the MQTT version (3.1.1-only, asked for 5)
    ├── ProtocolError               (malformed_request)
    │   ├── MalformedMessageError   a payload is not JSON, too big, or not the expected schema
    │   └── InvalidTopicError       a value meant for a topic level carries '+', '#', '/' or nothing
    ├── LLMError                    (llm_error)
    │   ├── LLMUnavailableError     the model server cannot be reached (llm_unavailable)
    │   ├── LLMRequestError         the server refused the request (status and the server's words)
    │   ├── LLMTimeoutError         the model did not answer in time (timeout)
    │   └── LLMOutputError          the reply cannot be used (bad tool call, schema mismatch)
    ├── ToolError                   (tool_failed)
    │   ├── UnknownToolError        no tool of that name is announced (unknown_tool)
    │   ├── ToolArgumentsError      the arguments do not validate against the tool's model
    │   │                           (invalid_arguments)
    │   ├── ToolExecutionError      the tool raised
    │   ├── ToolTimeoutError        the tool did not answer, or was not announced, in time (timeout)
    │   └── ToolDefinitionError     a function cannot be made a tool (also a TypeError)
    ├── AgentError                  the agent gave up: repeated calls, unusable replies (llm_error)
    │   ├── StepLimitError          the model was still calling tools at the step limit (step_limit)
    │   ├── InternalError           the agent failed unexpectedly, a bug there (internal)
    │   ├── AgentReplyError         an agent asked over MQTT answered with an error (see below)
    │   └── TaskError               a task between agents ended early (internal):
    │       ├── TaskCanceledError       a ``cancel`` message stopped it (canceled)
    │       ├── DelegationCycleError    a role would ask a role already up the chain
    │       │                           (delegation_cycle)
    │       ├── DepthLimitError         the chain of askers is deeper than the role accepts
    │       │                           (depth_limit)
    │       ├── DeadlineError           the deadline the first asker set has passed (deadline)
    │       ├── NoAgentOnlineError      no agent of the asked role is online (unavailable)
    │       ├── DelegationFailedError   every role the task asked failed, their errors in ``.details``
    │       │                           (delegation_failed)
    │       ├── ForbiddenError          a cancel or input from a client that does not own the task
    │       │                           (forbidden)
    │       ├── BusyError               the agent holds as many tasks as it may; ask again later (busy)
    │       └── TaskNotFoundError       no task of that id on record (not_found)
    ├── StorageError                the store cannot serve (storage_unavailable)
    │   ├── StorageUnavailableError the store (SQLite file, Redis) cannot be reached or refused; names
    │   │                           its URL and the reason
    │   └── LeaseTimeoutError       another replica held a conversation's turn past the wait
    └── VideoError                  no frames, unreadable video, a WebRTC peer that failed (no_frames)

Every message says what to do about the problem where there is something to do.

Errors on the wire. Every class has a ``code``: the :class:`~argentic.protocol.ErrorInfo` code
it travels as when an agent reports it (in parentheses above; a class without one takes its
parent's, and the root's is ``internal``). :data:`ERROR_CLASSES` is the other direction, the one
mapping from each wire code to exactly one class. An error reply from a remote agent is raised
(by :class:`~argentic.agents.AgentClient`, see :func:`remote_error`) as that class *and*
:class:`AgentReplyError`, so both ``except DeadlineError`` and the older ``except
AgentReplyError`` catch it; it carries ``.code``, ``.reason`` (the remote message) and
``.details``. :mod:`argentic.errors_wire` converts to and from ``ErrorInfo``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

#: The error codes of the wire (``ErrorInfo.code``).
ErrorCode = Literal[
    "malformed_request",
    "unknown_tool",
    "invalid_arguments",
    "tool_failed",
    "timeout",
    "llm_unavailable",
    "llm_error",
    "step_limit",
    "no_frames",
    "canceled",
    "delegation_cycle",
    "depth_limit",
    "deadline",
    "unavailable",
    "delegation_failed",
    "forbidden",
    "busy",
    "storage_unavailable",
    "not_found",
    "internal",
]


class ArgenticError(Exception):
    """Base of every error argentic raises; ``code`` is the wire code it is reported as."""

    code: ErrorCode = "internal"


class ConfigError(ArgenticError, ValueError):
    """A configuration key or value is wrong."""


class ArgumentError(ArgenticError, ValueError):
    """A call got an argument it cannot take (the message names it, the value, what it takes)."""


class UsageError(ArgenticError, RuntimeError):
    """An object was used in a state that cannot serve the call (outside its ``async with``,
    entered twice, read before its result arrived, already busy)."""


class MessagingError(ArgenticError):
    """Talking to the MQTT broker failed."""


class BrokerUnavailableError(MessagingError):
    """No MQTT broker answers at the configured address."""


class AuthenticationError(MessagingError):
    """The broker refused the username or password."""


class NotConnectedError(MessagingError):
    """The messager is not connected."""


class RequestTimeoutError(MessagingError, TimeoutError):
    """No reply arrived before the request's timeout."""


class OutboxFullError(MessagingError):
    """The broker has been away so long that the outbox is full."""


class ConnectionLostError(MessagingError):
    """The connection to the broker dropped; the Messager reconnects."""


class ProtocolRefusedError(MessagingError):
    """The broker refused the MQTT protocol version (an MQTT 3.1.1-only broker asked for 5)."""


class ProtocolError(ArgenticError):
    """A message or topic breaks the protocol."""

    code: ErrorCode = "malformed_request"


class MalformedMessageError(ProtocolError, ValueError):
    """A payload is not JSON, is too large, or does not match the expected schema."""


class InvalidTopicError(ProtocolError, ValueError):
    """A value meant for one topic level is empty or carries '+', '#', '/' or NUL."""


class LLMError(ArgenticError):
    """The language model could not produce a usable reply."""

    code: ErrorCode = "llm_error"


class LLMUnavailableError(LLMError):
    """The model server cannot be reached."""

    code: ErrorCode = "llm_unavailable"


class NotTheAPIError(LLMUnavailableError):
    """The server answered, but not as the API does (an HTML page from a proxy, a stream cut off)."""


class LLMRequestError(LLMError):
    """The model server refused the request."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class LLMTimeoutError(LLMError, TimeoutError):
    """The model did not answer in time."""

    code: ErrorCode = "timeout"


class LLMOutputError(LLMError):
    """The model's reply cannot be used."""


class ToolError(ArgenticError):
    """A tool call failed."""

    code: ErrorCode = "tool_failed"


class UnknownToolError(ToolError, LookupError):
    """No tool of that name is known."""

    code: ErrorCode = "unknown_tool"


class ToolArgumentsError(ToolError, ValueError):
    """The arguments do not validate against the tool's argument model."""

    code: ErrorCode = "invalid_arguments"


class ToolExecutionError(ToolError):
    """The tool raised while running."""


class McpServerGone(ToolExecutionError):
    """The MCP server could not be reached, or went away during a call."""


class ToolTimeoutError(ToolError, TimeoutError):
    """The tool did not answer in time, or was not announced in time."""

    code: ErrorCode = "timeout"


class ToolDefinitionError(ToolError, TypeError):
    """A function cannot be made a tool (``*args``, a parameter without a type annotation)."""


class AgentError(ArgenticError):
    """The agent could not finish the task."""

    code: ErrorCode = "llm_error"


class StepLimitError(AgentError):
    """The model was still calling tools when the step limit was reached."""

    code: ErrorCode = "step_limit"


class InternalError(AgentError):
    """The agent failed in a way it did not expect (a bug there; the message names the exception)."""

    code: ErrorCode = "internal"


class AgentReplyError(AgentError):
    """An agent asked over MQTT answered with an error reply.

    ``code`` is the wire error code, ``reason`` the agent's message, ``details`` its details. The
    errors :class:`~argentic.agents.AgentClient` raises are also of the code's class in
    :data:`ERROR_CLASSES` (see :func:`remote_error`)."""

    def __init__(self, code: ErrorCode, message: str, details: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.reason = message
        self.details = details


class TaskError(AgentError):
    """A task between agents ended early; ``code`` is its wire error code."""

    code: ErrorCode = "internal"


class TaskCanceledError(TaskError):
    """A ``cancel`` message stopped the task."""

    code: ErrorCode = "canceled"


class DelegationCycleError(TaskError):
    """A role would ask a role that is already up the chain of askers."""

    code: ErrorCode = "delegation_cycle"


class DepthLimitError(TaskError):
    """The chain of askers is deeper than the role accepts (``roles.NAME.max_depth``)."""

    code: ErrorCode = "depth_limit"


class DeadlineError(TaskError, TimeoutError):
    """The deadline the first asker set has passed."""

    code: ErrorCode = "deadline"


class NoAgentOnlineError(TaskError):
    """No agent of the asked role is online."""

    code: ErrorCode = "unavailable"


class DelegationFailedError(TaskError):
    """Every role the task asked failed; ``details`` holds their errors (wire form)."""

    code: ErrorCode = "delegation_failed"

    def __init__(self, message: str, details: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


class ForbiddenError(TaskError):
    """A cancel or an input from a client that does not own the task (not its asker)."""

    code: ErrorCode = "forbidden"


class BusyError(TaskError):
    """The agent already holds as many tasks as it may (running and waiting)."""

    code: ErrorCode = "busy"


class TaskNotFoundError(TaskError, LookupError):
    """No task of that id is on record (never asked, expired, or the agents keep no store)."""

    code: ErrorCode = "not_found"


class StorageError(ArgenticError):
    """The store of conversations, tasks and replies cannot serve."""

    code: ErrorCode = "storage_unavailable"


class StorageUnavailableError(StorageError):
    """The store cannot be reached, or refused (authentication, out of memory): names its URL."""


class LeaseTimeoutError(StorageError, TimeoutError):
    """Another holder kept a lease (a conversation's turn) longer than the wait allowed."""


class VideoError(ArgenticError):
    """A video source failed or has no frames."""

    code: ErrorCode = "no_frames"


# --- the wire mapping -----------------------------------------------------------------------------

#: Each wire code's one class: the class a remote error of that code is raised as. Its ``code``
#: is the key again, so code -> class -> code round-trips (tests/test_errors.py checks it).
ERROR_CLASSES: Mapping[ErrorCode, type[ArgenticError]] = {
    "malformed_request": MalformedMessageError,
    "unknown_tool": UnknownToolError,
    "invalid_arguments": ToolArgumentsError,
    "tool_failed": ToolExecutionError,
    "timeout": LLMTimeoutError,  # an agent's error reply says "timeout" only for its model
    "llm_unavailable": LLMUnavailableError,
    "llm_error": LLMError,
    "step_limit": StepLimitError,
    "no_frames": VideoError,
    "canceled": TaskCanceledError,
    "delegation_cycle": DelegationCycleError,
    "depth_limit": DepthLimitError,
    "deadline": DeadlineError,
    "unavailable": NoAgentOnlineError,
    "delegation_failed": DelegationFailedError,
    "forbidden": ForbiddenError,
    "busy": BusyError,
    "storage_unavailable": StorageError,
    "not_found": TaskNotFoundError,
    "internal": InternalError,
}


def error_code(exc: BaseException) -> ErrorCode:
    """The wire code ``exc`` is reported as (``internal`` for anything outside the tree)."""
    code: ErrorCode = exc.code if isinstance(exc, ArgenticError) else "internal"
    # An AgentReplyError made by hand may carry a code the wire does not know.
    return code if code in ERROR_CLASSES else "internal"


_remote_classes: dict[type[ArgenticError], type[AgentReplyError]] = {}


def remote_class(cls: type[ArgenticError]) -> type[AgentReplyError]:
    """``Remote<Name>``: ``cls`` as reported by a remote agent, also an :class:`AgentReplyError`
    (made once per class)."""
    if issubclass(cls, AgentReplyError):
        return cls
    remote = _remote_classes.get(cls)
    if remote is None:
        name = "Remote" + cls.__name__
        namespace = {
            "__module__": __name__,
            "__qualname__": name,
            "__doc__": f"{cls.__name__} reported by a remote agent (also an AgentReplyError).",
            # AgentReplyError's signature, whatever cls's own __init__ takes.
            "__init__": AgentReplyError.__init__,
        }
        remote = _remote_classes[cls] = type(name, (cls, AgentReplyError), namespace)
    return remote


def remote_error(code: ErrorCode, message: str, details: Any = None) -> AgentReplyError:
    """The error a remote agent reported: of ``code``'s class in :data:`ERROR_CLASSES` and of
    :class:`AgentReplyError`, with ``.code``, ``.reason`` (``message``) and ``.details``."""
    cls = ERROR_CLASSES.get(code, InternalError)
    return remote_class(cls)(code, message, details)
