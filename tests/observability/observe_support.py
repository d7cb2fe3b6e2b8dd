"""Helpers of the observability tests: HTTP GETs on loopback and reading a metrics page."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from argentic.tools import tool

REPO = Path(__file__).resolve().parents[2]
SUPPORT = str(Path(__file__).resolve())


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status), reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""  # nothing listens (yet)


async def http_get(url: str) -> tuple[int, str]:
    """Status and body of ``GET url`` (status 0 when nothing answers)."""
    return await asyncio.to_thread(_get, url)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A metrics page parsed by prometheus_client: ``(name, labels) -> value``."""
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(page: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in page.items() if n == name and wanted <= ls)


VLLM_PAGE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="fake/model"}} 3.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",model_name="fake/model"}} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",model_name="fake/model"}} 0.25
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{{engine="0",model_name="fake/model"}} 200.0
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{{engine="0",model_name="fake/model"}} 50.0
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{{engine="0",model_name="fake/model"}} {generated}
"""


class FakeVLLM:
    """A loopback HTTP server answering ``/metrics`` like vLLM (its generation counter grows by
    100 tokens a reading) and ``/v1/models``: what ``argentic status`` parses."""

    def __init__(self) -> None:
        readings = itertools.count()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body = VLLM_PAGE.format(generated=100.0 * next(readings)).encode()
                elif self.path == "/v1/models":
                    body = json.dumps({"object": "list", "data": [{"id": "fake/model"}]}).encode()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeVLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


async def eventually(check: Callable[[], Awaitable[bool]], limit_s: float = 15.0) -> None:
    """Await ``check()`` until true; raise TimeoutError after ``limit_s`` (a guard, not a measurement)."""
    async with asyncio.timeout(limit_s):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)
