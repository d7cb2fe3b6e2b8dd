"""The commands and their config: a bad config is one clear line, logging.level is obeyed, and a
serving command stops everything it started on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest
from agents_support import REPO

from argentic.agents.client import AgentClient
from argentic.testing.messagers import MakeMessager
from argentic.testing.mosquitto import MosquittoBroker


async def run(*args: str, **env: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "argentic.cli.main", *args,
        cwd=REPO, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_argentic_tools_reports_a_bad_config_in_one_line() -> None:
    code, err = await run("tools", "--module", "examples.tools", ARGENTIC_TOOLS__CALL_TIMEOUT_S="-1")
    assert code == 1
    assert "argentic tools: invalid configuration" in err and "tools.call_timeout_s" in err
    assert "Traceback" not in err


async def test_logging_level_is_obeyed(mosquitto: MosquittoBroker, namespace: str) -> None:
    broker = {
        "ARGENTIC_MESSAGING__BROKER_ADDRESS": "127.0.0.1",
        "ARGENTIC_MESSAGING__PORT": str(mosquitto.port),
        "ARGENTIC_MESSAGING__NAMESPACE": namespace,
    }
    ask = ("ask", "anyone?", "--role", "nobody", "--timeout", "1")
    _, quiet = await run(*ask, **broker, ARGENTIC_LOGGING__LEVEL="warning")
    _, chatty = await run(*ask, **broker, ARGENTIC_LOGGING__LEVEL="DEBUG")
    assert " INFO " not in quiet and " DEBUG " not in quiet
    assert " DEBUG " in chatty and " INFO " in chatty
    code, err = await run(*ask, **broker, ARGENTIC_LOGGING__LEVEL="LOUD")
    assert code != 0 and "logging.level" in err


@pytest.mark.parametrize("command", ["agent", "watch"])
async def test_a_command_serves_until_sigterm_and_stops_what_it_started(
    command: str, mosquitto: MosquittoBroker, namespace: str, mqtt: MakeMessager
) -> None:
    env = {
        **os.environ,
        "ARGENTIC_MESSAGING__BROKER_ADDRESS": "127.0.0.1",
        "ARGENTIC_MESSAGING__PORT": str(mosquitto.port),
        "ARGENTIC_MESSAGING__NAMESPACE": namespace,
        "ARGENTIC_LLM__PROVIDER": "scripted",
        "ARGENTIC_AGENT__ROLE": "cli",
        "ARGENTIC_VIDEO__SOURCE": "test_pattern",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "argentic.cli.main", command,
        cwd=REPO, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    client = AgentClient(await mqtt(), "cli")
    try:
        async with asyncio.timeout(60):  # the command starting: it says online once serving
            while not await client.online(timeout=1.0):  # each look waits up to 1 s
                assert process.returncode is None, f"argentic {command} exited"
        assert await client.ask("hello?", timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()[-2000:]
    # Every part it entered was stopped: the agent withdrew its presence before leaving.
    assert not await client.online()
    assert "Traceback" not in err.decode()
