"""The agent's MQTT face on a real mosquitto: questions, answers, errors, events, presence, raw clients."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from agents_support import REPO, all_tools

from argentic.agents import Agent
from argentic.llm import ScriptedLLM, tool_call
from argentic.messaging import Messager
from argentic.protocol import Answer, ErrorReply, Message, Presence, Progress, Question, TaskStatus, Token
from argentic.testing.messagers import MakeMessager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.waiting import wait_until
from argentic.tools import ToolManager, ToolService


@pytest.fixture
async def served(mqtt: MakeMessager) -> AsyncIterator[tuple[Agent, ScriptedLLM, Messager]]:
    """An agent serving role 'calc' with tools; returns it, its script, and a client messager."""
    service = ToolService(await mqtt(), all_tools(), "svc", call_timeout_s=5)
    await service.start()
    bus = await mqtt()
    tools = ToolManager(bus)
    await tools.async_init()
    await tools.wait_for_tools("add")
    llm = ScriptedLLM()
    agent = Agent(llm=llm, messager=bus, tool_manager=tools, role="calc")
    await agent.async_init()
    yield agent, llm, await mqtt()
    await agent.stop()
    await service.stop()


async def test_question_over_mqtt_gets_answer_and_events(served: tuple[Agent, ScriptedLLM, Messager]) -> None:
    _, llm, client = served
    llm.add(tool_call("add", {"a": 20, "b": 22}), "42")
    question = Question(text="20 + 22?", stream=True)
    events: list[Message] = []

    async def on_event(event: Message) -> None:
        events.append(event)

    await client.subscribe(client.topics.agent_events("calc", question.id), on_event)
    answer = await client.request(
        client.topics.agent_questions("calc"), question, response_model=Answer, timeout=30
    )
    assert isinstance(answer, Answer)
    assert answer.question_id == question.id and answer.text == "42" and answer.agent == "calc"
    assert [(c.name, c.result) for c in answer.tool_calls] == [("add", 42)]
    # events are published before the answer but may be delivered after it: one vocabulary for
    # the task's state (task_status), another for its steps (progress)
    await wait_until(lambda: any(isinstance(e, TaskStatus) and e.state == "completed" for e in events))
    states = [e.state for e in events if isinstance(e, TaskStatus)]
    assert states == ["submitted", "working", "completed"], states
    stages = [e.stage for e in events if isinstance(e, Progress)]
    assert stages == ["llm_call", "tool_call", "tool_result", "llm_call"], stages
    tool_event = next(e for e in events if isinstance(e, Progress) and e.stage == "tool_call")
    assert tool_event.tool == "add" and tool_event.arguments == {"a": 20, "b": 22}
    assert "".join(e.text for e in events if isinstance(e, Token)) == "42"

    # The same conversation continues when the client names it.
    llm.add("still 42")
    again = await client.request(
        client.topics.agent_questions("calc"),
        Question(text="and again?", conversation_id=answer.conversation_id),
        response_model=Answer,
        timeout=30,
    )
    assert isinstance(again, Answer) and again.conversation_id == answer.conversation_id
    assert "20 + 22?" in [m.text for m in llm.last_request.messages]


async def test_presence_is_retained(served: tuple[Agent, ScriptedLLM, Messager]) -> None:
    _, _, client = served
    seen: asyncio.Queue[Presence] = asyncio.Queue()

    async def on_presence(presence: Presence) -> None:
        await seen.put(presence)

    await client.subscribe(client.topics.agent_status("calc"), on_presence, model=Presence)
    presence = await asyncio.wait_for(seen.get(), 10)
    assert presence.online and presence.role == "calc"


async def test_agent_that_disconnects_without_stop_goes_offline(mqtt: MakeMessager) -> None:
    client = await mqtt()
    seen: asyncio.Queue[Presence] = asyncio.Queue()

    async def on_presence(presence: Presence) -> None:
        await seen.put(presence)

    await client.subscribe(client.topics.agent_status("brief"), on_presence, model=Presence)
    bus = await mqtt()
    await Agent(llm=ScriptedLLM(), messager=bus, role="brief").async_init()
    assert (await asyncio.wait_for(seen.get(), 10)).online
    await bus.disconnect()
    assert not (await asyncio.wait_for(seen.get(), 10)).online


async def test_role_stays_online_while_one_replica_serves(mqtt: MakeMessager) -> None:
    client = await mqtt()
    states: list[bool] = []

    async def on_presence(presence: Presence) -> None:
        states.append(presence.online)

    first = Agent(llm=ScriptedLLM(), messager=await mqtt(), role="pair")
    second = Agent(llm=ScriptedLLM(), messager=await mqtt(), role="pair")
    await first.async_init()
    await second.async_init()
    await client.subscribe(client.topics.agent_status("pair"), on_presence, model=Presence)

    async def settled(expected: bool) -> None:
        for _ in range(200):
            if states and states[-1] is expected:
                await asyncio.sleep(0.2)  # nothing else follows
                if states[-1] is expected:
                    return
            await asyncio.sleep(0.02)
        raise AssertionError(f"presence did not settle on online={expected}: {states}")

    await settled(True)
    await first.stop()
    await settled(True)  # the other replica still serves, and says so
    assert False in states  # the stop was announced, then answered
    late = await mqtt()  # a newcomer reads the retained state
    retained: asyncio.Queue[Presence] = asyncio.Queue()

    async def on_retained(presence: Presence) -> None:
        await retained.put(presence)

    await late.subscribe(late.topics.agent_status("pair"), on_retained, model=Presence)
    assert (await asyncio.wait_for(retained.get(), 10)).online
    await second.stop()
    await settled(False)


async def test_errors_reach_the_asker_and_the_agent_keeps_serving(
    served: tuple[Agent, ScriptedLLM, Messager], mosquitto: MosquittoBroker
) -> None:
    agent, llm, client = served
    topic = client.topics.agent_questions("calc")
    # The model fails: an ErrorReply with a code.
    llm.add(*[tool_call("add", {"a": i, "b": 0}) for i in range(agent.policy.max_steps)])
    failed = await client.request(topic, Question(text="loop"), timeout=30)
    assert isinstance(failed, ErrorReply) and failed.error.code == "step_limit"

    # Not JSON: nobody to answer; JSON but not a valid question: an ErrorReply to its reply_to.
    raw = [
        "this is not json",
        json.dumps({"type": "question", "text": "", "reply_to": client.inbox, "correlation_id": "bad-1"}),
    ]
    for payload in raw:
        pub = await asyncio.create_subprocess_exec(
            "mosquitto_pub", "-h", mosquitto.host, "-p", str(mosquitto.port),
            "-t", topic, "-m", payload, "-q", "1",
        )  # fmt: skip
        assert await asyncio.wait_for(pub.wait(), 30) == 0
    # A valid question after them is answered: the agent is still serving.
    llm.add("fine")
    ok = await client.request(topic, Question(text="still there?"), response_model=Answer, timeout=30)
    assert isinstance(ok, Answer) and ok.text == "fine"


async def test_invalid_question_gets_malformed_request(
    served: tuple[Agent, ScriptedLLM, Messager],
) -> None:
    _, _, client = served
    bad = Message(type="question", correlation_id="c-bad")  # no text
    reply = await client.request(client.topics.agent_questions("calc"), bad, timeout=30)
    assert isinstance(reply, ErrorReply) and reply.error.code == "malformed_request"
    assert "text" in reply.error.message


async def test_raw_mosquitto_clients(
    served: tuple[Agent, ScriptedLLM, Messager], mosquitto: MosquittoBroker
) -> None:
    """The documented form: mosquitto_sub on a reply topic, mosquitto_pub of a JSON question."""
    _, llm, client = served
    llm.add(tool_call("add", {"a": 1, "b": 2}), "3")
    ns = client.topics.namespace
    reply_topic = f"{ns}/clients/me/inbox"
    # A persistent session subscribed first (-E exits once subscribed), so that an answer arriving
    # before the reading mosquitto_sub connects is kept for it.
    session = [
        "-h",
        mosquitto.host,
        "-p",
        str(mosquitto.port),
        "-c",
        "-i",
        f"{ns}-me",
        "-q",
        "1",
        "-t",
        reply_topic,
    ]
    subscribe = await asyncio.create_subprocess_exec("mosquitto_sub", *session, "-E")
    assert await asyncio.wait_for(subscribe.wait(), 30) == 0
    sub = await asyncio.create_subprocess_exec(
        "mosquitto_sub", *session, "-C", "1", "-W", "60", stdout=asyncio.subprocess.PIPE
    )
    question = {"type": "question", "text": "1 + 2?", "reply_to": reply_topic}
    pub = await asyncio.create_subprocess_exec(
        "mosquitto_pub", "-h", mosquitto.host, "-p", str(mosquitto.port),
        "-t", f"{ns}/agents/calc/questions", "-q", "1", "-m", json.dumps(question),
    )  # fmt: skip
    assert await asyncio.wait_for(pub.wait(), 30) == 0
    out, _ = await asyncio.wait_for(sub.communicate(), 90)
    answer: dict[str, Any] = json.loads(out)
    assert answer["type"] == "answer" and answer["text"] == "3"
    assert answer["tool_calls"][0]["name"] == "add" and answer["tool_calls"][0]["result"] == 3


async def argentic_ask(broker: MosquittoBroker, namespace: str, *args: str) -> tuple[int, str, str]:
    """``argentic ask ARGS`` in a process of its own: exit code, stdout, stderr."""
    env = {
        **os.environ,
        "ARGENTIC_MESSAGING__BROKER_ADDRESS": "127.0.0.1",
        "ARGENTIC_MESSAGING__PORT": str(broker.port),
        "ARGENTIC_MESSAGING__NAMESPACE": namespace,
    }
    ask = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "argentic.cli.main", "ask", *args,
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(ask.communicate(), 120)
    assert ask.returncode is not None
    return ask.returncode, out.decode(), err.decode()


async def test_argentic_ask_cli(
    served: tuple[Agent, ScriptedLLM, Messager], mosquitto: MosquittoBroker
) -> None:
    _, llm, client = served
    llm.add(tool_call("add", {"a": 2, "b": 2}), "four")
    code, out, err = await argentic_ask(
        mosquitto, client.topics.namespace, "2 + 2?", "--role", "calc", "--stream", "--timeout", "60"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert 'tool add({"a": 2, "b": 2}) -> 4' in lines and lines[-1] == "four"
    assert "tool_call add" in err  # progress lines go to stderr
    assert "says it is online" not in err  # the agent's presence was read


async def test_argentic_ask_says_when_no_agent_is_online(mosquitto: MosquittoBroker, namespace: str) -> None:
    code, _, text = await argentic_ask(mosquitto, namespace, "anyone?", "--role", "nobody", "--timeout", "1")
    assert code == 2
    assert "no agent with role 'nobody' says it is online" in text
    assert "no answer within 1 s" in text


async def test_argentic_ask_cli_asks_for_a_structured_answer(
    served: tuple[Agent, ScriptedLLM, Messager], mosquitto: MosquittoBroker
) -> None:
    _, llm, client = served
    llm.add(tool_call("add", {"a": 2, "b": 2}), '{"value": 4}')
    code, out, err = await argentic_ask(
        mosquitto, client.topics.namespace, "2 + 2?", "--role", "calc", "--output", "value:int", "-q"
    )
    assert code == 0, err
    # structured data comes back only when the question carried the schema
    assert json.loads(out.splitlines()[-1]) == {"value": 4}


def test_ask_output_fields() -> None:
    from argentic.cli.ask import output_schema

    schema = output_schema("value:int, sentence:str")
    assert schema["properties"] == {
        "value": {"type": "integer"},
        "sentence": {"type": "string", "maxLength": 200},
    }
    assert schema["required"] == ["value", "sentence"]
    assert output_schema('{"type": "object"}') == {"type": "object"}
    for bad in ("value:complex", "value", "", "{not json"):
        with pytest.raises(argparse.ArgumentTypeError):
            output_schema(bad)
