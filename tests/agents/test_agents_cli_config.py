"""The commands and their config: a bad config is one clear line, and logging.level is obeyed."""

from __future__ import annotations

import asyncio
import os
import sys

from agents_support import REPO

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
