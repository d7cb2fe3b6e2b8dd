"""Messaging fixtures: the same tests run against mosquitto (MQTT 5) and the embedded amqtt (3.1.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from messaging_support import BrokerUnderTest

from argentic.messaging import Messager
from argentic.messaging.embedded_broker import EmbeddedBroker
from argentic.netutil import free_port
from argentic.testing.messagers import connected_messagers
from argentic.testing.mosquitto import MosquittoBroker


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def amqtt_broker() -> AsyncIterator[EmbeddedBroker]:
    broker = EmbeddedBroker("127.0.0.1", free_port())
    await broker.start()
    yield broker
    await broker.stop()


@pytest.fixture(params=["mosquitto", "amqtt"])
def broker(request: pytest.FixtureRequest) -> BrokerUnderTest:
    if request.param == "mosquitto":
        mosquitto: MosquittoBroker = request.getfixturevalue("mosquitto")
        return BrokerUnderTest("mosquitto", mosquitto.host, mosquitto.port)
    embedded: EmbeddedBroker = request.getfixturevalue("amqtt_broker")
    return BrokerUnderTest("amqtt", embedded.host, embedded.port)


@pytest_asyncio.fixture(loop_scope="session")
async def messagers() -> AsyncIterator[Callable[..., Awaitable[Messager]]]:
    """``await messagers(host, port, **kwargs)``: connected Messagers, disconnected after the test."""

    def build(host: str, port: int, **kwargs: Any) -> Messager:
        kwargs.setdefault("reconnect_initial_delay_s", 0.05)
        kwargs.setdefault("reconnect_max_delay_s", 0.5)
        return Messager(host, port, **kwargs)

    async with connected_messagers(build) as make:
        yield make


@pytest.fixture
def connect(
    broker: BrokerUnderTest, namespace: str, messagers: Callable[..., Awaitable[Messager]]
) -> Callable[..., Awaitable[Messager]]:
    """``await connect(**kwargs)``: a Messager on the parametrized broker in the test's namespace."""

    async def make(**kwargs: Any) -> Messager:
        kwargs.setdefault("namespace", namespace)
        return await messagers(broker.host, broker.port, **kwargs)

    return make


@pytest.fixture
def private_mosquitto_users() -> Iterator[MosquittoBroker]:
    with MosquittoBroker(users={"alice": "secret"}) as broker:
        yield broker
