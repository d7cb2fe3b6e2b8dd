"""Fixtures of the agent tests: connected messagers on the session's mosquitto or an in-memory broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from agents_support import MakeMessager

from argentic.messaging import Messager
from argentic.messaging.memory import MemoryBroker
from argentic.testing.mosquitto import MosquittoBroker


@pytest.fixture
async def mqtt(mosquitto: MosquittoBroker, namespace: str) -> AsyncIterator[MakeMessager]:
    """Make connected messagers on the shared mosquitto, in the test's own namespace."""
    made: list[Messager] = []

    async def make(**options: Any) -> Messager:
        options.setdefault("persistent", False)
        messager = Messager(mosquitto.host, mosquitto.port, namespace=namespace, **options)
        await messager.connect()
        made.append(messager)
        return messager

    yield make
    for messager in reversed(made):
        await messager.disconnect()


@pytest.fixture
def memory_broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
async def memory(memory_broker: MemoryBroker, namespace: str) -> AsyncIterator[MakeMessager]:
    """Make connected messagers on an in-memory broker (the fast tier)."""
    made: list[Messager] = []

    async def make(**options: Any) -> Messager:
        options.setdefault("persistent", False)
        messager = Messager(namespace=namespace, transport=memory_broker.transport(), **options)
        await messager.connect()
        made.append(messager)
        return messager

    yield make
    for messager in reversed(made):
        await messager.disconnect()
