"""Shared fixtures: a real mosquitto broker on loopback (one per test session, plus per-test ones)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from argentic.testing.mosquitto import MosquittoBroker


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[MosquittoBroker]:
    """One mosquitto for the session; tests isolate themselves with :func:`namespace`."""
    with MosquittoBroker() as broker:
        yield broker


@pytest.fixture
def private_mosquitto() -> Iterator[MosquittoBroker]:
    """A mosquitto of the test's own, for tests that stop, restart or reconfigure it."""
    with MosquittoBroker() as broker:
        yield broker


@pytest.fixture
def namespace() -> str:
    """A topic namespace unique to the test, so tests sharing a broker never see each other."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def vllm_server() -> Iterator[object]:
    """One real vLLM CPU server (Gemma 3 270M) per session: ``.base_url`` (.../v1), ``.model``, ``.port``."""
    from argentic.testing.vllm_server import cpu_vllm_server

    with cpu_vllm_server() as server:
        yield server
