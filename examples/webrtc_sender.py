"""Stream a video file or the test pattern over WebRTC to a visual agent, signaling over MQTT.

    uv run python examples/webrtc_sender.py                      # the test pattern, until Ctrl-C
    uv run python examples/webrtc_sender.py --file clip.mp4 --loop
    uv run python examples/webrtc_sender.py --size 640x480 --fps 30 --duration 10 --loopback

The receiving side is a ``WebRTCDriver`` listening on ``{ns}/video/{stream}/offer`` (for example
``argentic watch --source webrtc``, or ``examples/visual_agent_vllm.py --source webrtc``). This
script sends one offer there and applies the answer; if the receiver goes away it offers again.
The broker and namespace come from ``config.yaml`` unless given here. When it ends it prints one
JSON line: the frames it sent and how many connections it made.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path

from argentic.config import load_config
from argentic.errors import ArgenticError
from argentic.messaging import Messager
from argentic.video import FileSource, FrameSource, TestPatternSource, WebRTCSender


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-c", "--config", help="config file (default: $ARGENTIC_CONFIG or ./config.yaml)")
    parser.add_argument("--broker", help="MQTT broker address (default: messaging.broker_address)")
    parser.add_argument("--port", type=int, help="MQTT port (default: messaging.port)")
    parser.add_argument("--namespace", help="topic namespace (default: messaging.namespace)")
    parser.add_argument("--stream", help="stream name (default: video.stream)")
    parser.add_argument("--file", help="a video file or URL to stream (default: the test pattern)")
    parser.add_argument("--loop", action="store_true", help="start the file over at its end")
    parser.add_argument("--size", default="640x480", help="test pattern size, WIDTHxHEIGHT")
    parser.add_argument("--fps", type=float, default=30.0, help="test pattern frame rate")
    parser.add_argument("--scene-every", type=int, default=150, help="test pattern: frames per scene")
    parser.add_argument("--duration", type=float, help="seconds to stream (default: until Ctrl-C)")
    parser.add_argument("--loopback", action="store_true", help="offer only 127.0.0.1 as ICE candidate")
    parser.add_argument("--audio", action="store_true", help="add a (silent) audio track")
    parser.add_argument("--frame-log", help="write each sent frame's index and capture time here (JSON)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


async def stream(args: argparse.Namespace) -> dict[str, int]:
    overrides: dict[str, dict[str, object]] = {"messaging": {}, "video": {}}
    if args.broker:
        overrides["messaging"]["broker_address"] = args.broker
    if args.port:
        overrides["messaging"]["port"] = args.port
    if args.namespace:
        overrides["messaging"]["namespace"] = args.namespace
    if args.stream:
        overrides["video"]["stream"] = args.stream
    if args.loopback:
        overrides["video"]["host_addresses"] = ["127.0.0.1"]
    config = load_config(args.config, overrides=overrides)

    source: FrameSource
    if args.file:
        source = FileSource(args.file, realtime=True, loop=args.loop)
    else:
        width, height = (int(v) for v in args.size.lower().split("x"))
        source = TestPatternSource(width, height, fps=args.fps, scene_every=args.scene_every)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with (
        Messager.from_config(config.messaging, persistent=False) as messager,
        source,
        WebRTCSender.from_config(messager, source, config.video, reconnect=True, audio=args.audio) as sender,
    ):
        print(f"streaming to {sender.offer_topic}", file=sys.stderr, flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.duration)
    if args.frame_log:
        await asyncio.to_thread(Path(args.frame_log).write_text, json.dumps(list(sender.sent_log)))
    return {"frames_sent": sender.frames_sent, "connections": sender.connections}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    try:
        result = asyncio.run(stream(args))
    except ArgenticError as exc:
        print(f"webrtc_sender: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
