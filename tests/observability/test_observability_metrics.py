"""Prometheus metrics and probes: counted where questions, tool calls and model calls happen, read
over HTTP and parsed by prometheus_client, in this process and from the CLI's processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import aiomqtt
import pytest
from observe_support import REPO, SUPPORT, add, free_port, http_get, samples, value
from prometheus_client import REGISTRY

from argentic.agents import Agent, AgentClient
from argentic.errors import RequestTimeoutError
from argentic.llm import ScriptedLLM, tool_call
from argentic.messaging import Messager
from argentic.observability import MetricsServer
from argentic.protocol import Question
from argentic.testing.messagers import MakeMessager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.waiting import wait_until
from argentic.tools import ToolManager, ToolService


async def test_a_question_a_tool_call_and_a_dropped_message_move_the_counters(
    mqtt: MakeMessager, mosquitto: MosquittoBroker
) -> None:
    role = "metered"  # the registry is the process's: labels keep this test's samples apart
    async with MetricsServer(port=0) as probes:
        url = f"http://127.0.0.1:{probes.port}"
        assert (await http_get(url + "/livez"))[0] == 200
        assert (await http_get(url + "/readyz"))[0] == 503  # nothing said it is ready yet
        before = samples((await http_get(url + "/metrics"))[1])

        service = ToolService(await mqtt(), [add], "metered-tools")
        bus = await mqtt()
        tools = ToolManager(bus)
        llm = ScriptedLLM([tool_call("add", {"a": 20, "b": 22}), "42"])
        async with service, tools:
            await tools.wait_for_tools("add")
            async with Agent(llm=llm, messager=bus, tool_manager=tools, role=role) as agent:
                probes.ready_when(lambda: bus.is_connected and agent.serving)
                assert (await http_get(url + "/readyz"))[0] == 200
                answer = await AgentClient(await mqtt(), role).ask("20 + 22?", timeout=30)
                assert answer == "42"
                # Not JSON: dropped before any handler, and counted.
                async with aiomqtt.Client(mosquitto.host, mosquitto.port) as raw:
                    await raw.publish(bus.topics.agent_questions(role), b"\xffnot json", qos=1)

                name, malformed = "argentic_messages_dropped_total", {"reason": "malformed"}
                base = value(before, name, **malformed)
                await wait_until(
                    lambda: (REGISTRY.get_sample_value(name, malformed) or 0) > base,
                    what="the malformed message counted",
                )
            # The agent stopped: no longer ready.
            assert (await http_get(url + "/readyz"))[0] == 503

        after = samples((await http_get(url + "/metrics"))[1])

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("argentic_questions_total", role=role, outcome="ok") == 1
    assert moved("argentic_question_duration_seconds_count", role=role, outcome="ok") == 1
    assert moved("argentic_tool_calls_total", tool="add", outcome="ok") >= 1
    assert moved("argentic_tool_call_duration_seconds_count", tool="add") >= 1
    assert moved("argentic_model_calls_total", outcome="ok") >= 2  # the tool round, then the answer
    assert moved("gen_ai_client_operation_duration_seconds_count", gen_ai_operation_name="chat") >= 2
    assert moved("gen_ai_client_token_usage_count", gen_ai_token_type="input") >= 2
    assert moved("gen_ai_client_token_usage_sum", gen_ai_token_type="input") > 0
    assert moved("argentic_task_states_total", role=role, state="completed") == 1
    # Every task that started also ended: none left in an open state.
    assert value(after, "argentic_tasks", role=role) == 0


async def test_the_cli_processes_serve_metrics_and_probes(
    mosquitto: MosquittoBroker, namespace: str, mqtt: MakeMessager
) -> None:
    agent_port, tools_port = free_port(), free_port()
    env = {
        **os.environ,
        "ARGENTIC_MESSAGING__BROKER_ADDRESS": "127.0.0.1",
        "ARGENTIC_MESSAGING__PORT": str(mosquitto.port),
        "ARGENTIC_MESSAGING__NAMESPACE": namespace,
        "ARGENTIC_LLM__PROVIDER": "scripted",
        "ARGENTIC_AGENT__ROLE": "probed",
    }
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "argentic.cli.main", "agent",
        cwd=REPO, env={**env, "ARGENTIC_METRICS__PORT": str(agent_port)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    tools = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "argentic.cli.main", "tools", "--module", SUPPORT, "--name", "probed-tools",
        cwd=REPO, env={**env, "ARGENTIC_METRICS__PORT": str(tools_port)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        for port, process in ((agent_port, agent), (tools_port, tools)):
            async with asyncio.timeout(60):  # starting: ready once connected and serving
                while (await http_get(f"http://127.0.0.1:{port}/readyz"))[0] != 200:
                    assert process.returncode is None, "the command exited"
                    await asyncio.sleep(0.1)
        assert await AgentClient(await mqtt(), "probed").ask("hello?", timeout=30) == "hello?"
        manager = ToolManager(await mqtt())
        async with manager:
            await manager.wait_for_tools("add")
            result = await manager.call("add", {"a": 1, "b": 2})
            assert result.ok and result.result == 3

        agent_page = samples((await http_get(f"http://127.0.0.1:{agent_port}/metrics"))[1])
        assert value(agent_page, "argentic_questions_total", role="probed", outcome="ok") == 1
        assert value(agent_page, "gen_ai_client_token_usage_count", gen_ai_token_type="output") == 1
        tools_page = samples((await http_get(f"http://127.0.0.1:{tools_port}/metrics"))[1])
        assert value(tools_page, "argentic_tool_calls_total", tool="add", outcome="ok") == 1
    finally:
        for process in (agent, tools):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        errors = [(await asyncio.wait_for(p.communicate(), 60))[1].decode() for p in (agent, tools)]
    assert agent.returncode == 0 and tools.returncode == 0, errors
    # Stopped: the probes went with the process.
    assert (await http_get(f"http://127.0.0.1:{agent_port}/livez"))[0] == 0


async def test_a_broker_restart_is_counted_and_readiness_follows_the_connection(
    private_mosquitto: MosquittoBroker, namespace: str
) -> None:
    reconnects = "argentic_broker_reconnects_total"
    before = REGISTRY.get_sample_value(reconnects) or 0
    messager = Messager(private_mosquitto.host, private_mosquitto.port, namespace=namespace, persistent=False)
    async with MetricsServer(port=0) as probes, messager:
        probes.ready_when(lambda: messager.is_connected)
        url = f"http://127.0.0.1:{probes.port}/readyz"
        assert (await http_get(url))[0] == 200
        await asyncio.to_thread(private_mosquitto.stop)
        await wait_until(lambda: not messager.is_connected, what="the connection lost")
        assert (await http_get(url))[0] == 503
        await asyncio.to_thread(private_mosquitto.start)
        await wait_until(lambda: messager.is_connected, limit_s=30, what="the reconnection")
        assert (await http_get(url))[0] == 200
    assert (REGISTRY.get_sample_value(reconnects) or 0) == before + 1


async def test_the_probe_port_answers_only_its_paths() -> None:
    async with MetricsServer(port=0) as probes:
        url = f"http://127.0.0.1:{probes.port}"
        assert (await http_get(url + "/nothing"))[0] == 404
        status, body = await http_get(url + "/metrics")
        assert status == 200 and "argentic_questions_total" in body
    assert (await http_get(url + "/livez"))[0] == 0  # closed with its block


async def test_a_request_sent_again_is_counted(mqtt: MakeMessager) -> None:
    resent = "argentic_requests_resent_total"
    before = REGISTRY.get_sample_value(resent, {"reason": "no_reply"}) or 0
    bus = await mqtt()
    with pytest.raises(RequestTimeoutError):  # nobody answers role 'absent'
        await bus.request(
            bus.topics.agent_questions("absent"), Question(text="hello?"), timeout=3.0, retry_after=0.5
        )
    assert (REGISTRY.get_sample_value(resent, {"reason": "no_reply"}) or 0) >= before + 1
