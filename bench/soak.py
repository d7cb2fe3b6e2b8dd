"""Soak: minutes of mixed questions and tool calls on mosquitto, with hostile messages mixed in and,
in the middle, one broker restart (down 10 s), one tool service killed (SIGKILL) and restarted, and
one agent replica killed for good.

Agents (two replicas of one role) and tool services (two replicas of the example tools) run as
``argentic agent`` and ``argentic tools`` processes with stable client ids and persistent sessions.
The agents think with the scripted model (``llm.provider: scripted``, which answers with the
question's text), because the soak measures messaging robustness, not the model: every answer is
checked to be the one to its question.

    uv run python bench/soak.py [--duration 180] [--workers 6] [--broker-down 10] [--quick]

``--quick`` runs the same events in 15 s with 2 workers, the broker down 2 s, and shorter question
timeouts and sessions (so the requests a killed replica held come back in seconds): a check that
it runs.

Counted over every request (questions and tool calls alike): ``answered`` with the right answer;
``lost``, no reply within the request's timeout; ``duplicated``, a request for which the client's
inbox received two different replies (work done twice, not a replayed copy); ``errors``, error
replies, each of which must say clearly what happened (their codes are listed). ``p99_ms`` is
over answered requests, ``max_rss_mb`` the highest peak RSS of the agent and tool processes. The
last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from argentic.errors import ArgenticError, RequestTimeoutError
from argentic.messaging import Messager
from argentic.protocol import Answer, ErrorReply, Question, ToolAnnouncement, parse_message
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.processes import command_env
from argentic.tools import ToolManager

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "soak"
ROLE = "soak"


@dataclass
class Tally:
    requests: int = 0
    answered: int = 0
    lost: int = 0
    lost_kinds: Counter[str] = field(default_factory=Counter)
    wrong: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: dict[str, str] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    hostile: int = 0
    replies: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    ours: set[str] = field(default_factory=set)  # ids of the requests the workers sent
    slow: list[str] = field(default_factory=list)

    def took(self, kind: str, started: float, origin: float) -> None:
        elapsed = time.perf_counter() - started
        self.latencies_ms.append(elapsed * 1000)
        if elapsed > 5:
            self.slow.append(f"slow {kind} sent at +{started - origin:.1f}s took {elapsed:.1f}s")

    def lose(self, kind: str, request_id: str, started: float, origin: float) -> None:
        self.lost += 1
        self.lost_kinds[kind] += 1
        self.slow.append(f"lost {kind} {request_id} sent at +{started - origin:.1f}s")

    def error(self, code: str, message: str) -> None:
        self.errors[code] += 1
        self.error_samples.setdefault(code, message[:200])


class Fleet:
    """The agent and tool processes, started and killed by pid."""

    def __init__(self, port: int, session_expiry_s: float, store_url: str, log_dir: Path | None) -> None:
        self.port = port
        self.log_dir = log_dir
        self.store_url = store_url
        self.session_expiry_s = session_expiry_s
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.peaks_mb: dict[str, float] = {}

    def env(self, client_id: str) -> dict[str, str]:
        return {
            **command_env(self.port, NAMESPACE),
            "ARGENTIC_MESSAGING__CLIENT_ID": client_id,
            "ARGENTIC_LLM__PROVIDER": "scripted",
            "ARGENTIC_TOOLS__CALL_TIMEOUT_S": "5",
            "ARGENTIC_LOGGING__LEVEL": "INFO" if self.log_dir else "WARNING",
            # Replicas share their requests: a short session lets the broker stop handing requests
            # to a killed replica's session soon (requesters resend what it held meanwhile).
            "ARGENTIC_MESSAGING__SESSION_EXPIRY_S": f"{self.session_expiry_s:g}",
            # One store for every agent and tool process: conversations, and each call run once.
            "ARGENTIC_STORAGE__URL": self.store_url,
        }

    def start(self, name: str) -> None:
        if name.startswith("agent"):
            command = ["agent", "--role", ROLE]
        else:
            command = ["tools", "--module", "examples.tools", "--name", "calc"]
        log = subprocess.DEVNULL if self.log_dir is None else (self.log_dir / f"{name}.log").open("ab")
        with contextlib.nullcontext() if isinstance(log, int) else log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "argentic.cli.main", *command],
                cwd=REPO,
                env=self.env(f"soak-{name}"),
                stdout=log,
                stderr=log,
            )

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        self.sample()
        process.kill()
        process.wait(10)

    def sample(self) -> None:
        """Peak RSS (VmHWM) of each live process."""
        for name, process in self.processes.items():
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = int(line.split()[1]) / 1024
                        self.peaks_mb[name] = max(self.peaks_mb.get(name, 0.0), peak)

    def stop(self) -> None:
        self.sample()
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


# --- hostile traffic ---------------------------------------------------------------------------


def hostile_messages(inbox: str) -> list[tuple[str, bytes, Properties | None]]:
    questions = f"{NAMESPACE}/agents/{ROLE}/questions"
    calls = f"{NAMESPACE}/tools/calculate/calls"
    deep = "/".join(["x"] * 250)
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = deep
    props.CorrelationData = b"evil"

    def q(**fields: Any) -> bytes:
        return json.dumps({"type": "question", "text": "hi", **fields}).encode()

    return [
        (questions, b"\x00\xffgarbage", None),
        (questions, q(reply_to=deep), None),
        (questions, q(), props),
        (questions, q(id="a/b", reply_to=inbox), None),
        (questions, q(id=42, reply_to=inbox), None),
        (questions, q(reply_to=f"{NAMESPACE}/agents/other/questions"), None),
        (questions, b"[" * 50_000 + b"]" * 50_000, None),
        (questions, b'{"type": "question", "text": "x", "n": 1' + b"0" * 5000 + b"}", None),
        (calls, json.dumps({"type": "tool_call", "tool": "calculate", "reply_to": deep}).encode(), None),
        (calls, json.dumps({"type": "tool_call", "tool": "calculate", "arguments": "no"}).encode(), None),
        (
            f"{NAMESPACE}/tools/services/evil",
            ToolAnnouncement(service_id="calc", tools=[]).to_json(),
            None,
        ),
        (f"{NAMESPACE}/tools/services/calc", b"retained garbage", None),
        (f"{NAMESPACE}/agents/{ROLE}/status", b"{not a presence", None),
    ]


async def hostile(port: int, tally: Tally, stop: asyncio.Event, inbox: str) -> None:
    """Hostile messages at about 20 a second, and a CPU hog call every 10 s."""
    messages = hostile_messages(inbox)
    hog = json.dumps(
        {"type": "tool_call", "tool": "calculate", "arguments": {"expression": "(((9**999)**999)**999)"},
         "reply_to": inbox, "correlation_id": "hog"}
    ).encode()  # fmt: skip
    last_hog = 0.0
    while not stop.is_set():
        try:
            async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as raw:
                while not stop.is_set():
                    topic, payload, props = random.choice(messages)
                    retain = "/status" in topic or "/services/" in topic
                    await raw.publish(topic, payload, qos=1, retain=retain, properties=props)
                    tally.hostile += 1
                    if time.monotonic() - last_hog > 10:
                        last_hog = time.monotonic()
                        await raw.publish(f"{NAMESPACE}/tools/calculate/calls", hog, qos=1)
                        tally.hostile += 1
                    await asyncio.sleep(0.05)
        except aiomqtt.MqttError:
            await asyncio.sleep(0.5)  # the broker is restarting


# --- valid traffic -----------------------------------------------------------------------------


async def worker(
    index: int,
    client: Messager,
    tools: ToolManager,
    tally: Tally,
    stop: asyncio.Event,
    origin: float,
    question_timeout_s: float,
) -> None:
    call_timeout_s = question_timeout_s / 2
    topic = client.topics.agent_questions(ROLE)
    n = 0
    while not stop.is_set():
        n += 1
        text = f"w{index}-q{n}"
        tally.requests += 1
        started = time.perf_counter()
        question = Question(text=text)
        tally.ours.add(question.id)
        try:
            reply = await client.request(topic, question, response_model=Answer, timeout=question_timeout_s)
        except RequestTimeoutError:
            tally.lose("question", question.id, started, origin)
        except ArgenticError as exc:
            tally.error(type(exc).__name__, str(exc))
        else:
            if isinstance(reply, ErrorReply):
                tally.error(reply.error.code, reply.error.message)
            elif reply.text == text:
                tally.answered += 1
                tally.took("question", started, origin)
            else:
                tally.wrong += 1
        tally.requests += 1
        started = time.perf_counter()
        result = await tools.call("calculate", {"expression": f"{n} * 7"}, timeout=call_timeout_s)
        tally.ours.add(result.call_id)
        if result.ok and result.result["value"] == n * 7:
            tally.answered += 1
            tally.took("tool call", started, origin)
        elif result.ok:
            tally.wrong += 1
        elif result.error is not None and result.error.code == "timeout" and result.service_id is None:
            # no reply came (a timeout the service itself reports is an error reply)
            tally.lose("tool call", result.call_id, started, origin)
        else:
            code = result.error.code if result.error else "unknown"
            tally.error(code, result.error.message if result.error else "")


async def watch_inbox(port: int, inbox: str, tally: Tally, stop: asyncio.Event) -> None:
    """Every reply that reaches the client's inbox, by correlation id: two different replies to one
    request mean it was answered twice (a replayed reply carries the same message id)."""
    while not stop.is_set():
        try:
            async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as raw:
                await raw.subscribe(inbox, qos=1)
                async for message in raw.messages:
                    with contextlib.suppress(ArgenticError):
                        reply = parse_message(bytes(message.payload))  # type: ignore[arg-type]
                        cid = reply.correlation_id
                        if cid is not None and cid in tally.ours:
                            tally.replies[cid].add(reply.id)
                            if len(tally.replies[cid]) > 1:
                                print(f"answered twice: {reply.type} {cid}", file=sys.stderr, flush=True)
        except aiomqtt.MqttError:
            await asyncio.sleep(0.2)


async def wait_for_agents(client: Messager) -> None:
    """Until both agent replicas serve (a question sent before a shared subscription exists has
    nobody to go to)."""
    topic = client.topics.agent_questions(ROLE)
    for _ in range(60):
        answers = await asyncio.gather(
            *(client.request(topic, Question(text="ready?"), timeout=2, retry_after=2) for _ in range(4)),
            return_exceptions=True,
        )
        if all(isinstance(a, Answer) for a in answers):
            return
        await asyncio.sleep(0.5)
    raise RuntimeError("the agents did not start")


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    duration, broker_down, question_timeout_s = args.duration, args.broker_down, args.question_timeout
    broker = MosquittoBroker()
    broker.start()
    store = broker.workdir / "store.db"  # removed with the broker's folder
    if args.log_dir is not None:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(broker.port, args.session_expiry, f"sqlite:///{store}", args.log_dir)
    for name in ("agent-1", "agent-2", "tools-1", "tools-2"):
        fleet.start(name)
    tally = Tally()
    stop = asyncio.Event()
    client = Messager(
        "127.0.0.1", broker.port, namespace=NAMESPACE, client_id="soak-client", reconnect_max_delay_s=1.0
    )
    await client.connect()
    tools = ToolManager(client, default_timeout_s=question_timeout_s / 2)
    try:
        await tools.start()
        await tools.wait_for_tools("calculate", timeout=60)
        await wait_for_agents(client)
        background = [
            asyncio.create_task(watch_inbox(broker.port, client.inbox, tally, stop)),
            asyncio.create_task(hostile(broker.port, tally, stop, client.inbox)),
        ]
        origin = time.perf_counter()
        load = [
            asyncio.create_task(worker(i, client, tools, tally, stop, origin, question_timeout_s))
            for i in range(args.workers)
        ]
        started = time.monotonic()

        async def at(fraction: float) -> None:
            await asyncio.sleep(max(0.0, started + duration * fraction - time.monotonic()))
            fleet.sample()

        await at(0.3)
        print(
            f"+{time.perf_counter() - origin:.1f}s restarting the broker (down {broker_down:g} s)",
            file=sys.stderr,
            flush=True,
        )
        await asyncio.to_thread(broker.restart, down_for=broker_down)
        await at(0.5)
        print(
            f"+{time.perf_counter() - origin:.1f}s killing tool service tools-1 and starting it again",
            file=sys.stderr,
            flush=True,
        )
        fleet.kill("tools-1")
        fleet.start("tools-1")
        await at(0.65)
        print(f"+{time.perf_counter() - origin:.1f}s killing agent-2 for good", file=sys.stderr, flush=True)
        fleet.kill("agent-2")
        while time.monotonic() < started + duration:
            await asyncio.sleep(1)
            fleet.sample()
        stop.set()
        # the requests in flight finish (or time out) before counting
        await asyncio.wait_for(asyncio.gather(*load), question_timeout_s * 1.5 + 10)
        await asyncio.sleep(1)  # late duplicate replies, if any
        for task in background:
            task.cancel()
    finally:
        await tools.stop()
        await client.disconnect()
        fleet.stop()
        broker.close()
    latencies = sorted(tally.latencies_ms)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else None
    for line in tally.slow:
        print(line, file=sys.stderr)
    for code, sample in tally.error_samples.items():
        print(f"error {code} x{tally.errors[code]}: {sample}", file=sys.stderr)
    return {
        "questions": tally.requests,
        "answered": tally.answered,
        "lost": tally.lost,
        "lost_kinds": dict(tally.lost_kinds),
        "duplicated": sum(1 for ids in tally.replies.values() if len(ids) > 1),
        "errors": sum(tally.errors.values()) + tally.wrong,
        "p99_ms": round(p99, 1) if p99 is not None else None,
        "max_rss_mb": round(max(fleet.peaks_mb.values(), default=0.0), 1),
        "error_codes": dict(tally.errors),
        "wrong_answers": tally.wrong,
        "hostile_messages": tally.hostile,
        "duration_s": duration,
    }


def main() -> None:
    # What the hostile messages make this client log is expected; the figures tell the outcome.
    logging.getLogger("argentic").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of traffic (default 180)")
    parser.add_argument("--workers", type=int, default=6, help="concurrent askers")
    parser.add_argument("--broker-down", type=float, default=10.0, help="seconds the broker stays down")
    parser.add_argument(
        "--question-timeout", type=float, default=60.0, help="seconds (tool calls half; resent every third)"
    )
    parser.add_argument("--session-expiry", type=float, default=30.0, help="seconds, of agents and tools")
    parser.add_argument("--quick", action="store_true", help="a check that it runs: 15 s, 2 workers")
    parser.add_argument("--log-dir", type=Path, help="keep each process's log (INFO) here")
    args = parser.parse_args()
    if args.quick:
        parser.set_defaults(
            duration=15.0, workers=2, broker_down=2.0, question_timeout=20.0, session_expiry=10.0
        )
        args = parser.parse_args()
    result = asyncio.run(soak(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
