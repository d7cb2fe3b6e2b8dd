"""Traces across the bus: an agent and a tool service in two processes, each writing its spans to
a file; the tool service's ``execute_tool`` span is a child of the agent's ``invoke_agent`` span,
whether the context came as the MQTT 5 user property or in the JSON (3.1.1). Without
OpenTelemetry installed, agents work and trace nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from observe_support import REPO, SUPPORT
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from argentic.agents import AgentClient
from argentic.protocol import ToolCall
from argentic.testing.messagers import MakeMessager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.processes import stop_process
from argentic.testing.waiting import wait_until

HERE = Path(__file__).resolve().parent


def spans_in(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def named(spans: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [s for s in spans if s["name"].startswith(prefix)]


def tool_process(
    mosquitto: MosquittoBroker, namespace: str, protocol: str, spans: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ARGENTIC_MESSAGING__BROKER_ADDRESS": "127.0.0.1",
        "ARGENTIC_MESSAGING__PORT": str(mosquitto.port),
        "ARGENTIC_MESSAGING__NAMESPACE": namespace,
        "ARGENTIC_MESSAGING__PROTOCOL": f"'{protocol}'",  # YAML: a string, not the number 5
        "ARGENTIC_TRACING__ENABLED": "true",
        "ARGENTIC_TRACING__FILE": str(spans),
    }
    command = [sys.executable, "-m", "argentic.cli.main", "tools", "--module", SUPPORT, "--name", "traced"]
    return subprocess.Popen(command, cwd=REPO, env=env)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_the_tool_services_span_is_a_child_of_the_agents(
    protocol: str, mosquitto: MosquittoBroker, namespace: str, mqtt: MakeMessager, tmp_path: Path
) -> None:
    agent_spans, tool_spans = tmp_path / "agent.jsonl", tmp_path / "tools.jsonl"
    tools = tool_process(mosquitto, namespace, protocol, tool_spans)
    agent = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE / "traced_agent_process.py"),
        str(mosquitto.port), namespace, "traced", protocol, str(agent_spans),
        cwd=HERE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert agent.stdout is not None
        assert (await asyncio.wait_for(agent.stdout.readline(), 60)).strip() == b"READY"
        assert await AgentClient(await mqtt(), "traced").ask("2 + 3?", timeout=30) == "5"
        await wait_until(lambda: bool(named(spans_in(tool_spans), "execute_tool")))
        await wait_until(lambda: bool(named(spans_in(agent_spans), "invoke_agent")))
    finally:
        stop_process(tools)
        if agent.returncode is None:
            agent.terminate()
        await asyncio.wait_for(agent.wait(), 30)

    agent_side, tool_side = spans_in(agent_spans), spans_in(tool_spans)
    [invoke] = named(agent_side, "invoke_agent")
    assert invoke["name"] == "invoke_agent traced" and invoke["parent_id"] is None
    assert invoke["attributes"]["gen_ai.operation.name"] == "invoke_agent"
    assert invoke["attributes"]["gen_ai.agent.name"] == "traced"
    chats = named(agent_side, "chat")
    assert len(chats) == 2 and {c["name"] for c in chats} == {"chat scripted-model"}
    for chat in chats:
        assert chat["parent_id"] == invoke["context"]["span_id"]
        assert chat["kind"] == "SpanKind.CLIENT"
        assert chat["attributes"]["gen_ai.operation.name"] == "chat"
        assert chat["attributes"]["gen_ai.request.model"] == "scripted-model"
        assert chat["attributes"]["gen_ai.usage.input_tokens"] > 0
    [execute] = named(tool_side, "execute_tool")
    assert execute["name"] == "execute_tool add"
    assert execute["context"]["trace_id"] == invoke["context"]["trace_id"]
    assert execute["parent_id"] == invoke["context"]["span_id"]
    assert execute["attributes"]["gen_ai.tool.name"] == "add"
    assert execute["attributes"]["gen_ai.operation.name"] == "execute_tool"
    assert execute["resource"]["attributes"]["service.name"] == "argentic-tools"


async def test_a_traceparent_in_the_mqtt5_user_property_alone_is_followed(
    mosquitto: MosquittoBroker, namespace: str, tmp_path: Path
) -> None:
    spans = tmp_path / "tools.jsonl"
    tools = tool_process(mosquitto, namespace, "5", spans)
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    try:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5) as raw:
            inbox = f"{namespace}/clients/raw/inbox"
            await raw.subscribe(inbox, qos=1)
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.UserProperty = [("traceparent", f"00-{trace_id}-{span_id}-01")]
            call = ToolCall(tool="add", arguments={"a": 1, "b": 1}, reply_to=inbox)
            async with asyncio.timeout(60):  # the service starting: the call is sent until answered
                while True:
                    await raw.publish(
                        f"{namespace}/tools/add/calls", call.to_json(), qos=1, properties=properties
                    )
                    try:
                        async with asyncio.timeout(1):
                            reply = await anext(aiter(raw.messages))
                            break
                    except TimeoutError:
                        call = call.model_copy(update={"id": call.id + "x"})
            assert json.loads(reply.payload)["result"] == 2
        await wait_until(lambda: bool(named(spans_in(spans), "execute_tool")))
    finally:
        stop_process(tools)
    [execute] = named(spans_in(spans), "execute_tool")
    assert execute["context"]["trace_id"] == "0x" + trace_id and execute["parent_id"] == "0x" + span_id


def test_without_opentelemetry_an_agent_answers_and_traces_nothing() -> None:
    script = """
import asyncio, sys
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
from argentic import Agent
from argentic.llm import ScriptedLLM, tool_call
from argentic.observability import tracing

def add(a: int, b: int) -> int:
    return a + b

async def main() -> None:
    agent = Agent(llm=ScriptedLLM([tool_call("add", {"a": 1, "b": 2}), "3"]), tools=[add])
    assert await agent.query("1 + 2?") == "3"
    assert not tracing.available() and tracing.current_traceparent() is None
    print("OK")

asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, timeout=120)
    assert done.stdout.strip() == b"OK", done.stderr.decode()[-2000:]


def test_a_delegates_span_is_a_child_of_its_askers() -> None:
    # In a process of its own: the tracer provider is set once per process.
    script = """
import asyncio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from argentic.agents.team import TeamAgent
from argentic.agents import AgentClient
from argentic.llm import ScriptedLLM, tool_call
from argentic.messaging import Messager
from argentic.messaging.memory import MemoryBroker

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

async def main() -> None:
    broker = MemoryBroker()
    def bus() -> Messager:
        return Messager(namespace="t", transport=broker.transport(), persistent=False)
    lead_llm = ScriptedLLM([tool_call("ask_helper", {"question": "how much?"}), "it says 7"])
    async with bus() as a, bus() as b, bus() as c:
        async with (
            TeamAgent(ScriptedLLM(["7"]), b, role="helper"),
            TeamAgent(lead_llm, a, role="lead", delegates={"helper": "knows numbers"}),
        ):
            assert await AgentClient(c, "lead").ask("ask the helper", timeout=30) == "it says 7"
    spans = {s.name: s for s in exporter.get_finished_spans()}
    lead, helper = spans["invoke_agent lead"], spans["invoke_agent helper"]
    assert helper.context.trace_id == lead.context.trace_id
    assert helper.parent is not None and helper.parent.span_id == lead.context.span_id
    print("OK")

asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, timeout=120)
    assert done.stdout.strip() == b"OK", done.stderr.decode()[-3000:]
