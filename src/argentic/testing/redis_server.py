"""Start a real redis-server on a loopback port, for tests and benchmarks.

``apt-get install redis-server`` provides the binary. The server keeps nothing on disk (no RDB
snapshots, no append-only file) and can be given a password (``requirepass``) and a memory limit
(``maxmemory``, refusing writes beyond it unless another ``maxmemory_policy`` is given).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from argentic.netutil import free_port
from argentic.testing.processes import find_binary, stop_process, wait_serving


def _answers_ping(host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether a Redis server answers at host:port (a refusal for want of a password counts)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


class RedisServer:
    """A redis-server process this object started and stops (by its pid): ``with RedisServer() as
    server: server.url``."""

    def __init__(
        self,
        port: int | None = None,
        *,
        password: str | None = None,
        maxmemory: str | int | None = None,
        maxmemory_policy: str = "noeviction",
    ) -> None:
        self.binary = find_binary("redis-server", "/usr/bin/redis-server", "redis-server")
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.password = password
        self.maxmemory = maxmemory
        self.maxmemory_policy = maxmemory_policy
        self.workdir = Path(tempfile.mkdtemp(prefix="argentic-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT/0``."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def _args(self) -> list[str]:
        args = [
            self.binary,
            "--bind", self.host,
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        if self.maxmemory is not None:
            args += ["--maxmemory", str(self.maxmemory), "--maxmemory-policy", self.maxmemory_policy]
        return args

    def _log(self) -> str:
        try:
            return (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.process is not None and self.process.poll() is None:
            return self
        self.process = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_serving(
            self.process,
            lambda: _answers_ping(self.host, self.port),
            timeout=timeout,
            what=f"redis-server on {self.host}:{self.port} (answering PING)",
            why_exited=self._log,
        )
        return self

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the server: SIGTERM, or SIGKILL with ``kill=True``."""
        process, self.process = self.process, None
        stop_process(process, kill=kill, timeout=timeout)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
