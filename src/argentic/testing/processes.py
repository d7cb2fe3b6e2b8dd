"""The processes the tests and benches start (mosquitto, redis-server, argentic commands): finding
the binary, an argentic command's environment, waiting until the process serves, and stopping only
that process."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from argentic.netutil import is_listening


def find_binary(name: str, fallback: str, package: str) -> str:
    """``name`` on the PATH, else at ``fallback`` (sbin folders are not always on it)."""
    binary = shutil.which(name) or (fallback if Path(fallback).exists() else None)
    if binary is None:
        raise RuntimeError(f"{name} is not installed (apt-get install -y {package})")
    return binary


def wait_serving(
    process: subprocess.Popen[bytes],
    serving: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    why_exited: Callable[[], str],
) -> None:
    """Return once ``serving()``; raise when the process exits first (saying ``why_exited()``) or
    after ``timeout`` seconds (the process stopped)."""
    deadline = time.monotonic() + timeout
    while not serving():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {why_exited()}")
        if time.monotonic() > deadline:
            stop_process(process)
            raise TimeoutError(f"{what} did not serve within {timeout}s")
        time.sleep(0.01)


def wait_listening(process: subprocess.Popen[bytes], port: int, *, what: str, timeout: float = 60.0) -> None:
    """Return once ``process`` listens on loopback ``port``; raise when it exits first, or after
    ``timeout`` seconds."""
    wait_serving(
        process,
        lambda: is_listening("127.0.0.1", port),
        timeout=timeout,
        what=what,
        why_exited=lambda: "see its output",
    )


@contextlib.contextmanager
def serving_command(
    args: Sequence[str], env: Mapping[str, str], *, port: int, what: str, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``argentic ARGS`` in a process of its own (in ``cwd``), once it listens on loopback
    ``port``; stopped on the way out."""
    command = [sys.executable, "-m", "argentic.cli.main", *args]
    process = subprocess.Popen(command, cwd=cwd, env=dict(env))
    try:
        wait_listening(process, port, what=what)
        yield process
    finally:
        stop_process(process)


def stop_process(
    process: subprocess.Popen[bytes] | None, *, kill: bool = False, timeout: float = 10.0
) -> None:
    """SIGTERM (SIGKILL with ``kill``) the process and wait for it; SIGKILL if it outlasts ``timeout``."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs; a zombie waiting to be reaped counts as ended.

    The process may be reaped between opening its ``stat`` and reading it, which reads as
    ``ProcessLookupError``: that is "ended" too.
    """
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def command_env(broker_port: int, namespace: str, host: str = "127.0.0.1") -> dict[str, str]:
    """The environment of an argentic command run as a process of its own on the broker at
    ``host``: this process's, with the messaging settings (and no embedded broker of its own)."""
    return {
        **os.environ,
        "ARGENTIC_MESSAGING__BROKER_ADDRESS": host,
        "ARGENTIC_MESSAGING__PORT": str(broker_port),
        "ARGENTIC_MESSAGING__NAMESPACE": namespace,
        "ARGENTIC_MESSAGING__EMBEDDED_BROKER": "never",
    }
