"""What a model server says about its load, read from vLLM's ``/metrics`` and ``/v1/models``.

A server that does not answer is down; one that answers without vLLM's metrics is up with its
load unknown. Tokens per second need two readings of the generation counter: :class:`ServerProbe`
keeps the previous one.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from argentic.config import LLMConfig
from argentic.llm.factory import endpoint_config
from argentic.llm.local_server import server_root

#: Seconds one GET of a model server may take.
PROBE_TIMEOUT_S = 2.0
#: Bytes of a ``/metrics`` page read at most.
MAX_PAGE_BYTES = 4 * 1024 * 1024

#: vLLM's gauges and counters (older releases named the KV-cache gauge after the GPU).
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_CACHE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
PREFIX_QUERIES = "vllm:prefix_cache_queries"
PREFIX_HITS = "vllm:prefix_cache_hits"
GENERATED = "vllm:generation_tokens"


class ModelServerStatus(BaseModel):
    """One server of an endpoint as ``argentic status`` shows it; None: the server did not say."""

    endpoint: str
    base_url: str
    up: bool
    model: str | None = None
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    prefix_cache_hit_rate: float | None = None
    tokens_per_s: float | None = None
    error: str | None = None


def configured_servers(llm: LLMConfig) -> list[tuple[str, str]]:
    """The model servers of the ``llm`` section, as (endpoint name, base URL): every server of
    ``default`` (when a server is its provider) and of each of ``llm.endpoints``."""
    found: list[tuple[str, str]] = []
    if llm.provider in ("vllm", "openai"):
        found += [("default", url) for url in llm.server_urls()]
    for name in llm.endpoints:
        found += [(name, url) for url in endpoint_config(llm, name).server_urls()]
    return found


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as reply:
            return int(reply.status), reply.read(MAX_PAGE_BYTES).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def vllm_values(page: str) -> dict[str, float]:
    """The samples of a ``/metrics`` page summed over labels, by name (counters without ``_total``)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            name = sample.name.removesuffix("_total")
            values[name] = values.get(name, 0.0) + sample.value
    return values


def _model_name(page: str) -> str | None:
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if "model_name" in sample.labels:
                return sample.labels["model_name"]
    return None


@dataclass
class _Reading:
    at: float
    generated: float


class ServerProbe:
    """Reads one model server; keeps its last generation count for tokens per second."""

    def __init__(self, endpoint: str, base_url: str) -> None:
        self.endpoint = endpoint
        self.base_url = base_url
        self.root = server_root(base_url)
        self._last: _Reading | None = None

    async def read(self) -> ModelServerStatus:
        try:
            code, page = await asyncio.to_thread(_get, self.root + "/metrics")
        except (OSError, ValueError) as exc:
            self._last = None
            return ModelServerStatus(endpoint=self.endpoint, base_url=self.base_url, up=False, error=str(exc))
        status = ModelServerStatus(endpoint=self.endpoint, base_url=self.base_url, up=True)
        if code == 200:
            try:
                self._fill(status, page)
            except ValueError as exc:  # not a Prometheus page
                status.error = f"unreadable /metrics: {exc}"
        else:
            status.error = f"/metrics answered {code}"
        if status.model is None:
            status.model = await self._served_model()
        return status

    def _fill(self, status: ModelServerStatus, page: str) -> None:
        values = vllm_values(page)
        status.model = _model_name(page)
        status.running = values.get(RUNNING)
        status.waiting = values.get(WAITING)
        status.kv_cache_usage = next((values[k] for k in KV_CACHE if k in values), None)
        queries, hits = values.get(PREFIX_QUERIES), values.get(PREFIX_HITS)
        if queries and hits is not None:
            status.prefix_cache_hit_rate = hits / queries
        generated = values.get(GENERATED)
        now = time.monotonic()
        if generated is not None:
            last = self._last
            if last is not None and now > last.at and generated >= last.generated:
                status.tokens_per_s = (generated - last.generated) / (now - last.at)
            self._last = _Reading(now, generated)

    async def _served_model(self) -> str | None:
        try:
            code, body = await asyncio.to_thread(_get, self.root + "/v1/models")
            data = json.loads(body) if code == 200 else {}
        except (OSError, ValueError):
            return None
        models = data.get("data") if isinstance(data, dict) else None
        if isinstance(models, list) and models and isinstance(models[0], dict):
            model = models[0].get("id")
            return model if isinstance(model, str) else None
        return None
