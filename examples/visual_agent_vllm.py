"""A visual agent over a video feed, thinking with a multimodal model on vLLM.

    uv run python examples/visual_agent_vllm.py                        # the test pattern
    uv run python examples/visual_agent_vllm.py --source clip.mp4 "What is happening?"
    uv run python examples/visual_agent_vllm.py --source webrtc        # over WebRTC (a local sender)
    uv run python examples/visual_agent_vllm.py --watch 3              # then three observations
    uv run python examples/visual_agent_vllm.py --cpu                  # no GPU: the tiny CPU model

The model must take images: Gemma 3n, for example, on a GPU machine:

    vllm serve google/gemma-3n-E4B-it --limit-mm-per-prompt '{"image": 2}'

with ``llm.vllm_base_url`` pointing at it (default ``http://localhost:8000/v1``). See docs/video.md.
On a machine without a GPU, ``--cpu`` serves the CPU build's tiny vision-language model when no
server answers (built on first use). Its weights are random: it sees nothing and its answers are
noise, but the whole path works (frames, JPEG parts, vLLM's image processing, the image limit).
The broker of ``config.yaml`` is used, or the embedded one started. With ``--source webrtc`` this
script also streams the test pattern to the agent over WebRTC (signaling over MQTT), unless
``--external-sender`` says another process does (``examples/webrtc_sender.py``, a browser page).
"""

import argparse
import asyncio
import sys
from contextlib import AsyncExitStack

from argentic import AgentClient, Messager, VisualAgent, backends, load_config
from argentic.errors import AgentReplyError, ArgenticError
from argentic.llm.local import CPU_VLM_NAME
from argentic.protocol import Observation
from argentic.video import TestPatternSource, WebRTCDriver, WebRTCSender, source_from_config

QUESTION = "Describe what you see in one sentence: the colours and any shapes."
MODEL_HINT = "vllm serve google/gemma-3n-E4B-it --limit-mm-per-prompt '{\"image\": 2}'"
# --cpu: the tiny vision-language model, two images per prompt, short answers (they are noise).
CPU_SETTINGS = {"max_tokens": 24, "server": {"cpu_model": CPU_VLM_NAME, "limit_mm_per_prompt": {"image": 2}}}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("question", nargs="*", help=f"default: {QUESTION!r}")
    parser.add_argument(
        "--source", default="test_pattern", help="'test_pattern', 'webrtc', or a video file/URL"
    )
    parser.add_argument(
        "--sampling", choices=["latest", "window", "scene_change"], help="default: video.sampling"
    )
    parser.add_argument("--watch", type=int, default=0, metavar="N", help="then print N watch observations")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between watch observations")
    parser.add_argument("--external-sender", action="store_true", help="with --source webrtc: do not send")
    parser.add_argument(
        "--cpu", action="store_true", help=f"no server answers: serve {CPU_VLM_NAME} (sees nothing)"
    )
    return parser.parse_args()


async def main(args: argparse.Namespace) -> int:
    video: dict[str, object] = {"source": args.source}
    if args.sampling:
        video["sampling"] = args.sampling
    if args.source == "webrtc" and not args.external_sender:
        video["host_addresses"] = ["127.0.0.1"]  # sender and receiver are both here
    config = load_config(overrides={"video": video, **({"llm": CPU_SETTINGS} if args.cpu else {})})
    async with AsyncExitStack() as stack:
        backend = await stack.enter_async_context(backends(config, start_llm=args.cpu))
        messager = await stack.enter_async_context(Messager.from_config(config.messaging))
        source = await stack.enter_async_context(source_from_config(config.video, messager))
        if isinstance(source, WebRTCDriver) and not args.external_sender:
            pattern = await stack.enter_async_context(TestPatternSource(640, 480, fps=30, scene_every=150))
            await stack.enter_async_context(
                WebRTCSender.from_config(messager, pattern, config.video, reconnect=True)
            )
            print(f"streaming the test pattern over WebRTC to {source.offer_topic}")
        frame = await source.wait_for_frame(60)
        print(f"video: {args.source}, {frame.width}x{frame.height}")
        agent = VisualAgent.from_config(
            config, llm=backend.llm, messager=messager, driver=source, role="visual"
        )
        await stack.enter_async_context(agent)
        print(f"model {await backend.llm.resolve_model()}; up to {agent.image_limit} image(s) per prompt")
        if args.cpu:
            print(
                f"{CPU_VLM_NAME} has random weights: it sees nothing and its answers are noise; for answers"
            )
            print(f"about the video, serve Gemma 3n on a GPU:\n    {MODEL_HINT}")

        question = " ".join(args.question) or QUESTION
        print(f"question: {question}")
        try:
            answer = await AgentClient(messager, agent.role).ask(question)
        except AgentReplyError as exc:
            print(f"the agent could not answer: {exc}\nif the model cannot take images, serve one that does:")
            print(f"    {MODEL_HINT}\nor run with --cpu to serve the tiny CPU model, which sees nothing")
            return 1
        frames = agent.last_frames
        print(f"answer (from {len(frames)} frame(s), {frames[0].width}x{frames[0].height} JPEG): {answer}")

        if args.watch:
            topic = messager.topics.agent_observations(agent.role)
            async with messager.messages(topic, model=Observation) as observations:
                agent.start_watch(
                    "What changed? One sentence.", interval_s=args.interval, on_scene_change=True
                )
                for _ in range(args.watch):
                    async with asyncio.timeout(config.llm.timeout_s + args.interval * 2):
                        observation = await anext(aiter(observations))
                    print(f"observation: {observation.text}")
        return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(parse_args())))
    except ArgenticError as exc:
        print(f"visual_agent_vllm: {exc}", file=sys.stderr)
        sys.exit(1)
