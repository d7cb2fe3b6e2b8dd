"""OpenTelemetry traces, when the ``otel`` extra is installed: ``invoke_agent {role}``,
``chat {model}`` and ``execute_tool {tool}`` spans with the GenAI semantic conventions'
attributes, joined across processes by the W3C ``traceparent`` each request carries.

Without the extra every function here does nothing (and costs a branch). With the API but no
SDK configured, spans are not recorded and no ``traceparent`` is sent. :func:`configure` sets up
the SDK from the ``tracing`` config section (what the CLI processes do); a program may instead
set its own tracer provider.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from argentic.config import TracingConfig

log = logging.getLogger(__name__)

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the otel extra is not installed
    trace = None  # type: ignore[assignment]

#: The instrumentation scope of argentic's spans.
SCOPE = "argentic"
_TRACEPARENT = "traceparent"
_propagator = TraceContextTextMapPropagator() if trace is not None else None
#: Whether spans are made (``set_enabled``); without OpenTelemetry never.
_enabled = trace is not None


def set_enabled(on: bool) -> None:
    """Make spans and send trace context from now on (the default with OpenTelemetry), or not."""
    global _enabled
    _enabled = on and trace is not None


def available() -> bool:
    """Whether the OpenTelemetry API is installed."""
    return trace is not None


def current_traceparent() -> str | None:
    """The ``traceparent`` of the current span, None when none is recording (or no OpenTelemetry)."""
    if not _enabled:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    # W3C trace context, version 00, written directly: a propagator's inject costs more per message.
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


#: The tracer of the provider it came from: asking the provider for it on every span cost about a
#: third of the span (profiled); a provider set later (a program's own) gets a tracer of its own.
_tracer: tuple[Any, Any] | None = None


def _current_tracer() -> Any:
    global _tracer
    provider = trace.get_tracer_provider()
    if _tracer is None or _tracer[0] is not provider:
        _tracer = (provider, provider.get_tracer(SCOPE))
    return _tracer[1]


_KINDS = (
    {"client": trace.SpanKind.CLIENT, "server": trace.SpanKind.SERVER, "internal": trace.SpanKind.INTERNAL}
    if trace is not None
    else {}
)


@contextlib.contextmanager
def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    kind: str = "internal",
    traceparent: str | None = None,
) -> Iterator[Any]:
    """A span made current for the block (None without OpenTelemetry): a child of ``traceparent``
    (a remote caller's) when given, else of the current span. An exception ending the block is
    recorded on it with ``error.type``."""
    if not _enabled:
        yield None
        return
    parent = None
    if traceparent is not None:
        assert _propagator is not None
        parent = _propagator.extract({_TRACEPARENT: traceparent})
    span_kind = _KINDS.get(kind, trace.SpanKind.INTERNAL)
    with _current_tracer().start_as_current_span(
        name, context=parent, kind=span_kind, attributes=attributes, record_exception=True
    ) as current:
        try:
            yield current
        except BaseException as exc:
            if current.is_recording():
                current.set_attribute("error.type", getattr(exc, "code", None) or type(exc).__qualname__)
            raise


@contextlib.contextmanager
def continued(traceparent: str | None) -> Iterator[None]:
    """The block runs in the trace of ``traceparent`` (a remote caller's W3C trace context, as an
    HTTP request carries it): the spans made in it are its children. Without one, as it was."""
    if not _enabled or not traceparent:
        yield
        return
    assert _propagator is not None
    token = otel_context.attach(_propagator.extract({_TRACEPARENT: traceparent}))
    try:
        yield
    finally:
        otel_context.detach(token)


def set_attributes(current: Any, attributes: Mapping[str, Any]) -> None:
    """Add ``attributes`` to ``current`` (a span from :func:`span`, or None)."""
    if current is not None and current.is_recording():
        current.set_attributes({k: v for k, v in attributes.items() if v is not None})


class JsonLinesExporter:
    """Finished spans appended to a file, one JSON object a line (``tracing.file``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = "".join(json.dumps(json.loads(s.to_json())) + "\n" for s in spans)
        with self._lock, self.path.open("a") as out:
            out.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def configure(config: TracingConfig, service_name: str) -> bool:
    """Set up the OpenTelemetry SDK as ``config`` says (spans to ``config.file``, and over OTLP
    when its exporter is installed and ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set); whether it did."""
    if not config.enabled:
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        log.warning("tracing.enabled is set but the otel extra is not installed (pip install argentic[otel])")
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": config.service_name or service_name}))
    if config.file is not None:
        # Written as each span ends: a process stopped by a signal loses none.
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(config.file)))  # type: ignore[arg-type]
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        # An optional package of its own (opentelemetry-exporter-otlp-proto-http).
        try:
            otlp = importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
        except ImportError:
            log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but opentelemetry-exporter-otlp is not installed")
        else:
            provider.add_span_processor(BatchSpanProcessor(otlp.OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True
