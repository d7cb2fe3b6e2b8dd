"""The error tree and its one wire mapping: every code round-trips code -> class -> code, a remote
error is both its code's class and AgentReplyError, and what users meet is in the tree while
staying the builtin it was."""

from __future__ import annotations

import typing

import pytest

from argentic import errors
from argentic.agents.agent import error_info as agent_error_info
from argentic.agents.client import AgentClient
from argentic.errors import (
    ERROR_CLASSES,
    AgentError,
    AgentReplyError,
    ArgenticError,
    ArgumentError,
    ConfigError,
    DeadlineError,
    ErrorCode,
    InternalError,
    LLMError,
    LLMOutputError,
    LLMTimeoutError,
    LLMUnavailableError,
    MalformedMessageError,
    NoAgentOnlineError,
    StepLimitError,
    TaskCanceledError,
    TaskError,
    ToolDefinitionError,
    ToolTimeoutError,
    UnknownToolError,
    UsageError,
    error_code,
    remote_class,
    remote_error,
)
from argentic.errors_wire import error_from, error_info, failed_result
from argentic.llm import ScriptedLLM
from argentic.messaging import Messager
from argentic.messaging.limits import check_value
from argentic.protocol import ErrorInfo, ErrorReply, TaskStatus
from argentic.tools import ToolService, tool
from argentic.tools.isolation import WorkerPool
from argentic.video.encode import decode_data_url
from argentic.video.frames import FrameBuffer

CODES: tuple[ErrorCode, ...] = typing.get_args(ErrorCode)


def test_every_wire_code_has_exactly_one_class() -> None:
    assert set(ERROR_CLASSES) == set(CODES) == set(typing.get_args(ErrorInfo.model_fields["code"].annotation))
    assert len(set(ERROR_CLASSES.values())) == len(ERROR_CLASSES)
    for cls in ERROR_CLASSES.values():
        assert issubclass(cls, ArgenticError)
        assert cls.__name__ in errors.__doc__  # drawn in the tree


@pytest.mark.parametrize("code", CODES)
def test_each_code_round_trips_code_class_code(code: ErrorCode) -> None:
    cls = ERROR_CLASSES[code]
    assert cls.code == code
    assert error_code(cls("raised here")) == code
    # Over the wire and back: an ErrorReply's JSON, then the exception, then the ErrorInfo again.
    reply = ErrorReply.model_validate_json(
        ErrorReply(error=ErrorInfo(code=code, message=f"why {code}", details={"n": 1})).to_json()
    )
    exc = error_from(reply.error)
    assert isinstance(exc, cls) and isinstance(exc, AgentReplyError)
    assert type(exc) is remote_class(cls) and type(exc).__name__ == "Remote" + cls.__name__
    assert exc.code == code and exc.reason == f"why {code}" and exc.details == {"n": 1}
    assert str(exc) == f"{code}: why {code}"
    again = error_info(exc)
    assert again == ErrorInfo(code=code, message=f"why {code}", details={"n": 1})


def test_remote_errors_are_caught_by_their_class_and_as_agent_reply_errors() -> None:
    with pytest.raises(DeadlineError) as deadline:
        raise remote_error("deadline", "the tree ran out of time")
    assert isinstance(deadline.value, TimeoutError)  # DeadlineError is a TimeoutError too
    with pytest.raises(AgentReplyError) as canceled:
        raise remote_error("canceled", "stopped")
    assert isinstance(canceled.value, TaskCanceledError) and canceled.value.code == "canceled"
    with pytest.raises(LLMUnavailableError):
        raise remote_error("llm_unavailable", "no server at http://127.0.0.1:1")
    assert isinstance(remote_error("internal", "boom"), InternalError)
    assert isinstance(remote_error("unavailable", "nobody"), NoAgentOnlineError)
    assert remote_class(DeadlineError) is remote_class(DeadlineError)  # one class per mapped class


def test_local_exceptions_map_to_their_codes() -> None:
    assert error_code(LLMOutputError("bad json")) == "llm_error"
    assert error_code(AgentError("gave up")) == "llm_error"
    assert error_code(StepLimitError("8 steps")) == "step_limit"
    assert error_code(LLMTimeoutError("slow")) == "timeout"
    assert error_code(ToolTimeoutError("slow tool")) == "timeout"
    assert error_code(TaskError("ended")) == "internal"
    assert error_code(ConfigError("bad key")) == "internal"
    info = error_info(KeyError("x"))
    assert info.code == "internal" and info.message == "KeyError: 'x'"
    # A hand-made AgentReplyError keeps working; a code the wire does not know becomes internal.
    legacy = AgentReplyError("deadline", "late")
    assert legacy.code == "deadline" and legacy.reason == "late" and str(legacy) == "deadline: late"
    assert error_info(legacy) == ErrorInfo(code="deadline", message="late")
    assert error_code(AgentReplyError("no_such_code", "?")) == "internal"  # type: ignore[arg-type]
    # The older import path is the same function.
    assert agent_error_info is error_info


def test_failed_tool_results_take_the_exception_code() -> None:
    result = failed_result("add", UnknownToolError("no tool named 'add'"), "c1")
    assert not result.ok and result.call_id == "c1" and result.error is not None
    assert result.error.code == "unknown_tool" and result.error.message == "no tool named 'add'"
    offline = failed_result("ask_b", NoAgentOnlineError("gone"))
    assert offline.error == ErrorInfo(code="unavailable", message="gone")


# --- what users meet is in the tree, and still the builtin it was ------------------------------


def test_bad_arguments_are_argument_errors_and_value_errors() -> None:
    with pytest.raises(ArgumentError, match="qos") as caught:
        Messager(qos=3)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(ArgumentError, match="capacity"):
        FrameBuffer(0)
    with pytest.raises(ArgumentError, match="worker"):
        WorkerPool(0)
    with pytest.raises(ArgumentError, match="data URL"):
        decode_data_url("http://example.com/x.jpg")
    with pytest.raises(ArgumentError, match="queue_size"):
        Messager().messages("x/y", queue_size=0)


async def test_wrong_state_is_a_usage_error_and_a_runtime_error() -> None:
    stream = Messager().messages("x/y")
    with pytest.raises(UsageError, match="async with") as caught:
        await anext(stream)
    assert isinstance(caught.value, RuntimeError)
    run = AgentClient(Messager(), "calc").stream("2 + 2?")
    with pytest.raises(UsageError, match="async with"):
        await run.answer()
    with pytest.raises(ArgumentError, match="no reply_to") as wrong:
        await run.give_input(TaskStatus(question_id="q", state="input-required", role="calc"), "yes")
    assert isinstance(wrong.value, ValueError)
    with pytest.raises(UsageError, match="no request was made"):
        _ = ScriptedLLM(["hi"]).last_request


def test_untyped_tools_and_duplicate_tools_are_tree_errors() -> None:
    def untyped(x):  # type: ignore[no-untyped-def]
        return x

    with pytest.raises(ToolDefinitionError, match="annotation") as caught:
        tool(untyped)
    assert isinstance(caught.value, TypeError)

    @tool
    def same(a: int) -> int:
        """A tool."""
        return a

    with pytest.raises(ConfigError, match="two tools"):
        ToolService(Messager(), [same, same], "svc")


def test_a_value_receivers_cannot_parse_is_a_malformed_message() -> None:
    with pytest.raises(MalformedMessageError, match="digits") as caught:
        check_value({"n": 10**5000}, "the result")
    assert isinstance(caught.value, ValueError)
    nested: list[object] = []
    for _ in range(200):
        nested = [nested]
    with pytest.raises(MalformedMessageError, match="nests deeper"):
        check_value(nested)


def test_llm_errors_keep_their_code_through_the_agent_function() -> None:
    # agents.agent.error_info is the one mapping (it used to be a function of its own there).
    assert agent_error_info(LLMUnavailableError("down")).code == "llm_unavailable"
    assert agent_error_info(LLMError("odd")).code == "llm_error"
