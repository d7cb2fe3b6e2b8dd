"""What an argentic process tells about itself: Prometheus metrics and health probes.

:mod:`argentic.observability.metrics` holds the metric objects and the small functions the
messaging, agent and tool code call to record; :class:`MetricsServer` serves ``/metrics``,
``/livez`` and ``/readyz`` on ``metrics.port`` (see ``docs/observability.md``).
"""

from argentic.observability.server import MetricsServer

__all__ = ["MetricsServer"]
