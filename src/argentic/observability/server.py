"""``/metrics``, ``/livez`` and ``/readyz`` on one port, served on the process's event loop.

prometheus-client serves from a thread of its own; this small HTTP/1.1 server (one request per
connection) keeps everything on the loop and answers the probes too. Liveness is "the loop
answers"; readiness is every check given to :meth:`MetricsServer.ready_when` (a process that gave
none is not ready: it has not got far enough to say).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Self

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from argentic.config import MetricsConfig

log = logging.getLogger(__name__)

#: Seconds a client has to send its request line and headers.
REQUEST_TIMEOUT_S = 5.0
#: Bytes of request line and headers read at most.
MAX_REQUEST_BYTES = 16 * 1024


class MetricsServer:
    """``async with MetricsServer(port=9464) as probes:`` serves until the block ends; with
    ``port=None`` it serves nothing (``metrics.port`` unset) and the checks are kept unused."""

    def __init__(self, port: int | None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port  # the bound port once serving (port 0 picks a free one)
        self._checks: list[Callable[[], bool]] = []
        self._server: asyncio.Server | None = None

    @classmethod
    def from_config(cls, config: MetricsConfig) -> MetricsServer:
        return cls(config.port, config.host)

    def ready_when(self, check: Callable[[], bool]) -> None:
        """Add a readiness check: ``/readyz`` answers 200 only while all of them are true."""
        self._checks.append(check)

    def ready(self) -> bool:
        try:
            return bool(self._checks) and all(check() for check in self._checks)
        except Exception:
            log.warning("a readiness check failed", exc_info=True)
            return False

    @property
    def serving(self) -> bool:
        return self._server is not None

    async def __aenter__(self) -> Self:
        if self.port is not None:
            self._server = await asyncio.start_server(
                self._handle, self.host, self.port, limit=MAX_REQUEST_BYTES
            )
            self.port = self._server.sockets[0].getsockname()[1]
            log.info("metrics and probes on http://%s:%d/metrics", self.host, self.port)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    await server.wait_closed()

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body for a GET of ``path``."""
        path = path.split("?", 1)[0]
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY)
        if path == "/livez":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            return (200, "text/plain", b"ready\n") if self.ready() else (503, "text/plain", b"not ready\n")
        return 404, "text/plain", b"not found: /metrics, /livez, /readyz\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if method in ("GET", "HEAD"):
                status, kind, body = self.respond(path)
            else:
                status, kind, body = 405, "text/plain", b"only GET\n"
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
            writer.write(
                f"HTTP/1.1 {status} {reason[status]}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
            )
            if method != "HEAD":
                writer.write(body)
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                await writer.drain()
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client that sent no valid request gets no answer
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    await writer.wait_closed()
