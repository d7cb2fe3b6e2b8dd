"""Benchmark: a 640x480 30 fps WebRTC stream on loopback into a VisualAgent.

    uv run python bench/visual.py [--seconds 10] [--quick]

A mosquitto of its own carries the signaling. The sending peer is ``examples/webrtc_sender.py`` in
a separate process (the test pattern), so this process holds only the receiving side: the
``WebRTCDriver`` and a ``VisualAgent`` whose model is a ``FunctionLLM`` that answers at once and
records when each request arrived. ``--quick`` streams for 3 s: a check that it runs.

Reported:

- ``fps_ratio``: frames the driver received / frames the sender sent (goal >= 0.98);
- ``frame_to_request_ms``: p50 time from a frame's arrival in the driver to the model request
  carrying it (sampled, scaled, JPEG-encoded off the loop), for one sampled frame per question,
  asked as frames arrive (goal <= 20);
- ``frame_age_ms``: p50 of the same for questions asked at random moments (adds the frame's age);
- ``capture_to_request_ms``: p50 from the sender drawing a frame to the request carrying it, for
  the questions asked as frames arrive (adds encoding, transport and decoding: the whole path);
- ``cpu_percent``: CPU of this process (one stream received and questions asked), percent of one core;
- ``sender_cpu_percent``: CPU of the sending process.

The last line is JSON with those keys.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from argentic.agents.visual_agent import VisualAgent
from argentic.llm import ChatRequest, FunctionLLM
from argentic.messaging import Messager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.video import Frame, WebRTCDriver, read_frame_code

REPO = Path(__file__).resolve().parents[1]


class Arrivals:
    """When each model request arrived and how many images it carried."""

    def __init__(self) -> None:
        self.times: list[tuple[float, int]] = []

    def reply(self, request: ChatRequest) -> str:
        self.times.append((time.time(), sum(len(m.images) for m in request.messages)))
        return "ok"


def p50(values: list[float]) -> float:
    return round(statistics.median(values), 2) if values else float("nan")


async def ask_timed(agent: VisualAgent, arrivals: Arrivals) -> tuple[float, Frame, float]:
    """Ask once: (arrival-to-request ms, the frame sent, when the request arrived)."""
    await agent.query_with_video("What do you see?")
    arrived, images = arrivals.times[-1]
    assert images == 1, f"expected one image per request, got {images}"
    frame = agent.last_frames[0].frame
    return (arrived - frame.timestamp) * 1000, frame, arrived


async def run(seconds: float) -> dict[str, Any]:
    broker = MosquittoBroker(persistence=False).start()
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    messager = Messager(broker.host, broker.port, namespace=namespace, persistent=False)
    sender: asyncio.subprocess.Process | None = None
    workdir = Path(tempfile.mkdtemp(prefix="argentic-bench-"))
    frame_log = workdir / "frames.json"
    try:
        await messager.connect()
        driver = WebRTCDriver(messager, "bench", host_addresses=["127.0.0.1"], buffer_size=90)
        await driver.start()
        arrivals = Arrivals()
        llm = FunctionLLM(arrivals.reply, model_name="sink", max_images_per_prompt=1)
        agent = VisualAgent(llm=llm, source=driver, max_image_side=768)
        sender = await asyncio.create_subprocess_exec(
            sys.executable,
            str(REPO / "examples" / "webrtc_sender.py"),
            "--broker", broker.host, "--port", str(broker.port), "--namespace", namespace,
            "--stream", "bench", "--size", "640x480", "--fps", "30", "--loopback",
            "--duration", str(seconds), "--frame-log", str(frame_log),
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "ARGENTIC_CONFIG": os.devnull},
        )  # fmt: skip
        await driver.wait_connected(60)
        await driver.wait_for_frame(30)
        me = psutil.Process()
        other = psutil.Process(sender.pid)
        me.cpu_percent(None)
        other.cpu_percent(None)
        started = time.monotonic()

        on_arrival: list[float] = []
        at_random: list[float] = []
        asked: list[tuple[Frame, float]] = []  # the frames of on-arrival questions, when sent
        deadline = started + seconds - 1.0
        while time.monotonic() < deadline:
            if len(on_arrival) <= len(at_random):
                newest = driver.latest()
                assert newest is not None
                await driver.wait_for_frame(5, newer_than=newest.index)
                latency, frame, arrived = await ask_timed(agent, arrivals)
                on_arrival.append(latency)
                asked.append((frame, arrived))
            else:
                await asyncio.sleep(random.uniform(0, 1 / 30))
                at_random.append((await ask_timed(agent, arrivals))[0])
            await asyncio.sleep(0.1)  # a few questions a second, as a watch or a chat would
        cpu = me.cpu_percent(None)
        sender_cpu = other.cpu_percent(None)

        out, _ = await asyncio.wait_for(sender.communicate(), seconds + 60)
        sent = json.loads(out.decode().strip().splitlines()[-1])["frames_sent"]
        captured = {index: ts for index, ts in json.loads(frame_log.read_text())}
        # the index the sender drew into each asked frame says when it was captured
        codes = await asyncio.to_thread(lambda: [read_frame_code(f.to_rgb()) for f, _ in asked])
        end_to_end = [
            (arrived - captured[code]) * 1000
            for code, (_, arrived) in zip(codes, asked, strict=True)
            if code in captured
        ]
        # the last frames in flight when the sender closed
        seen = -1
        while seen != driver.frames_seen:
            seen = driver.frames_seen
            await asyncio.sleep(0.3)
        received = driver.frames_seen
        await driver.stop()
        return {
            "fps_ratio": round(received / sent, 4) if sent else 0.0,
            "frame_to_request_ms": p50(on_arrival),
            "frame_age_ms": p50(at_random),
            "capture_to_request_ms": p50(end_to_end),
            "cpu_percent": round(cpu, 1),
            "sender_cpu_percent": round(sender_cpu, 1),
            "frames_sent": sent,
            "frames_received": received,
            "questions": len(on_arrival) + len(at_random),
            "seconds": seconds,
        }
    finally:
        if sender is not None and sender.returncode is None:
            sender.terminate()
            await asyncio.wait_for(sender.wait(), 10)
        await messager.disconnect()
        broker.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="VisualAgent over WebRTC benchmark")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the sender streams")
    parser.add_argument("--quick", action="store_true", help="a check that it runs: 3 s of stream")
    args = parser.parse_args()
    if args.quick:
        parser.set_defaults(seconds=3.0)
        args = parser.parse_args()
    result = asyncio.run(run(args.seconds))
    print(
        f"received {result['frames_received']} of {result['frames_sent']} frames; "
        f"{result['questions']} questions; frame to request p50 {result['frame_to_request_ms']} ms "
        f"(asked at random moments: {result['frame_age_ms']} ms; from the sender's capture: "
        f"{result['capture_to_request_ms']} ms); CPU {result['cpu_percent']} % "
        f"(sender {result['sender_cpu_percent']} %)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
