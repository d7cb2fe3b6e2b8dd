"""Errors to and from the wire: an exception as the :class:`~argentic.protocol.ErrorInfo` an
agent replies with, and an ``ErrorInfo`` as the exception a caller catches.

Both go through the one mapping in :mod:`argentic.errors` (each class's ``code``, and
:data:`~argentic.errors.ERROR_CLASSES` back), so ``error_info(error_from(info)).code ==
info.code`` for every code.
"""

from __future__ import annotations

from typing import Any

from argentic.errors import AgentReplyError, error_code, remote_error
from argentic.protocol import ErrorInfo, ToolResult


def error_info(exc: BaseException, details: Any = None) -> ErrorInfo:
    """The wire error for ``exc`` (what stopped a question or a tool call)."""
    code = error_code(exc)
    if details is None:
        details = getattr(exc, "details", None) or None  # a DelegationFailedError's delegate errors
    if isinstance(exc, AgentReplyError):
        # Passed on from another agent: its words, without the code prefixed again.
        return ErrorInfo(code=code, message=exc.reason, details=details)
    if code == "internal":
        # A bug, or a library's error: its type says the most.
        return ErrorInfo(code=code, message=f"{type(exc).__name__}: {exc}", details=details)
    return ErrorInfo(code=code, message=str(exc), details=details)


def error_from(info: ErrorInfo) -> AgentReplyError:
    """The exception for a remote error: of the code's class (``except DeadlineError``) and of
    :class:`~argentic.errors.AgentReplyError`, with ``.code``, ``.reason`` and ``.details``."""
    return remote_error(info.code, info.message, info.details)


def failed_result(tool: str, exc: BaseException, call_id: str = "", details: Any = None) -> ToolResult:
    """A tool result that failed with ``exc`` (tool failures travel as results, not replies)."""
    return ToolResult(call_id=call_id, tool=tool, ok=False, error=error_info(exc, details))
