"""End to end with the real vLLM CPU server: agent and tool service in processes of their own."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from agents_support import REPO, service_process
from pydantic import BaseModel, Field

from argentic.llm.markup import tool_markup
from argentic.netutil import free_port
from argentic.protocol import Answer, Message, Presence, Progress, Question, TaskStatus, Token
from argentic.testing.messagers import MakeMessager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.processes import command_env
from argentic.testing.waiting import wait_until
from argentic.tools import ToolManager
from argentic.tools.loader import import_module, tools_in

pytestmark = pytest.mark.vllm


def llm_env(server: Any) -> dict[str, str]:
    return {
        "ARGENTIC_LLM__PROVIDER": "vllm",
        "ARGENTIC_LLM__VLLM_BASE_URL": server.base_url,
        "ARGENTIC_LLM__VLLM_MODEL_NAME": server.model,
        "ARGENTIC_LLM__MAX_TOKENS": "200",
        "ARGENTIC_LLM__TEMPERATURE": "0",
        "ARGENTIC_LLM__TIMEOUT_S": "300",  # a busy 2-core machine can be slow; a timeout is not the point
    }


@pytest.fixture
def agent_process(
    mosquitto: MosquittoBroker, namespace: str, vllm_server: Any
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **command_env(mosquitto.port, namespace),
        **llm_env(vllm_server),
        # The CPU model is a small base model: one required tool call, then the answer.
        "ARGENTIC_AGENT__ROLE": "calc",
        "ARGENTIC_AGENT__TOOL_CHOICE": "required",
        "ARGENTIC_AGENT__FOLLOWUP_TOOL_CHOICE": "none",
        "ARGENTIC_AGENT__SYSTEM_PROMPT": "You answer arithmetic questions with the calculate tool.",
    }
    process = subprocess.Popen([sys.executable, "-m", "argentic.cli.main", "agent"], cwd=REPO, env=env)
    yield process
    process.terminate()
    process.wait(30)


@pytest.fixture
def tools_process(mosquitto: MosquittoBroker, namespace: str) -> Iterator[subprocess.Popen[bytes]]:
    process = service_process(mosquitto.port, namespace, "examples.tools", "example-tools")
    yield process
    process.terminate()
    process.wait(30)


class Value(BaseModel):
    # Bounded, as schemas for small models should be: an unbounded number can run to max_tokens.
    value: str = Field(max_length=24)


async def test_question_over_mqtt_answered_after_a_validated_tool_call(
    mqtt: MakeMessager, agent_process: subprocess.Popen[bytes], tools_process: subprocess.Popen[bytes]
) -> None:
    client = await mqtt()
    online = asyncio.Event()

    async def on_presence(presence: Presence) -> None:
        if presence.online:
            online.set()

    await client.subscribe(client.topics.agent_status("calc"), on_presence, model=Presence)
    tools = ToolManager(client)
    await tools.async_init()
    await tools.wait_for_tools("calculate", timeout=60)
    await asyncio.wait_for(online.wait(), 60)

    calculate = next(t for t in tools_in(import_module("examples.tools")) if t.tool_name == "calculate")
    topic = client.topics.agent_questions("calc")
    streamed = Question(text="What is 1234 * 5678?", stream=True)
    events: list[Message] = []

    async def on_event(event: Message) -> None:
        events.append(event)

    await client.subscribe(client.topics.agent_events("calc", streamed.id), on_event)
    plain, structured = await asyncio.gather(
        client.request(topic, streamed, response_model=Answer, timeout=280),
        client.request(
            topic,
            Question(text="What is 12 + 30?", output_schema=Value.model_json_schema()),
            response_model=Answer,
            timeout=280,
        ),
    )
    for answer in (plain, structured):
        assert isinstance(answer, Answer), answer
        assert answer.tool_calls, "the agent made no tool call"
        call = answer.tool_calls[0]
        assert call.name == "calculate"
        calculate.validate_arguments(call.arguments)  # the model's arguments fit the tool's schema
        assert call.ok or (call.error or "").startswith("tool_failed")
        assert answer.usage.total_tokens > 0
    assert isinstance(plain, Answer) and plain.text and tool_markup(plain.text) is None
    call = plain.tool_calls[0]
    if call.ok:  # the CPU model's answer must quote the result (a pattern its answer is held to)
        assert json.dumps(call.result["value"]) in plain.text, (call.result, plain.text)
    # events are published before the answer but may be delivered after it
    await wait_until(lambda: any(isinstance(e, TaskStatus) and e.state == "completed" for e in events))
    tool_events = [e for e in events if isinstance(e, Progress) and e.stage == "tool_call"]
    assert tool_events and tool_events[0].tool == "calculate"
    assert any(isinstance(e, Token) for e in events)  # the answer was streamed
    assert isinstance(structured, Answer)
    Value.model_validate(structured.data)


def test_the_main_example_runs(vllm_server: Any) -> None:
    """examples/single_agent_vllm.py on a broker it starts itself and the session's vLLM server."""
    env = {
        **os.environ,
        **llm_env(vllm_server),
        "ARGENTIC_MESSAGING__PORT": str(free_port()),  # nothing listens: the embedded broker starts
        "ARGENTIC_MESSAGING__EMBEDDED_BROKER": "auto",
    }
    done = subprocess.run(
        [sys.executable, "examples/single_agent_vllm.py"], cwd=REPO, env=env, capture_output=True, timeout=280
    )
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, out + err
    assert "started the embedded MQTT broker" in err
    assert re.search(r"^  tool_call calculate \{", out, flags=re.M), out
    assert re.search(r"^called calculate\(.*\) -> \{.*\}$", out, flags=re.M), out
    # The answer validates against the example's model (which value the model writes into it is
    # measured by bench/answers.py, not asserted: vLLM on the CPU writes differently across hosts).
    answer = json.loads(re.search(r"^answer: (.*)$", out, flags=re.M).group(1))  # type: ignore[union-attr]
    assert set(answer) == {"value", "sentence"} and isinstance(answer["sentence"], str)
    assert isinstance(answer["value"], int) and len(answer["sentence"]) <= 160
