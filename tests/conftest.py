"""Shared fixtures: a real mosquitto broker on loopback (one per test session, plus per-test ones)
and a real redis-server."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from argentic.config import CpuModelName
from argentic.storage import Store
from argentic.testing import stores
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.redis_server import RedisServer
from argentic.testing.stores import KINDS


def pytest_configure(config: pytest.Config) -> None:
    # Agents the tests start (in process or as `argentic` commands) keep their conversations in a
    # store of the test run's own, not in the user's data folder.
    if "ARGENTIC_DATA_DIR" not in os.environ:
        os.environ["ARGENTIC_DATA_DIR"] = tempfile.mkdtemp(prefix="argentic-test-data-")


@pytest.fixture(params=KINDS)
async def store_pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    """Two handles on one fresh store of each kind (memory, SQLite, Redis), as two replicas hold it."""
    redis_url = request.getfixturevalue("redis_server").url if request.param == "redis" else None
    async with stores.store_pair(request.param, tmp_path, redis_url) as pair:
        yield pair


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[MosquittoBroker]:
    """One mosquitto for the session; tests isolate themselves with :func:`namespace`."""
    with MosquittoBroker() as broker:
        yield broker


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session (no persistence); tests isolate themselves by key prefix."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def private_mosquitto() -> Iterator[MosquittoBroker]:
    """A mosquitto of the test's own, for tests that stop, restart or reconfigure it."""
    with MosquittoBroker() as broker:
        yield broker


@pytest.fixture
def namespace() -> str:
    """A topic namespace unique to the test, so tests sharing a broker never see each other."""
    return f"t{uuid.uuid4().hex[:12]}"


#: The session's CPU vLLM servers, by the fixture that gives each: the model it serves, and whether
#: a running server the environment names stands in for it (the spare is always the session's own).
SESSION_SERVERS: dict[str, tuple[CpuModelName, bool]] = {
    "vllm_server": ("gemma3-270m", True),
    "vlm_server": ("tiny-vlm", True),
    "spare_vllm_server": ("gemma3-270m", False),
}


def _servers_used(item: pytest.Item) -> set[str]:
    return set(getattr(item, "fixturenames", ())) & SESSION_SERVERS.keys()


@pytest.fixture(scope="session", autouse=True)
def servers_ahead(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The session's vLLM servers that its tests use, started as the session starts, at the lowest
    priority (the tests running meanwhile keep the CPU they need); their fixtures take them from
    here. The tests that use them run last (``pytest_collection_modifyitems``), so each server has
    started by then: about 75 s of waiting each, saved."""
    from argentic.testing.vllm_server import EXTERNAL_URL_VARIABLES, start_cpu_vllm_server

    wanted = set().union(*(_servers_used(item) for item in request.session.items))
    started: dict[str, Any] = {}
    try:
        for name in sorted(wanted):
            cpu_model, may_be_external = SESSION_SERVERS[name]
            if may_be_external and os.environ.get(EXTERNAL_URL_VARIABLES[cpu_model]):
                continue
            try:
                started[name] = start_cpu_vllm_server(cpu_model=cpu_model, niceness=19)
            except Exception as exc:  # its fixture tries again: only the tests that use it fail
                warnings.warn(f"could not start {name} ahead: {exc}", stacklevel=1)
        yield started
    finally:
        for server in started.values():  # any no test took
            server.close()


@contextlib.contextmanager
def _session_server(servers_ahead: dict[str, Any], name: str) -> Iterator[Any]:
    """The server of fixture ``name``: the one started ahead, or else one started now (or the one
    the environment names, where it may stand in)."""
    from argentic.testing.vllm_server import cpu_vllm_server, start_cpu_vllm_server

    cpu_model, may_be_external = SESSION_SERVERS[name]
    started = servers_ahead.pop(name, None)
    if started is None and not may_be_external:
        started = start_cpu_vllm_server(cpu_model=cpu_model)
    with cpu_vllm_server(cpu_model=cpu_model, started=started) as server:
        yield server


@pytest.fixture(scope="session")
def vllm_server(servers_ahead: dict[str, Any]) -> Iterator[object]:
    """One real vLLM CPU server (Gemma 3 270M) per session: ``.base_url`` (.../v1), ``.model``, ``.port``."""
    with _session_server(servers_ahead, "vllm_server") as server:
        yield server


@pytest.fixture(scope="session")
def vlm_server(servers_ahead: dict[str, Any]) -> Iterator[object]:
    """One real vLLM CPU server with the tiny vision-language model per session (random weights: it
    takes images, answers noise), allowing ``VLM_IMAGE_LIMIT`` images per prompt. Like ``vllm_server``."""
    with _session_server(servers_ahead, "vlm_server") as server:
        yield server


@pytest.fixture(scope="session")
def spare_vllm_server(servers_ahead: dict[str, Any]) -> Iterator[Any]:
    """A second text server like ``vllm_server``, always of the session's own (never one named by
    the environment), for the test that kills it: a ``VLLMServer``."""
    with _session_server(servers_ahead, "spare_vllm_server") as server:
        yield server


GEMMA_3N = "google/gemma-3n-E4B-it"


def gpu_available() -> bool:
    """A Gemma 3n server can be had: one given by ``ARGENTIC_TEST_GEMMA3N_URL``, or CUDA to start one."""
    if os.environ.get("ARGENTIC_TEST_GEMMA3N_URL"):
        return True
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        import torch  # type: ignore[import-not-found]
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The tests that need vLLM last (in their order), so that the servers started ahead of them
    # (``servers_ahead``) are ready by then.
    items.sort(key=lambda item: item.get_closest_marker("vllm") is not None or bool(_servers_used(item)))
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (or ARGENTIC_TEST_GEMMA3N_URL) for Gemma 3n")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def gemma3n_server() -> Iterator[Any]:
    """Gemma 3n on vLLM with two images and one audio clip per prompt (or ``ARGENTIC_TEST_GEMMA3N_URL``,
    already running): ``.base_url`` and ``.model``. For tests marked ``gpu``."""
    external = os.environ.get("ARGENTIC_TEST_GEMMA3N_URL")
    if external:
        yield type("External", (), {"base_url": external.rstrip("/"), "model": GEMMA_3N})()
        return
    from argentic.config import LLMServerConfig
    from argentic.llm.local_server import start_server
    from argentic.netutil import free_port

    config = LLMServerConfig(
        model=GEMMA_3N,
        served_model_name=GEMMA_3N,
        port=free_port(),
        max_model_len=8192,
        limit_mm_per_prompt={"image": 2, "audio": 1},
        startup_timeout_s=1800,
    )
    server = start_server(config)
    try:
        yield server
    finally:
        server.close()
