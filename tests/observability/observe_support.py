"""Helpers of the observability tests: HTTP GETs on loopback and reading a metrics page."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from pathlib import Path

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
