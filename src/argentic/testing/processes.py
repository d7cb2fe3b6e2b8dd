"""The servers the tests start (mosquitto, redis-server): finding the binary, waiting until the
process serves, and stopping only that process."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


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
