"""Fixtures of the agent tests: connected messagers on the session's mosquitto, on a mosquitto of
the test's own, or on an in-memory broker."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from agents_support import MakeMessager

from argentic.messaging import Messager
from argentic.messaging.memory import MemoryBroker
from argentic.testing.mosquitto import MosquittoBroker


@contextlib.asynccontextmanager
async def connected(build: Callable[..., Messager]) -> AsyncIterator[MakeMessager]:
    """``make(**options)`` builds a messager with ``build``, connects it, and disconnects it at the end."""
    made: list[Messager] = []

    async def make(**options: Any) -> Messager:
        messager = build(**options)
        await messager.connect()
        made.append(messager)
        return messager

    try:
        yield make
    finally:
        for messager in reversed(made):
            await messager.disconnect()


@pytest.fixture
async def mqtt(mosquitto: MosquittoBroker, namespace: str) -> AsyncIterator[MakeMessager]:
    """Make connected messagers on the shared mosquitto, in the test's own namespace."""

    def build(**options: Any) -> Messager:
        options.setdefault("persistent", False)
        return Messager(mosquitto.host, mosquitto.port, namespace=namespace, **options)

    async with connected(build) as make:
        yield make


@pytest.fixture
async def private_mqtt(private_mosquitto: MosquittoBroker, namespace: str) -> AsyncIterator[MakeMessager]:
    """Make connected messagers on a mosquitto of the test's own (one it may restart)."""

    def build(**options: Any) -> Messager:
        return Messager(private_mosquitto.host, private_mosquitto.port, namespace=namespace, **options)

    async with connected(build) as make:
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

    async with connected(build) as make:
        yield make
