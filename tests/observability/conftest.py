"""Fixtures of the observability tests: connected messagers on the session's mosquitto."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from argentic.messaging import Messager
from argentic.testing.messagers import MakeMessager, connected_messagers
from argentic.testing.mosquitto import MosquittoBroker


@pytest.fixture
async def mqtt(mosquitto: MosquittoBroker, namespace: str) -> AsyncIterator[MakeMessager]:
    """Make connected messagers on the shared mosquitto, in the test's own namespace."""

    def build(**options: Any) -> Messager:
        options.setdefault("persistent", False)
        return Messager(mosquitto.host, mosquitto.port, namespace=namespace, **options)

    async with connected_messagers(build) as make:
        yield make
