"""The metrics every argentic process records, in the process's default Prometheus registry.

Names follow Prometheus conventions (``argentic_*_total`` counters, ``*_seconds`` histograms);
model calls also use the OpenTelemetry GenAI metric names (``gen_ai.client.token.usage`` and
``gen_ai.client.operation.duration``, dots as underscores). Labels are bounded: roles, tool names
and models come from the configuration or announcements, outcomes are error codes.

Recording is cheap and never raises: the functions here are what the rest of argentic calls.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: Seconds, for questions, tool calls and model calls (an agent's answer may take minutes).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
#: The OpenTelemetry GenAI semantic conventions' advised buckets for token counts.
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)

#: The outcome label of a success; a failure's is its error code (``timeout``, ``tool_failed``...).
OK = "ok"

QUESTIONS = Counter(
    "argentic_questions_total",
    "Questions from MQTT an agent finished, by role and outcome",
    ["role", "outcome"],
)
QUESTION_SECONDS = Histogram(
    "argentic_question_duration_seconds",
    "Time from taking a question from MQTT to replying",
    ["role", "outcome"],
    buckets=_LATENCY_BUCKETS,
)
TOOL_CALLS = Counter("argentic_tool_calls_total", "Tool calls run, by tool and outcome", ["tool", "outcome"])
TOOL_SECONDS = Histogram(
    "argentic_tool_call_duration_seconds",
    "Time a tool call ran",
    ["tool", "outcome"],
    buckets=_LATENCY_BUCKETS,
)
MODEL_CALLS = Counter(
    "argentic_model_calls_total", "Model calls an agent made, by model and outcome", ["model", "outcome"]
)
MODEL_SECONDS = Histogram(
    "gen_ai_client_operation_duration_seconds",
    "GenAI operation duration (OpenTelemetry gen_ai.client.operation.duration)",
    ["gen_ai_operation_name", "gen_ai_request_model", "error_type"],
    buckets=_LATENCY_BUCKETS,
)
MODEL_TOKENS = Histogram(
    "gen_ai_client_token_usage",
    "Tokens used by a GenAI operation (OpenTelemetry gen_ai.client.token.usage)",
    ["gen_ai_operation_name", "gen_ai_request_model", "gen_ai_token_type"],
    buckets=_TOKEN_BUCKETS,
)
FIRST_TOKEN_SECONDS = Histogram(
    "argentic_model_time_to_first_token_seconds",
    "Time from a streamed model call to its first event",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
MODEL_RETRIES = Counter(
    "argentic_model_retries_total", "Model requests sent again after a failure, by its error code", ["reason"]
)
REQUESTS_RESENT = Counter(
    "argentic_requests_resent_total",
    "Requests sent again (same id): no reply in time, or the client working on them gone",
    ["reason"],
)
RECONNECTS = Counter("argentic_broker_reconnects_total", "Times the broker connection was made again")
DROPPED = Counter(
    "argentic_messages_dropped_total",
    "Received messages dropped before any handler, by reason",
    ["reason"],
)
TASK_STATES = Counter(
    "argentic_task_states_total", "Task states entered, by role and state", ["role", "state"]
)
TASKS = Gauge(
    "argentic_tasks", "Tasks now in a state that is not final, by role and state", ["role", "state"]
)

#: Whether the functions below record (``set_enabled``): a process may turn recording off.
_enabled = True

#: Task states a task leaves again (the others are final).
_OPEN_STATES = frozenset({"submitted", "working", "input-required"})


def set_enabled(on: bool) -> None:
    """Record from now on (the default), or not."""
    global _enabled
    _enabled = on


def question_done(role: str, outcome: str, seconds: float) -> None:
    if not _enabled:
        return
    QUESTIONS.labels(role, outcome).inc()
    QUESTION_SECONDS.labels(role, outcome).observe(seconds)


def tool_call_done(tool: str, outcome: str, seconds: float) -> None:
    if not _enabled:
        return
    TOOL_CALLS.labels(tool, outcome).inc()
    TOOL_SECONDS.labels(tool, outcome).observe(seconds)


def model_call_done(
    model: str,
    outcome: str,
    seconds: float,
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    first_token_s: float | None = None,
) -> None:
    if not _enabled:
        return
    model = model or "unknown"
    MODEL_CALLS.labels(model, outcome).inc()
    MODEL_SECONDS.labels("chat", model, "" if outcome == OK else outcome).observe(seconds)
    if outcome == OK:
        MODEL_TOKENS.labels("chat", model, "input").observe(input_tokens)
        MODEL_TOKENS.labels("chat", model, "output").observe(output_tokens)
    if first_token_s is not None:
        FIRST_TOKEN_SECONDS.labels(model).observe(first_token_s)


def model_retry(reason: str) -> None:
    if not _enabled:
        return
    MODEL_RETRIES.labels(reason).inc()


def request_resent(reason: str) -> None:
    if not _enabled:
        return
    REQUESTS_RESENT.labels(reason).inc()


def reconnected() -> None:
    if not _enabled:
        return
    RECONNECTS.inc()


def dropped(reason: str) -> None:
    if not _enabled:
        return
    DROPPED.labels(reason).inc()


def task_state(role: str, before: str | None, after: str) -> None:
    """A task of ``role`` went from ``before`` (None: new) to ``after``."""
    if not _enabled:
        return
    if before == after:
        return
    TASK_STATES.labels(role, after).inc()
    if before in _OPEN_STATES:
        TASKS.labels(role, before).dec()
    if after in _OPEN_STATES:
        TASKS.labels(role, after).inc()
