"""Fixtures of the gateway tests: the team helpers of tests/agents, messagers on the session's
mosquitto, and a gateway on loopback."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from argentic.messaging import Messager
from argentic.testing.messagers import MakeMessager, connected_messagers
from argentic.testing.mosquitto import MosquittoBroker

# The scripted team helpers live with the team tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agents"))


@pytest.fixture
async def mqtt(mosquitto: MosquittoBroker, namespace: str) -> AsyncIterator[MakeMessager]:
    """Make connected messagers on the shared mosquitto, in the test's own namespace."""

    def build(**options: Any) -> Messager:
        options.setdefault("persistent", False)
        return Messager(mosquitto.host, mosquitto.port, namespace=namespace, **options)

    async with connected_messagers(build) as make:
        yield make
