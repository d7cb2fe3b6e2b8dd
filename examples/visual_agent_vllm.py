"""A visual agent over a video feed, thinking with a multimodal model on vLLM.

    uv run python examples/visual_agent_vllm.py                        # the test pattern
    uv run python examples/visual_agent_vllm.py --source clip.mp4 "What is happening?"
    uv run python examples/visual_agent_vllm.py --source webrtc        # over WebRTC (a local sender)
    uv run python examples/visual_agent_vllm.py --watch 3              # then three observations
    uv run python examples/visual_agent_vllm.py --audio 3 "What do you hear?"   # and the last 3 s of sound
    uv run python examples/visual_agent_vllm.py --audio 2 --audio-file door.wav --watch 3 --on-sound

The model must take images (and, with ``--audio``, sound): Gemma 3n, for example, on a GPU machine
(``uv sync --extra vllm`` installs vLLM there):

    vllm serve google/gemma-3n-E4B-it --limit-mm-per-prompt '{"image": 2, "audio": 1}'

with ``llm.vllm_base_url`` pointing at it (default ``http://localhost:8000/v1``). See docs/video.md.

It reads ``config.yaml`` (or ``$ARGENTIC_CONFIG``), then:

1. uses the configured MQTT broker, or starts the embedded one when none listens locally;
2. opens the video source: the test pattern, a file (played at its own rate, looping), or a
   ``WebRTCDriver``; with ``--source webrtc`` this script also streams the test pattern to it over
   WebRTC, signaling over MQTT, unless ``--external-sender`` says another process does
   (``examples/webrtc_sender.py``, or a browser page);
3. starts a ``VisualAgent`` that serves questions on MQTT, and asks it one as a client would;
   the agent attaches the newest frame(s), JPEG-encoded and scaled, within the model's image limit,
   and with ``--audio S`` the last S seconds of the source's sound (the test pattern's tone, the
   file's audio track, the WebRTC peer's sound) or of ``--audio-file``, as a 16 kHz WAV clip;
4. with ``--watch N``, asks a standing question every few seconds (and with ``--on-sound`` when
   the sound gets loud) and prints the N observations the agent publishes on
   ``{ns}/agents/{role}/observations``.

A model that cannot take images (the text-only CPU model of the tests) refuses the request: the
script prints the server's refusal and how to start a model that sees.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from contextlib import AsyncExitStack

from argentic.agents.runtime import backends
from argentic.agents.visual_agent import VisualAgent
from argentic.config import load_config
from argentic.errors import ArgenticError
from argentic.llm.factory import endpoint_url
from argentic.llm.local_server import health_ok
from argentic.messaging import Messager
from argentic.protocol import Answer, ErrorReply, Observation, Question, Topics
from argentic.video import TestPatternSource, WebRTCDriver, WebRTCSender, source_from_config
from argentic.video.audio import wait_for_sound

QUESTION = "Describe what you see in one sentence: the colours and any shapes."
MODEL_HINT = 'vllm serve google/gemma-3n-E4B-it --limit-mm-per-prompt \'{"image": 2, "audio": 1}\''


def say(text: str) -> None:
    print(text, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("question", nargs="*", help=f"default: {QUESTION!r}")
    parser.add_argument("--source", help="'test_pattern' (default), 'webrtc', or a video file/URL")
    parser.add_argument(
        "--sampling", choices=["latest", "window", "scene_change"], help="default: video.sampling"
    )
    parser.add_argument("--watch", type=int, default=0, metavar="N", help="then print N watch observations")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between watch observations")
    parser.add_argument("--external-sender", action="store_true", help="with --source webrtc: do not send")
    parser.add_argument(
        "--audio", type=float, metavar="SECONDS", help="add the last SECONDS of sound to each question"
    )
    parser.add_argument("--audio-file", help="with --audio: hear this sound file (WAV) instead")
    parser.add_argument("--on-sound", action="store_true", help="with --watch: also ask when it gets loud")
    return parser.parse_args()


async def main(args: argparse.Namespace) -> int:
    video: dict[str, object] = {"source": args.source or "test_pattern"}
    if args.sampling:
        video["sampling"] = args.sampling
    if args.audio:
        video["audio_s"] = args.audio
    if args.audio_file:
        video["audio_source"] = args.audio_file
    if video["source"] == "webrtc" and not args.external_sender:
        video["host_addresses"] = ["127.0.0.1"]  # sender and receiver are both here
    config = load_config(overrides={"video": video})
    topics = Topics(config.messaging.namespace)
    role = "visual"
    base_url = endpoint_url(config.llm)
    if config.llm.provider != "scripted" and not await asyncio.to_thread(health_ok, base_url):
        say(f"no model server answers at {base_url}. On a GPU machine start one that sees:")
        say(f"    {MODEL_HINT}")
        return 2
    async with backends(config) as backend, AsyncExitStack() as stack:
        if backend.broker is not None:
            address = f"{config.messaging.broker_address}:{config.messaging.port}"
            say(f"started the embedded MQTT broker on {address}")
        will = VisualAgent.will(topics, role)
        agent_bus = await stack.enter_async_context(Messager.from_config(config.messaging, will=will))
        client = await stack.enter_async_context(Messager.from_config(config.messaging, persistent=False))
        source = source_from_config(config.video, agent_bus)
        await source.start()
        stack.push_async_callback(source.stop)
        if isinstance(source, WebRTCDriver):
            if args.external_sender:
                say(f"waiting for a WebRTC offer on {source.offer_topic}")
            else:
                pattern = TestPatternSource(640, 480, fps=30, scene_every=150)
                await pattern.start()
                stack.push_async_callback(pattern.stop)
                sender = WebRTCSender.from_config(
                    client, pattern, config.video, reconnect=True, audio=bool(args.audio)
                )
                await sender.connect()
                stack.push_async_callback(sender.close)
                say(f"streaming the test pattern over WebRTC to {source.offer_topic}")
        frame = await source.wait_for_frame(60)
        say(f"video: {config.video.source}, {frame.width}x{frame.height}")

        agent = VisualAgent.from_config(config, llm=backend.llm, messager=agent_bus, driver=source, role=role)
        await agent.async_init()
        stack.push_async_callback(agent.stop)
        say(f"model {await backend.llm.resolve_model()}; up to {agent.image_limit} image(s) per prompt")
        if agent.audio_s:
            heard = config.video.audio_source or "the video source"
            if agent.audio_buffer is None:
                say(f"{config.video.source} has no sound; --audio-file names a WAV file to hear")
                return 2
            # a feed that just started has less sound than asked for: let it fill first
            await wait_for_sound(agent.audio_buffer, agent.audio_s, timeout=agent.audio_s + 30)
            say(f"sound: the last {agent.audio_s:g} s of {heard} ({agent.audio_limit} clip per prompt)")

        question = Question(text=" ".join(args.question) or QUESTION)
        say(f"question: {question.text}")
        reply = await client.request(
            topics.agent_questions(role), question, response_model=Answer, timeout=config.llm.timeout_s * 2
        )
        if isinstance(reply, ErrorReply):
            say(f"the agent could not answer: {reply.error.code}: {reply.error.message}")
            if reply.error.code == "llm_error":
                say(f"if the model cannot take images, serve one that does:\n    {MODEL_HINT}")
            return 1
        frames = agent.last_frames
        heard = agent.last_audio
        sound = f" and {heard.duration_s:.1f} s of {heard.sample_rate} Hz WAV" if heard is not None else ""
        say(
            f"answer (from {len(frames)} frame(s), {frames[0].width}x{frames[0].height} JPEG{sound}): "
            f"{reply.text}"
        )

        if args.watch:
            seen: asyncio.Queue[Observation] = asyncio.Queue(maxsize=args.watch * 2)

            async def on_observation(observation: Observation) -> None:
                seen.put_nowait(observation)

            await client.subscribe(topics.agent_observations(role), on_observation, model=Observation)
            agent.start_watch(
                "What changed? One sentence.",
                interval_s=args.interval,
                on_scene_change=True,
                on_sound=args.on_sound,
                sound_threshold_dbfs=config.video.sound_threshold_dbfs,
            )
            for _ in range(args.watch):
                observation = await asyncio.wait_for(seen.get(), config.llm.timeout_s + args.interval * 2)
                trigger = observation.data.get("trigger") if isinstance(observation.data, dict) else None
                say(f"observation: {observation.text} (on {trigger})")
        return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        sys.exit(asyncio.run(main(parse_args())))
    except ArgenticError as exc:
        print(f"visual_agent_vllm: {exc}", file=sys.stderr)
        sys.exit(1)
