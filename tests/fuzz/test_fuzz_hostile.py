"""Generated hostile traffic against a running agent, tool service and WebRTC video driver.

Hypothesis generates payloads (bytes, JSON of every message type with wild ids, reply topics,
sizes, nesting and numbers), MQTT 5 properties and retain flags, and sends them to every topic
those parts listen on, while valid questions and tool calls keep flowing. Nothing may crash or
stop: every valid request is answered, and afterwards the agent, the tools and the video driver
still serve (a real WebRTC stream connects and delivers frames).

``ARGENTIC_FUZZ_EXAMPLES`` sets the number of generated cases (default 500, about 20 s).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from argentic.agents import Agent
from argentic.llm import ChatRequest, FunctionLLM
from argentic.messaging import Messager
from argentic.protocol import Answer, Question
from argentic.testing.messagers import MakeMessager, connected_messagers
from argentic.testing.mosquitto import MosquittoBroker
from argentic.tools import ToolManager, ToolService, tool
from argentic.video import TestPatternSource, WebRTCDriver, WebRTCSender

EXAMPLES = int(os.environ.get("ARGENTIC_FUZZ_EXAMPLES", "500"))
LOOPBACK = ["127.0.0.1"]


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
async def echo(text: str) -> str:
    """Repeat a text."""
    return text


@dataclass
class System:
    """The parts under attack and the valid traffic that keeps flowing meanwhile."""

    namespace: str
    agent_bus: Messager
    client: Messager
    tools: ToolManager
    driver: WebRTCDriver
    raw: aiomqtt.Client
    cases: int = 0
    valid_sent: int = 0
    valid_answered: int = 0
    failures: list[str] = field(default_factory=list)

    def topics(self) -> list[str]:
        t = self.agent_bus.topics
        return [
            t.agent_questions("fuzz"),
            t.agent_status("fuzz"),
            t.agent_events("fuzz", "q"),
            t.tool_calls("add"),
            t.tool_calls("echo"),
            t.tool_calls("missing"),
            t.tool_service("fuzztools"),
            t.tool_service("other"),
            t.video_offer("cam"),
            t.client_inbox(self.agent_bus.client_id),
            t.client_inbox(self.client.client_id),
            t.client_status(self.agent_bus.client_id),
            t.client_status("someone"),
        ]


@pytest.fixture
async def system(mosquitto: MosquittoBroker, namespace: str) -> AsyncIterator[System]:
    def build(**options: Any) -> Messager:
        return Messager(mosquitto.host, mosquitto.port, namespace=namespace, persistent=False, **options)

    async with connected_messagers(build) as make:
        yield await _serve(make, mosquitto, namespace)


async def _serve(make: MakeMessager, mosquitto: MosquittoBroker, namespace: str) -> System:
    service = ToolService(await make(), [add, echo], "fuzztools", call_timeout_s=10)
    await service.start()
    agent_bus = await make()
    tools = ToolManager(agent_bus)
    await tools.start()
    await tools.wait_for_tools("add", "echo")

    def answer(request: ChatRequest) -> str:
        return f"seen {len(request.messages)}"

    agent = Agent(llm=FunctionLLM(answer), messager=agent_bus, tool_manager=tools, role="fuzz")
    await agent.start()
    driver = WebRTCDriver(await make(), "cam", host_addresses=LOOPBACK, buffer_size=30)
    await driver.start()
    raw = aiomqtt.Client(mosquitto.host, mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5)
    await raw.__aenter__()
    return System(namespace, agent_bus, await make(), tools, driver, raw)


# --- what is generated -----------------------------------------------------------------------

TYPES = [
    "question", "answer", "error", "progress", "token", "presence", "client_status", "observation",
    "tool_announcement", "tool_call", "tool_result", "webrtc_offer", "webrtc_answer", "nonsense",
]  # fmt: skip
WEIRD_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["a/b", "$x", "+", "#", "", "q1", "x" * 300, "\x00", "../..", "/".join(["x"] * 250)]),
)
# Integers too long for Python's own int/str conversion: written into the JSON text afterwards
# (hypothesis could not even print them).
HUGE = {'"<huge>"': b"1" + b"0" * 5000, '"<-huge>"': b"-" + b"9" * 4400}
NUMBERS = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(sorted(HUGE)).map(lambda marker: marker.strip('"')),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | NUMBERS | WEIRD_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(WEIRD_TEXT, children, max_size=4),
    max_leaves=12,
)


@st.composite
def envelopes(draw: st.DrawFn, namespace: str, inbox: str) -> bytes:
    """A JSON object that looks like an argentic message, with hostile values in its fields."""
    reply_topics = st.sampled_from(
        [
            inbox,
            f"{namespace}/clients/x/inbox",
            f"{namespace}/agents/fuzz/questions",
            f"{namespace}/tools/services/fuzztools",
            "/".join(["x"] * 250),
            f"{namespace}/clients/+/inbox",
            "#",
            "",
        ]
    )
    message: dict[str, Any] = {"type": draw(st.sampled_from(TYPES))}
    optional: dict[str, st.SearchStrategy[Any]] = {
        "id": WEIRD_TEXT | NUMBERS | JSON_VALUES,
        "reply_to": reply_topics | JSON_VALUES,
        "correlation_id": WEIRD_TEXT | NUMBERS,
        "text": st.text(max_size=50) | st.just("x" * 250_000),
        "conversation_id": WEIRD_TEXT,
        "tool": st.sampled_from(["add", "echo", "missing", "a/b"]) | WEIRD_TEXT,
        "arguments": JSON_VALUES | st.fixed_dictionaries({"a": NUMBERS, "b": NUMBERS}),
        "service_id": st.sampled_from(["fuzztools", "other"]) | WEIRD_TEXT,
        "tools": JSON_VALUES,
        "client_id": WEIRD_TEXT,
        "online": JSON_VALUES,
        "role": st.sampled_from(["fuzz", "other"]) | WEIRD_TEXT,
        "sdp": st.text(max_size=200) | st.just("v=0\r\n" * 1000),
        "expires_at": NUMBERS,
        "ts": NUMBERS,
        "v": NUMBERS,
        "stream": JSON_VALUES,
        "output_schema": JSON_VALUES,
        "extra": JSON_VALUES,
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            message[key] = draw(strategy)
    text = json.dumps(message, allow_nan=True).encode()
    for marker, digits in HUGE.items():
        text = text.replace(marker.encode(), digits)
    return text


#: Payloads too big to print, named by what they are.
SPECIAL = {
    "deep": b"[" * 50_000 + b"]" * 50_000,
    "unclosed": b"{" * 10_000,
    "empty": b"",
    "3 MB question": b'{"type": "question", "text": "' + b"y" * 3_000_000 + b'"}',
    "5 MB": b"z" * 5_000_000,
}


def payloads(namespace: str, inbox: str) -> st.SearchStrategy[bytes | str]:
    return st.one_of(envelopes(namespace, inbox), st.binary(max_size=512), st.sampled_from(sorted(SPECIAL)))


# --- valid traffic ---------------------------------------------------------------------------


async def valid_traffic(system: System, stop: asyncio.Event) -> None:
    """Questions and tool calls, one after the other, until stopped: each must be answered."""
    topic = system.client.topics.agent_questions("fuzz")
    n = 0
    while not stop.is_set():
        n += 1
        system.valid_sent += 2
        try:
            answer = await system.client.request(
                topic, Question(text=f"valid {n}"), response_model=Answer, timeout=20
            )
            if isinstance(answer, Answer):
                system.valid_answered += 1
            else:
                system.failures.append(f"question {n}: {answer}")
            result = await system.tools.call("add", {"a": n, "b": 1}, timeout=20)
            if result.ok and result.result == n + 1:
                system.valid_answered += 1
            else:
                system.failures.append(f"call {n}: {result.error}")
        except Exception as exc:
            system.failures.append(f"round {n}: {type(exc).__name__}: {exc}")
        await asyncio.sleep(0.02)


# --- the attack --------------------------------------------------------------------------------


async def test_hostile_traffic_stops_nothing(system: System) -> None:
    stop = asyncio.Event()
    traffic = asyncio.create_task(valid_traffic(system, stop))
    inbox = system.agent_bus.topics.client_inbox("fuzzer")
    topics = system.topics()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        topic=st.sampled_from(topics),
        payload=payloads(system.namespace, inbox),
        retain=st.booleans(),
        response_topic=st.none() | st.sampled_from([inbox, "/".join(["r"] * 250), f"{system.namespace}/x"]),
        correlation=st.none() | st.binary(max_size=64),
        qos=st.sampled_from([0, 1]),
    )
    def attack(
        topic: str,
        payload: bytes,
        retain: bool,
        response_topic: str | None,
        correlation: bytes | None,
        qos: int,
    ) -> None:
        properties = None
        if response_topic is not None or correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if response_topic is not None:
                properties.ResponseTopic = response_topic
            if correlation is not None:
                properties.CorrelationData = correlation
        publishing = system.raw.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        asyncio.run_coroutine_threadsafe(publishing, loop).result(timeout=30)
        system.cases += 1

    # hypothesis drives a sync function; each case publishes on this loop from a worker thread
    loop = asyncio.get_running_loop()
    await asyncio.to_thread(attack)

    stop.set()
    await asyncio.wait_for(traffic, 60)
    answered = f"{system.valid_answered} of {system.valid_sent} valid requests answered"
    print(f"\nfuzz: {system.cases} generated cases; {answered}")
    assert system.cases >= EXAMPLES * 0.9
    assert system.failures == []
    assert system.valid_sent > 0 and system.valid_answered == system.valid_sent

    # every part still serves: the agent, the tools, and the video driver takes a real stream
    after = await system.client.request(
        system.client.topics.agent_questions("fuzz"),
        Question(text="after"),
        response_model=Answer,
        timeout=20,
    )
    assert isinstance(after, Answer)
    assert (await system.tools.call("echo", {"text": "still"}, timeout=20)).result == "still"
    source = TestPatternSource(160, 120, fps=15)
    await source.start()
    sender = WebRTCSender(system.client, source, "cam", host_addresses=LOOPBACK)
    try:
        await sender.connect()
        await system.driver.wait_connected(20)
        async with asyncio.timeout(20):
            while system.driver.frames_seen < 5:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        await sender.close()
        await source.stop()
        await system.driver.stop()
        await system.raw.__aexit__(None, None, None)
