"""Fixtures of the agent tests: connected messagers on the session's mosquitto, on a mosquitto of
the test's own, or on an in-memory broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from argentic.messaging import Messager
from argentic.messaging.memory import MemoryBroker
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


@pytest.fixture
async def private_mqtt(private_mosquitto: MosquittoBroker, namespace: str) -> AsyncIterator[MakeMessager]:
    """Make connected messagers on a mosquitto of the test's own (one it may restart)."""

    def build(**options: Any) -> Messager:
        return Messager(private_mosquitto.host, private_mosquitto.port, namespace=namespace, **options)

    async with connected_messagers(build) as make:
        yield make


@pytest.fixture
def memory_broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
async def memory(memory_broker: MemoryBroker, namespace: str) -> AsyncIterator[MakeMessager]:
    """Make connected messagers on an in-memory broker (the fast tier)."""

    def build(**options: Any) -> Messager:
        options.setdefault("persistent", False)
        return Messager(namespace=namespace, transport=memory_broker.transport(), **options)

    async with connected_messagers(build) as make:
        yield make
