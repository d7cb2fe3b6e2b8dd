"""``argentic watch``: a visual agent over a video source, answering questions and watching.

It serves questions from MQTT like ``argentic agent`` (each answered with the current frames, and
with ``--audio S`` the last S seconds of sound) and, with ``--question``, asks that question every
``--interval`` seconds and/or on each scene change and/or when the sound gets loud, publishing
observations on ``{ns}/agents/{role}/observations``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from argentic.agents.runtime import backends, wait_for_shutdown
from argentic.agents.visual_agent import VisualAgent
from argentic.config import ArgenticConfig, load_config
from argentic.errors import ArgenticError
from argentic.messaging import Messager
from argentic.protocol import Topics
from argentic.tools import ToolManager
from argentic.video import source_from_config

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
    role = config.agent.role
    will = VisualAgent.will(Topics(config.messaging.namespace), role)
    # Every part is entered: whatever started is stopped, in reverse, on Ctrl-C, SIGTERM or an error.
    async with (
        backends(config, start_llm=args.start_llm) as backend,
        Messager.from_config(config.messaging, will=will) as messager,
        source_from_config(config.video, messager) as source,
        ToolManager(messager, default_timeout_s=config.agent.tool_timeout_s, caller=role) as tools,
        VisualAgent.from_config(
            config, llm=backend.llm, messager=messager, tool_manager=tools, driver=source
        ) as agent,
    ):
        say(f"visual agent {role!r} answering {messager.topics.agent_questions(role)}")
        if config.video.source == "webrtc":
            say(f"waiting for a WebRTC offer on {messager.topics.video_offer(config.video.stream)}")
        if args.question:
            interval = None if args.only_on_change else (args.interval or config.video.watch_interval_s)
            agent.start_watch(
                args.question,
                interval_s=interval,
                on_scene_change=args.on_change or args.only_on_change,
                scene_threshold=config.video.scene_change_threshold,
                on_sound=args.on_sound,
                sound_threshold_dbfs=config.video.sound_threshold_dbfs,
            )
            say(f"observations on {messager.topics.agent_observations(role)}")
        say("Ctrl-C stops")
        await wait_for_shutdown()
    return 0


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
