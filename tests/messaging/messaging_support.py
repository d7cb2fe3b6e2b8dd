"""Helpers shared by the messaging tests (a module of its own: ``conftest`` names collide across areas)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BrokerUnderTest:
    kind: str  # "mosquitto" or "amqtt"
    host: str
    port: int

    @property
    def mqtt5(self) -> bool:
        return self.kind == "mosquitto"


PEER = Path(__file__).with_name("messaging_peer.py")


async def start_peer(mode: str, broker: BrokerUnderTest, namespace: str) -> asyncio.subprocess.Process:
    protocol = "5" if broker.mqtt5 else "3.1.1"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PEER),
        mode,
        broker.host,
        str(broker.port),
        namespace,
        protocol,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    assert line.strip() == b"ready", f"peer did not start: {line!r}"
    return process


async def stop_peer(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
    await process.wait()
