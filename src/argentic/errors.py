"""The exceptions argentic raises, all in one tree.

    ArgenticError
    ├── ConfigError                 a config key or value is wrong (names key, value, expectation)
    ├── MessagingError
    │   ├── BrokerUnavailableError  no broker answers at the configured address
    │   ├── AuthenticationError     the broker refused the credentials
    │   ├── NotConnectedError       used before connect() or after disconnect()
    │   ├── RequestTimeoutError     no reply arrived before the request's timeout
    │   ├── OutboxFullError         the broker is away and the outbox of publishes is full
    │   ├── ConnectionLostError     the connection dropped (the Messager reconnects by itself)
    │   └── ProtocolRefusedError    the broker refused the MQTT version (3.1.1-only, asked for 5)
    ├── ProtocolError
    │   ├── MalformedMessageError   a payload is not JSON, too big, or not the expected schema
    │   └── InvalidTopicError       a value meant for a topic level carries '+', '#', '/' or nothing
    ├── LLMError
    │   ├── LLMUnavailableError     the model server cannot be reached (names the URL and the fix)
    │   ├── LLMRequestError         the server refused the request (status and the server's words)
    │   ├── LLMTimeoutError         the model did not answer in time
    │   └── LLMOutputError          the reply cannot be used (bad tool call, schema mismatch)
    ├── ToolError
    │   ├── UnknownToolError        no tool of that name is announced
    │   ├── ToolArgumentsError      the arguments do not validate against the tool's model
    │   ├── ToolExecutionError      the tool raised
    │   └── ToolTimeoutError        the tool did not answer in time
    ├── AgentError                  the agent gave up (repeated calls, unusable replies)
    │   ├── StepLimitError          the model was still calling tools at the step limit
    │   ├── AgentReplyError         an agent asked over MQTT answered with an error (``.code``)
    │   └── TaskError               a task between agents ended early (``.code`` on the wire):
    │       ├── TaskCanceledError       a ``cancel`` message stopped it
    │       ├── DelegationCycleError    a role would ask a role already up the chain
    │       ├── DepthLimitError         the chain of askers is deeper than the role accepts
    │       ├── DeadlineError           the deadline the first asker set has passed
    │       ├── NoAgentOnlineError      no agent of the asked role is online
    │       ├── DelegationFailedError   every role the task asked failed (their errors in ``.details``)
    │       ├── ForbiddenError          a cancel or input from a client that does not own the task
    │       └── BusyError               the agent holds as many tasks as it may; asked again later
    └── VideoError                  no frames, unreadable video, a WebRTC peer that failed

Every message says what to do about the problem where there is something to do.
"""

from __future__ import annotations


class ArgenticError(Exception):
    """Base of every error argentic raises."""


class ConfigError(ArgenticError, ValueError):
    """A configuration key or value is wrong."""


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


class MalformedMessageError(ProtocolError, ValueError):
    """A payload is not JSON, is too large, or does not match the expected schema."""


class InvalidTopicError(ProtocolError, ValueError):
    """A value meant for one topic level is empty or carries '+', '#', '/' or NUL."""


class LLMError(ArgenticError):
    """The language model could not produce a usable reply."""


class LLMUnavailableError(LLMError):
    """The model server cannot be reached."""


class LLMRequestError(LLMError):
    """The model server refused the request."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class LLMTimeoutError(LLMError, TimeoutError):
    """The model did not answer in time."""


class LLMOutputError(LLMError):
    """The model's reply cannot be used."""


class ToolError(ArgenticError):
    """A tool call failed."""


class UnknownToolError(ToolError, LookupError):
    """No tool of that name is known."""


class ToolArgumentsError(ToolError, ValueError):
    """The arguments do not validate against the tool's argument model."""


class ToolExecutionError(ToolError):
    """The tool raised while running."""


class ToolTimeoutError(ToolError, TimeoutError):
    """The tool did not answer in time."""


class AgentError(ArgenticError):
    """The agent could not finish the task."""


class StepLimitError(AgentError):
    """The model was still calling tools when the step limit was reached."""


class AgentReplyError(AgentError):
    """An agent asked over MQTT answered with an error reply; ``code`` is the wire error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.reason = message


class TaskError(AgentError):
    """A task between agents ended early; ``code`` is its wire error code."""

    code = "internal"


class TaskCanceledError(TaskError):
    """A ``cancel`` message stopped the task."""

    code = "canceled"


class DelegationCycleError(TaskError):
    """A role would ask a role that is already up the chain of askers."""

    code = "delegation_cycle"


class DepthLimitError(TaskError):
    """The chain of askers is deeper than the role accepts (``roles.NAME.max_depth``)."""

    code = "depth_limit"


class DeadlineError(TaskError, TimeoutError):
    """The deadline the first asker set has passed."""

    code = "deadline"


class NoAgentOnlineError(TaskError):
    """No agent of the asked role is online."""

    code = "unavailable"


class DelegationFailedError(TaskError):
    """Every role the task asked failed; ``details`` holds their errors (wire form)."""

    code = "delegation_failed"

    def __init__(self, message: str, details: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


class ForbiddenError(TaskError):
    """A cancel or an input from a client that does not own the task (not its asker)."""

    code = "forbidden"


class BusyError(TaskError):
    """The agent already holds as many tasks as it may (running and waiting)."""

    code = "busy"


class VideoError(ArgenticError):
    """A video source failed or has no frames."""
