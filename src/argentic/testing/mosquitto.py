"""Start a real mosquitto broker on a loopback port, for tests and benchmarks.

``apt-get install mosquitto`` provides the binary. The broker gets its own temporary config with
``set_tcp_nodelay true`` (without it each QoS 1 round trip costs tens of milliseconds), optional
password authentication, and a persistence folder so it can be stopped and restarted with its
queued messages and sessions intact.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from argentic.netutil import free_port, is_listening
from argentic.testing.processes import find_binary, stop_process, wait_serving


class MosquittoBroker:
    """A mosquitto process this object started and stops (by its pid)."""

    def __init__(
        self,
        port: int | None = None,
        *,
        users: dict[str, str] | None = None,
        persistence: bool = True,
        workdir: Path | None = None,
        acl_file: Path | None = None,
        namespace: str = "argentic",
        extra_config: Sequence[str] = (),
    ) -> None:
        self.binary = find_binary("mosquitto", "/usr/sbin/mosquitto", "mosquitto")
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.users = users
        self.persistence = persistence
        # An ACL written for the "argentic" namespace (deploy/mosquitto.acl), applied to ``namespace``.
        self.acl_file = acl_file
        self.namespace = namespace
        # Further mosquitto.conf lines, written last (a bridge: see :func:`bridge_config`).
        self.extra_config = list(extra_config)
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="argentic-mosquitto-"))
        self.process: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> Path:
        lines = [
            f"listener {self.port} {self.host}",
            "set_tcp_nodelay true",
            "max_queued_messages 100000",
            "max_inflight_messages 0",
            "persistent_client_expiration 1d",
            f"log_dest file {self.workdir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to 'mosquitto', which cannot write our folder
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/", "autosave_interval 1"]
        if self.users:
            password_file = self.workdir / "passwords"
            password_file.write_text("")
            for user, password in self.users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(password_file), user, password],
                    check=True,
                    capture_output=True,
                )
            password_file.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines.append("allow_anonymous true")
        if self.acl_file is not None:
            acl = self.workdir / "acl"
            rules = self.acl_file.read_text().splitlines()
            acl.write_text(
                "\n".join(
                    line.replace(" argentic/", f" {self.namespace}/") if not line.startswith("#") else line
                    for line in rules
                )
                + "\n"
            )
            lines.append(f"acl_file {acl}")
        lines += self.extra_config
        config = self.workdir / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        if self.process is not None and self.process.poll() is None:
            return self
        config = self._write_config()
        self.process = subprocess.Popen(
            [self.binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        process = self.process

        def why_exited() -> str:
            return process.stderr.read().decode() if process.stderr else ""

        wait_serving(
            process,
            lambda: is_listening(self.host, self.port),
            timeout=timeout,
            what=f"mosquitto on {self.host}:{self.port}",
            why_exited=why_exited,
        )
        return self

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the broker: SIGTERM (saves persistence) or SIGKILL with ``kill=True``."""
        process, self.process = self.process, None
        stop_process(process, kill=kill, timeout=timeout)

    def restart(self, *, kill: bool = False, down_for: float = 0.0) -> None:
        self.stop(kill=kill)
        time.sleep(down_for)
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def bridge_config(template: Path, remote: MosquittoBroker, namespace: str = "argentic") -> list[str]:
    """The lines of a mosquitto bridge config (``deploy/mosquitto-bridge.conf``) pointed at
    ``remote``, its topics moved from the ``argentic`` namespace to ``namespace``."""
    lines = []
    for line in template.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("address "):
            line = f"address {remote.host}:{remote.port}"
        elif line.startswith("topic argentic/"):
            line = line.replace(" argentic/", f" {namespace}/", 1)
        lines.append(line)
    return lines
