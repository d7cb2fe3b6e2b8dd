"""Teams on a real mosquitto with scripted models: delegation, fan-out, limits, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from team_support import answers, ask_following, asks, asks_back, config, member_process, model, states, team

from argentic.agents.client import AgentClient
from argentic.agents.delegation import Directory
from argentic.errors import AgentReplyError
from argentic.llm.scripted import tool_call
from argentic.protocol import Answer, ErrorReply, Presence, TaskStatus
from argentic.testing.messagers import MakeMessager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.processes import command_env
from argentic.testing.waiting import wait_until


async def test_a_role_asks_another_and_reads_its_answer_as_a_tool_result(
    mqtt: MakeMessager, namespace: str
) -> None:
    cfg = config(
        namespace,
        {
            "architect": {"description": "designs", "delegates": ["developer"]},
            "developer": {"description": "writes the code"},
        },
    )
    models = {
        "architect": model(asks("ask_developer", "write add()", then="plan")),
        "developer": model(answers("code")),
    }
    async with team(cfg, await mqtt(), models):
        client = AgentClient(await mqtt(), "architect")
        answer, statuses, error = await ask_following(client, "build a calculator")
    assert error is None and isinstance(answer, Answer)
    assert answer.text == 'plan: "code: write add()"'
    assert answer.tool_calls[0].name == "ask_developer" and answer.tool_calls[0].ok
    # The first question's events show the whole tree: who asked whom, and when each part ended.
    assert states(statuses, "architect") == ["submitted", "working", "completed"]
    assert states(statuses, "developer") == ["submitted", "working", "completed"]
    developer = [s for s in statuses if s.role == "developer"]
    assert {s.asked_by for s in developer} == {"architect"}
    assert {s.parent_id for s in developer} == {answer.question_id}
    assert {s.root_id for s in developer} == {answer.question_id}
    assert {s.depth for s in developer} == {1}
    # The tool the architect's model saw names the role and its description.
    first = models["architect"].requests[0]
    assert [(t.name, t.description) for t in first.tools] == [
        ("ask_developer", "Ask the developer: writes the code")
    ]


async def test_presence_carries_an_agent_card(mqtt: MakeMessager, namespace: str) -> None:
    cfg = config(
        namespace,
        {
            "architect": {"description": "designs systems", "delegates": ["reviewer"], "tools": []},
            "reviewer": {"description": "reviews", "ask_back": True},
        },
    )
    models = {"architect": model(answers("a")), "reviewer": model(answers("r"))}
    async with team(cfg, await mqtt(), models):
        directory = (await mqtt()).shared(Directory)
        architect = await directory.presence("architect", timeout=5)
        reviewer = await directory.presence("reviewer", timeout=5)
    assert isinstance(architect, Presence) and architect.online and architect.card is not None
    assert architect.card.description == "designs systems"
    assert architect.card.delegates == ["reviewer"] and architect.card.tools == []
    assert reviewer is not None and reviewer.card is not None and reviewer.card.asks_back


async def test_a_client_discovers_the_team_from_the_broker(mqtt: MakeMessager, namespace: str) -> None:
    cfg = config(
        namespace,
        {"lead": {"description": "leads", "delegates": ["developer"]}, "developer": {"description": "codes"}},
    )
    async with team(cfg, await mqtt(), {"lead": model(answers("a")), "developer": model(answers("d"))}):
        found = await (await mqtt()).shared(Directory).discover(timeout=1.0)
    assert list(found) == ["developer", "lead"]
    lead = found["lead"].card
    assert lead is not None and lead.description == "leads" and lead.delegates == ["developer"]


async def test_a_supervisor_fans_out_in_parallel_and_combines(mqtt: MakeMessager, namespace: str) -> None:
    started: list[str] = []
    both = asyncio.Event()

    def member(name: str) -> object:
        async def decide(text: str, _results: list[str]) -> str:
            # Finishes only once both members are working at the same time: parallel, or stuck.
            started.append(name)
            if len(started) >= 2:
                both.set()
            await asyncio.wait_for(both.wait(), 20)
            return f"{name} did {text}"

        return decide

    def lead(text: str, tool_results: list[str]) -> object:
        if not tool_results:
            return tool_call(
                "assign",
                {
                    "tasks": [
                        {"role": "developer", "question": "code it"},
                        {"role": "reviewer", "question": "review it"},
                    ]
                },
            )
        return "combined " + tool_results[0]

    cfg = config(
        namespace,
        {
            "lead": {"delegates": ["developer", "reviewer"], "supervise": True},
            "developer": {"description": "codes"},
            "reviewer": {"description": "reviews"},
        },
    )
    models = {
        "lead": model(lead),
        "developer": model(member("developer")),
        "reviewer": model(member("reviewer")),
    }
    async with team(cfg, await mqtt(), models):
        answer, statuses, error = await ask_following(
            AgentClient(await mqtt(), "lead"), "ship it", deadline_s=30
        )
    assert error is None and isinstance(answer, Answer)
    assert sorted(started) == ["developer", "reviewer"]
    assert "developer did code it" in answer.text and "reviewer did review it" in answer.text
    assert [t.name for t in models["lead"].requests[0].tools] == ["assign"]
    assert states(statuses, "developer")[-1] == "completed"
    assert states(statuses, "reviewer")[-1] == "completed"


async def test_a_delegation_cycle_ends_in_a_clear_error_not_a_hang(
    mqtt: MakeMessager, namespace: str
) -> None:
    cfg = config(
        namespace,
        {"a": {"delegates": ["b"]}, "b": {"delegates": ["a"]}},
    )
    models = {"a": model(asks("ask_b", "help", then="a")), "b": model(asks("ask_a", "help back", then="b"))}
    async with team(cfg, await mqtt(), models):
        answer, statuses, error = await ask_following(AgentClient(await mqtt(), "a"), "start", deadline_s=30)
    assert error is None and isinstance(answer, Answer)
    refused = [s for s in statuses if s.role == "a" and s.state == "rejected"]
    assert len(refused) == 1 and refused[0].error is not None
    assert refused[0].error.code == "delegation_cycle" and refused[0].depth == 2
    # b read the refusal as its tool's error and answered itself (a refusal is no failure).
    assert "delegation_cycle" in answer.text


async def test_the_depth_limit_refuses_a_chain_too_deep(mqtt: MakeMessager, namespace: str) -> None:
    cfg = config(
        namespace,
        {
            "a": {"delegates": ["b"]},
            "b": {"delegates": ["c"]},
            "c": {"max_depth": 1},
        },
    )
    models = {
        "a": model(asks("ask_b", "go", then="a")),
        "b": model(asks("ask_c", "go on", then="b")),
        "c": model(answers("c")),
    }
    async with team(cfg, await mqtt(), models):
        answer, statuses, error = await ask_following(AgentClient(await mqtt(), "a"), "start", deadline_s=30)
    assert error is None and isinstance(answer, Answer)
    c = [s for s in statuses if s.role == "c"]
    assert [s.state for s in c] == ["submitted", "rejected"]
    assert c[-1].error is not None and c[-1].error.code == "depth_limit" and c[-1].depth == 2
    assert models["c"].requests == []  # refused before any model call


async def test_a_deadline_bounds_the_whole_tree(mqtt: MakeMessager, namespace: str) -> None:
    stuck: list[str] = []

    async def never(text: str, _results: list[str]) -> str:
        stuck.append(text)
        await asyncio.sleep(3600)
        return "late"

    cfg = config(namespace, {"a": {"delegates": ["b"]}, "b": {}})
    models = {"a": model(asks("ask_b", "slow part", then="a")), "b": model(never)}
    async with team(cfg, await mqtt(), models):
        answer, statuses, error = await ask_following(
            AgentClient(await mqtt(), "a"), "start", deadline_s=1.5, timeout=60
        )
    assert answer is None and isinstance(error, AgentReplyError) and error.code == "deadline"
    assert stuck == ["slow part"]
    assert states(statuses, "a")[-1] == "failed"
    assert states(statuses, "b")[-1] in ("failed", "canceled")


async def test_cancel_stops_the_task_and_its_sub_tasks(mqtt: MakeMessager, namespace: str) -> None:
    working = asyncio.Event()
    stopped: list[str] = []

    async def hangs(text: str, _results: list[str]) -> str:
        working.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stopped.append(text)
            raise
        return "late"

    cfg = config(namespace, {"a": {"delegates": ["b"]}, "b": {}})
    models = {"a": model(asks("ask_b", "part", then="a")), "b": model(hangs)}
    async with team(cfg, await mqtt(), models):
        client = AgentClient(await mqtt(), "a")
        statuses: list[TaskStatus] = []
        async with client.stream("start", timeout=60) as run:
            async for event in run:
                if isinstance(event, TaskStatus):
                    statuses.append(event)
                    if event.role == "b" and event.state == "working":
                        await asyncio.wait_for(working.wait(), 10)
                        await run.cancel("changed my mind")
        with pytest.raises(AgentReplyError) as caught:
            await run.answer()
        await wait_until(lambda: stopped == ["part"], what="the sub-task's model call to stop")
    assert caught.value.code == "canceled"
    assert "changed my mind" in caught.value.reason
    assert states(statuses, "a")[-1] == "canceled"
    assert states(statuses, "b")[-1] == "canceled"


async def test_a_delegated_role_with_no_replica_online_fails_the_task_with_its_error(
    mqtt: MakeMessager, namespace: str
) -> None:
    cfg = config(namespace, {"a": {"delegates": ["b"]}, "b": {}})
    models = {"a": model(asks("ask_b", "anyone?", then="a")), "b": model(answers("b"))}
    async with team(cfg, await mqtt(), models, roles=["a"]):
        answer, statuses, error = await ask_following(AgentClient(await mqtt(), "a"), "start", timeout=30)
    # The model saw the tool error (and wrote an answer from it), yet the task is no success.
    assert answer is None and isinstance(error, AgentReplyError) and error.code == "delegation_failed"
    assert "unavailable: no b agent is online" in error.reason
    assert states(statuses, "a")[-1] == "failed"
    failed = next(s for s in statuses if s.role == "a" and s.state == "failed")
    assert failed.error is not None and [d["code"] for d in failed.error.details] == ["unavailable"]
    assert models["b"].requests == []


async def test_a_delegated_role_killed_mid_task_ends_the_call_at_once(
    mqtt: MakeMessager, mosquitto: MosquittoBroker, namespace: str
) -> None:
    member = member_process(mosquitto.port, namespace, "b")
    try:
        assert member.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(member.stdout.readline), 30)
        assert line.strip() == b"READY"
        cfg = config(namespace, {"a": {"delegates": ["b"]}, "b": {}})
        models = {"a": model(asks("ask_b", "part", then="a")), "b": model(answers("unused"))}
        async with team(cfg, await mqtt(), models, roles=["a"]):
            client = AgentClient(await mqtt(), "a")
            async with client.stream("start", timeout=60) as run:
                async for event in run:
                    if isinstance(event, TaskStatus) and event.role == "b" and event.state == "working":
                        os.kill(member.pid, signal.SIGKILL)
            with pytest.raises(AgentReplyError) as failed:
                await run.answer()
    finally:
        if member.poll() is None:
            member.kill()
        member.wait(10)
    assert failed.value.code == "delegation_failed"
    assert "unavailable" in failed.value.reason and "went offline" in failed.value.reason


async def test_a_delegated_replica_killed_mid_task_is_replaced_by_a_live_one(
    mqtt: MakeMessager, mosquitto: MosquittoBroker, namespace: str
) -> None:
    member = member_process(mosquitto.port, namespace, "b")  # a replica of b that never answers
    try:
        assert member.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(member.stdout.readline), 30)
        assert line.strip() == b"READY"
        cfg = config(namespace, {"a": {"delegates": ["b"]}, "b": {}})
        models = {"a": model(asks("ask_b", "part", then="a")), "b": model(answers("live b"))}
        async with team(cfg, await mqtt(), models, roles=["a"]), contextlib.AsyncExitStack() as live:
            client = AgentClient(await mqtt(), "a")
            workers: list[str | None] = []
            async with client.stream("start", timeout=60) as run:
                async for event in run:
                    if isinstance(event, TaskStatus) and event.role == "b" and event.state == "working":
                        workers.append(event.client_id)
                        if len(workers) == 1:  # the doomed replica has it: a live one joins, it dies
                            await live.enter_async_context(team(cfg, await mqtt(), models, roles=["b"]))
                            os.kill(member.pid, signal.SIGKILL)
            answer = await run.answer()
    finally:
        if member.poll() is None:
            member.kill()
        member.wait(10)
    assert answer.text == 'a: "live b: part"'  # the root completed with the live replica's answer
    assert len(workers) == 2 and workers[0] != workers[1]


async def test_a_role_asks_back_and_the_client_answers(mqtt: MakeMessager, namespace: str) -> None:
    reviewer = asks_back("which file?")
    cfg = config(namespace, {"reviewer": {"ask_back": True}})
    async with team(cfg, await mqtt(), {"reviewer": model(reviewer)}):
        client = AgentClient(await mqtt(), "reviewer")
        seen: list[str] = []
        async with client.stream("review my change", timeout=30) as run:
            async for event in run:
                if isinstance(event, TaskStatus):
                    seen.append(event.state)
                    if event.state == "input-required":
                        assert event.text == "which file?"
                        await run.give_input(event, "main.py")
        answer = await run.answer()
    assert answer.text == 'reviewed "main.py"'
    assert seen == ["submitted", "working", "input-required", "working", "completed"]


async def test_an_asking_agent_answers_an_input_request_with_its_model(
    mqtt: MakeMessager, namespace: str
) -> None:
    def architect(text: str, tool_results: list[str]) -> object:
        if text.startswith("You asked the reviewer"):
            return "the one in src"  # asked back: the architect's model answers
        if not tool_results:
            return tool_call("ask_reviewer", {"question": "review it"})
        return "done: " + tool_results[0]

    reviewer = asks_back("which one?")
    cfg = config(namespace, {"architect": {"delegates": ["reviewer"]}, "reviewer": {"ask_back": True}})
    models = {"architect": model(architect), "reviewer": model(reviewer)}
    async with team(cfg, await mqtt(), models):
        answer, statuses, error = await ask_following(
            AgentClient(await mqtt(), "architect"), "go", timeout=30
        )
    assert error is None and isinstance(answer, Answer)
    assert "reviewed" in answer.text and "the one in src" in answer.text
    assert "input-required" in states(statuses, "reviewer")


async def test_the_asking_agent_keeps_serving_while_it_waits(mqtt: MakeMessager, namespace: str) -> None:
    release = asyncio.Event()
    waiting: list[str] = []

    async def slow(text: str, _results: list[str]) -> str:
        waiting.append(text)
        await asyncio.wait_for(release.wait(), 20)
        return "slow done"

    cfg = config(namespace, {"a": {"delegates": ["b"]}, "b": {}})

    def a(text: str, tool_results: list[str]) -> object:
        if text == "quick":
            return "quick answer"
        return asks("ask_b", "slow part", then="a")(text, tool_results)

    async with team(cfg, await mqtt(), {"a": model(a), "b": model(slow)}):
        client = AgentClient(await mqtt(), "a")
        first = asyncio.ensure_future(client.ask("long task", timeout=30))
        await wait_until(lambda: waiting == ["slow part"], what="a to be waiting on b")
        assert await client.ask("quick", timeout=10, deadline_s=10) == "quick answer"
        assert not first.done()
        release.set()
        assert "slow done" in await first


async def test_argentic_team_runs_the_chosen_roles_each_with_its_presence(
    mqtt: MakeMessager, mosquitto: MosquittoBroker, namespace: str, tmp_path: Path
) -> None:
    file = tmp_path / "team.yaml"
    file.write_text(
        "llm:\n  provider: scripted\n"
        "roles:\n"
        "  architect:\n    description: plans\n    delegates: [developer]\n"
        "  developer:\n    description: codes\n    replicas: 2\n"
        "  reviewer:\n    description: reviews\n"
    )
    env = command_env(mosquitto.port, namespace)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "argentic.cli.main",
        "-c",
        str(file),
        "team",
        "--roles",
        "architect,developer",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        line = b""
        while b"team serving" not in line:  # log lines come first
            line = await asyncio.wait_for(process.stderr.readline(), 60)
            assert line, "argentic team ended before serving"
        assert b"architect x1, developer x2" in line
        messager = await mqtt()
        directory = messager.shared(Directory)
        developer = await directory.presence("developer", timeout=10)
        assert developer is not None and developer.online and developer.card is not None
        assert developer.card.description == "codes"
        assert await directory.presence("reviewer", timeout=0.5) is None  # not run here
        # The scripted provider echoes the question.
        assert await AgentClient(messager, "developer").ask("hello", timeout=20) == "hello"
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0


async def test_a_person_at_argentic_ask_answers_when_the_role_asks_back(
    mqtt: MakeMessager, mosquitto: MosquittoBroker, namespace: str
) -> None:
    reviewer = asks_back("which file?")
    cfg = config(namespace, {"reviewer": {"ask_back": True}})
    async with team(cfg, await mqtt(), {"reviewer": model(reviewer)}):
        env = {
            **os.environ,
            "ARGENTIC_MESSAGING__BROKER_ADDRESS": "127.0.0.1",
            "ARGENTIC_MESSAGING__PORT": str(mosquitto.port),
            "ARGENTIC_MESSAGING__NAMESPACE": namespace,
        }
        process = await asyncio.create_subprocess_exec(
            *(
                sys.executable,
                "-m",
                "argentic.cli.main",
                "ask",
                "-r",
                "reviewer",
                "review it",
                "--deadline",
                "60",
            ),
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(b"main.py\n"), 90)
    assert process.returncode == 0, err.decode()
    assert out.decode().strip().endswith('reviewed "main.py"')
    assert "[reviewer] asks: which file?" in err.decode()
    assert "client -> reviewer: completed" in err.decode()


async def test_a_question_and_its_cancel_work_from_mosquitto_pub(
    mqtt: MakeMessager, mosquitto: MosquittoBroker, namespace: str
) -> None:
    async def hangs(text: str, _results: list[str]) -> str:
        await asyncio.sleep(3600)
        return "late"

    cfg = config(namespace, {"a": {}})
    async with team(cfg, await mqtt(), {"a": model(hangs)}):
        watcher = await mqtt()
        reply_topic = f"{namespace}/clients/shell/inbox"

        async def pub(topic: str, payload: dict[str, object]) -> None:
            process = await asyncio.create_subprocess_exec(
                "mosquitto_pub", "-h", mosquitto.host, "-p", str(mosquitto.port),
                "-t", topic, "-q", "1", "-m", json.dumps(payload),
            )  # fmt: skip
            assert await asyncio.wait_for(process.wait(), 30) == 0

        async with (
            watcher.messages(f"{namespace}/agents/a/events/q-shell", model=TaskStatus) as statuses,
            watcher.messages(reply_topic, model=ErrorReply) as replies,
        ):
            question = {"type": "question", "id": "q-shell", "text": "slow", "reply_to": reply_topic}
            await pub(f"{namespace}/agents/a/questions", question)
            async with asyncio.timeout(30):
                async for status in statuses:
                    if status.state == "working":
                        break
            # A cancel names its sender by reply_to: one from elsewhere is refused, the asker's works.
            other = f"{namespace}/clients/other/inbox"
            async with watcher.messages(other, model=ErrorReply) as refusals:
                cancel = {"type": "cancel", "question_id": "q-shell", "reply_to": other}
                await pub(f"{namespace}/agents/a/cancel", cancel)
                async with asyncio.timeout(30):
                    refusal = await anext(aiter(refusals))
            cancel = {"type": "cancel", "question_id": "q-shell", "reply_to": reply_topic}
            await pub(f"{namespace}/agents/a/cancel", cancel)
            async with asyncio.timeout(30):
                reply = await anext(aiter(replies))
    assert refusal.error.code == "forbidden" and "not yours" in refusal.error.message
    assert reply.error.code == "canceled" and reply.request_id == "q-shell"


async def test_replicas_on_one_messager_share_the_questions(mqtt: MakeMessager, namespace: str) -> None:
    cfg = config(namespace, {"developer": {"replicas": 3}})
    developer = model(answers("code"))
    async with team(cfg, await mqtt(), {"developer": developer}) as running:
        assert len(running.agents) == 3
        client = AgentClient(await mqtt(), "developer")
        replies = await asyncio.gather(*(client.ask(f"task {i}", timeout=30) for i in range(6)))
    assert sorted(replies) == sorted(f"code: task {i}" for i in range(6))
    assert len(developer.requests) == 6  # each question answered once, not once per replica


async def test_an_assignment_no_member_can_answer_is_one_clear_error(
    mqtt: MakeMessager, namespace: str
) -> None:
    def lead(text: str, tool_results: list[str]) -> object:
        if not tool_results:
            return tool_call("assign", {"tasks": [{"role": "developer", "question": "code it"}]})
        return "alone: " + tool_results[0]

    cfg = config(namespace, {"lead": {"delegates": ["developer"], "supervise": True}, "developer": {}})
    models = {"lead": model(lead), "developer": model(answers("d"))}
    async with team(cfg, await mqtt(), models, roles=["lead"]):
        with pytest.raises(AgentReplyError) as failed:
            await AgentClient(await mqtt(), "lead").answer("ship it", timeout=30)
    assert failed.value.code == "delegation_failed"
    assert failed.value.reason.count("no developer agent is online") == 1
    # The model was told what failed, as one tool error, before the task ended.
    tool_turns = [m.text for m in models["lead"].requests[-1].messages if m.role == "tool"]
    assert len(tool_turns) == 1 and "no member could answer" in tool_turns[0]
