"""``argentic watch``: a visual agent over a video source, answering questions and watching.

It serves questions from MQTT like ``argentic agent`` (each answered with the current frames, and
with ``--audio S`` the last S seconds of sound) and, with ``--question``, asks that question every
``--interval`` seconds and/or on each scene change and/or when the sound gets loud, publishing
observations on ``{ns}/agents/{role}/observations``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from argentic.agents.runtime import wait_for_shutdown
from argentic.agents.visual_service import open_visual_agent
from argentic.agents.visual_watch import Watch
from argentic.config import ArgenticConfig, load_config
from argentic.errors import ArgenticError
from argentic.protocol import Topics

HELP = "run a visual agent over a video source (test pattern, file, or WebRTC)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-r", "--role", default=None, help="agent role (default: agent.role)")
    parser.add_argument(
        "--source", help="'test_pattern', 'webrtc', or a video file/URL (default: video.source)"
    )
    parser.add_argument("-q", "--question", help="a standing question to ask while watching")
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        help="seconds between observations (default: video.watch_interval_s)",
    )
    parser.add_argument("--on-change", action="store_true", help="also observe whenever the scene changes")
    parser.add_argument("--only-on-change", action="store_true", help="observe on scene changes only")
    parser.add_argument(
        "--audio",
        type=float,
        metavar="SECONDS",
        help="add the last SECONDS of sound (default: video.audio_s)",
    )
    parser.add_argument("--audio-file", help="hear this sound file (WAV) (default: video.audio_source)")
    parser.add_argument(
        "--on-sound",
        action="store_true",
        help="also observe when the sound gets loud (video.sound_threshold_dbfs)",
    )
    parser.add_argument(
        "--start-llm",
        action="store_true",
        help="start a local vLLM server (llm.server) when the configured endpoint does not answer",
    )


async def watch(config: ArgenticConfig, args: argparse.Namespace) -> int:
    topics = Topics(config.messaging.namespace)
    async with open_visual_agent(config, start_llm=args.start_llm, tools=True) as agent:
        say(f"visual agent {agent.role!r} answering {topics.agent_questions(agent.role)}")
        if config.video.source == "webrtc":
            say(f"waiting for a WebRTC offer on {topics.video_offer(config.video.stream)}")
        looking = None
        if args.question:
            looking = agent.watch(
                args.question,
                interval_s=None if args.only_on_change else (args.interval or config.video.watch_interval_s),
                on_scene_change=args.on_change or args.only_on_change,
                on_sound=args.on_sound,  # the thresholds: video.scene_change_threshold, sound_threshold_dbfs
            )
            say(f"observations on {topics.agent_observations(agent.role)}")
        say("Ctrl-C stops")
        await until_shutdown(looking)
    return 0


async def until_shutdown(looking: Watch | None) -> None:
    """Serve until SIGINT/SIGTERM, running the watch (each observation is published) meanwhile;
    an error that ends the watch (a source without sound for ``--on-sound``) ends the command."""
    stopping = asyncio.create_task(wait_for_shutdown())
    watching = asyncio.create_task(looking.run()) if looking is not None else None
    try:
        await asyncio.wait([t for t in (stopping, watching) if t is not None], return_when="FIRST_COMPLETED")
    finally:
        for task in (stopping, watching):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task  # a watch's own error is raised here


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, dict[str, object]] = {}
    if args.role:
        overrides["agent"] = {"role": args.role}
    video: dict[str, object] = {}
    if args.source:
        video["source"] = args.source
    if args.audio:
        video["audio_s"] = args.audio
    if args.audio_file:
        video["audio_source"] = args.audio_file
    if video:
        overrides["video"] = video
    try:
        config = load_config(args.config, overrides=overrides or None)
        return asyncio.run(watch(config, args))
    except ArgenticError as exc:
        print(f"argentic watch: {exc}", file=sys.stderr)
        return 1
