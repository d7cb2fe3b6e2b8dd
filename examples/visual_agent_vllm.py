"""A visual agent over a video feed, thinking with a multimodal model on vLLM.

    uv run python examples/visual_agent_vllm.py                        # the test pattern
    uv run python examples/visual_agent_vllm.py --source clip.mp4 "What is happening?"
    uv run python examples/visual_agent_vllm.py --source webrtc        # over WebRTC (a local sender)
    uv run python examples/visual_agent_vllm.py --watch 3              # then three observations
    uv run python examples/visual_agent_vllm.py --cpu                  # no GPU: the tiny CPU model

The model must take images: Gemma 3n, for example, on a GPU machine:

    vllm serve google/gemma-3n-E4B-it --limit-mm-per-prompt '{"image": 2}'

with ``llm.vllm_base_url`` pointing at it (default ``http://localhost:8000/v1``). See docs/video.md.

On a machine without a GPU, ``--cpu`` serves the CPU build's tiny vision-language model when no server
answers (built on first use, a few minutes). Its weights are random: it sees nothing and its answers
are noise. It shows the whole path working (frames, JPEG parts, vLLM's image processing, the image
limit per prompt, watch mode); for answers about the video, serve Gemma 3n on a GPU.

It reads ``config.yaml`` (or ``$ARGENTIC_CONFIG``), then:

1. uses the configured MQTT broker, or starts the embedded one when none listens locally;
2. opens the video source: the test pattern, a file (played at its own rate, looping), or a
   ``WebRTCDriver``; with ``--source webrtc`` this script also streams the test pattern to it over
   WebRTC, signaling over MQTT, unless ``--external-sender`` says another process does
   (``examples/webrtc_sender.py``, or a browser page);
3. starts a ``VisualAgent`` that serves questions on MQTT, and asks it one as a client would;
   the agent attaches the newest frame(s), JPEG-encoded and scaled, within the model's image limit;
4. with ``--watch N``, asks a standing question every few seconds and prints the N observations
   the agent publishes on ``{ns}/agents/{role}/observations``.

A model that cannot take images (the text-only CPU model) refuses the request: the script prints
the server's refusal and how to start a model that sees.
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
from argentic.llm.local import CPU_VLM_NAME
from argentic.llm.local_server import ensure_local_server, health_ok
from argentic.messaging import Messager
from argentic.protocol import Answer, ErrorReply, Observation, Question, Topics
from argentic.video import TestPatternSource, WebRTCDriver, WebRTCSender, source_from_config

QUESTION = "Describe what you see in one sentence: the colours and any shapes."
MODEL_HINT = "vllm serve google/gemma-3n-E4B-it --limit-mm-per-prompt '{\"image\": 2}'"
# --cpu: the CPU build's tiny vision-language model, two images per prompt, short (noise) answers.
CPU_SETTINGS = {"max_tokens": 24, "server": {"cpu_model": CPU_VLM_NAME, "limit_mm_per_prompt": {"image": 2}}}
NOISE_NOTICE = (
    f"{CPU_VLM_NAME} has random weights: it sees nothing and its answers are noise. This run shows the "
    "path working (frames, JPEG parts, vLLM's image processing, the image limit); for answers about "
    f"the video, serve Gemma 3n on a GPU:\n    {MODEL_HINT}"
)


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
        "--cpu",
        action="store_true",
        help=f"when no server answers, serve the CPU build's {CPU_VLM_NAME} (random weights: sees nothing)",
    )
    return parser.parse_args()


async def main(args: argparse.Namespace) -> int:
    video: dict[str, object] = {"source": args.source or "test_pattern"}
    if args.sampling:
        video["sampling"] = args.sampling
    if video["source"] == "webrtc" and not args.external_sender:
        video["host_addresses"] = ["127.0.0.1"]  # sender and receiver are both here
    config = load_config(overrides={"video": video, **({"llm": CPU_SETTINGS} if args.cpu else {})})
    topics = Topics(config.messaging.namespace)
    role = "visual"
    base_url = endpoint_url(config.llm)
    if (
        config.llm.provider != "scripted"
        and not args.cpu
        and not await asyncio.to_thread(health_ok, base_url)
    ):
        say(f"no model server answers at {base_url}. On a GPU machine start one that sees:")
        say(f"    {MODEL_HINT}")
        say(f"or run with --cpu to serve the tiny CPU model ({CPU_VLM_NAME}, which sees nothing)")
        return 2
    async with AsyncExitStack() as stack:
        if args.cpu:
            server = await ensure_local_server(config, progress=say)
            if server is not None:
                stack.push_async_callback(asyncio.to_thread, server.stop)
        backend = await stack.enter_async_context(backends(config))
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
                sender = WebRTCSender.from_config(client, pattern, config.video, reconnect=True)
                await sender.connect()
                stack.push_async_callback(sender.close)
                say(f"streaming the test pattern over WebRTC to {source.offer_topic}")
        frame = await source.wait_for_frame(60)
        say(f"video: {config.video.source}, {frame.width}x{frame.height}")

        agent = VisualAgent.from_config(config, llm=backend.llm, messager=agent_bus, driver=source, role=role)
        await agent.async_init()
        stack.push_async_callback(agent.stop)
        model = await backend.llm.resolve_model()
        say(f"model {model}; up to {agent.image_limit} image(s) per prompt")
        if model == CPU_VLM_NAME:
            say(NOISE_NOTICE)

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
        say(f"answer (from {len(frames)} frame(s), {frames[0].width}x{frames[0].height} JPEG): {reply.text}")

        if args.watch:
            seen: asyncio.Queue[Observation] = asyncio.Queue(maxsize=args.watch * 2)

            async def on_observation(observation: Observation) -> None:
                seen.put_nowait(observation)

            await client.subscribe(topics.agent_observations(role), on_observation, model=Observation)
            agent.start_watch("What changed? One sentence.", interval_s=args.interval, on_scene_change=True)
            for _ in range(args.watch):
                observation = await asyncio.wait_for(seen.get(), config.llm.timeout_s + args.interval * 2)
                say(f"observation: {observation.text}")
        return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        sys.exit(asyncio.run(main(parse_args())))
    except ArgenticError as exc:
        print(f"visual_agent_vllm: {exc}", file=sys.stderr)
        sys.exit(1)
