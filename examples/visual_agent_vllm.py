"""A visual agent over a video feed, thinking with a multimodal model on vLLM.

    uv run python examples/visual_agent_vllm.py                        # the test pattern
    uv run python examples/visual_agent_vllm.py --source clip.mp4 "What is happening?"
    uv run python examples/visual_agent_vllm.py --source webrtc        # over WebRTC (a local sender)
    uv run python examples/visual_agent_vllm.py --watch 3              # then three observations
    uv run python examples/visual_agent_vllm.py --audio 3 "What do you hear?"   # and the last 3 s of sound
    uv run python examples/visual_agent_vllm.py --audio 2 --audio-file door.wav --watch 3 --on-sound
    uv run python examples/visual_agent_vllm.py --cpu                  # no GPU: the tiny CPU model

The model must take images (and, with ``--audio``, sound): Gemma 3n, for example, on a GPU machine
(``uv sync --extra vllm`` installs vLLM there):

    vllm serve google/gemma-3n-E4B-it --limit-mm-per-prompt '{"image": 2, "audio": 1}'

with ``llm.vllm_base_url`` pointing at it (default ``http://localhost:8000/v1``). See docs/video.md.
On a machine without a GPU, ``--cpu`` serves the CPU build's tiny vision-language model when no
server answers (built on first use). Its weights are random: it sees nothing and its answers are
noise, but the whole path works (frames, JPEG parts, vLLM's image processing, the image limit).
The broker of ``config.yaml`` is used, or the embedded one started. With ``--source webrtc`` this
script also streams the test pattern to the agent over WebRTC (signaling over MQTT), unless
``--external-sender`` says another process does (``examples/webrtc_sender.py``, a browser page).
With ``--audio S`` each question also carries the last S seconds of sound, as a 16 kHz WAV clip:
the test pattern's tone, a file's audio track, the WebRTC peer's sound, or ``--audio-file``'s.
The question goes to the agent over MQTT, as any client would ask it; the watch's observations
come from ``agent.watch(...)`` (and are published on ``{ns}/agents/visual/observations`` too).
"""

import argparse
import asyncio
import sys

from argentic import AgentClient, load_config, open_visual_agent
from argentic.config import VideoConfig
from argentic.errors import AgentReplyError, ArgenticError
from argentic.llm.local import CPU_VLM_NAME

QUESTION = "Describe what you see in one sentence: the colours and any shapes."
MODEL_HINT = 'vllm serve google/gemma-3n-E4B-it --limit-mm-per-prompt \'{"image": 2, "audio": 1}\''
# --cpu: the tiny vision-language model, two images per prompt, short answers (they are noise).
CPU_SETTINGS = {"max_tokens": 24, "server": {"cpu_model": CPU_VLM_NAME, "limit_mm_per_prompt": {"image": 2}}}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("question", nargs="*", help=f"default: {QUESTION!r}")
    # these four are video config keys (dest): they override config.yaml's
    parser.add_argument("--source", default="test_pattern", help="test_pattern, webrtc, or a file/URL")
    parser.add_argument(
        "--sampling", choices=["latest", "window", "scene_change"], help="how frames are picked"
    )
    parser.add_argument(
        "--audio", dest="audio_s", type=float, metavar="S", help="add the last S seconds of sound"
    )
    parser.add_argument("--audio-file", dest="audio_source", help="with --audio: hear this WAV file instead")
    parser.add_argument("--watch", type=int, default=0, metavar="N", help="then print N watch observations")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between watch observations")
    parser.add_argument("--on-sound", action="store_true", help="with --watch: also ask when it gets loud")
    parser.add_argument("--external-sender", action="store_true", help="with --source webrtc: do not send")
    parser.add_argument("--cpu", action="store_true", help=f"serve {CPU_VLM_NAME} (it sees nothing)")
    return parser.parse_args()


async def main(args: argparse.Namespace) -> int:
    video = {key: value for key, value in vars(args).items() if key in VideoConfig.model_fields and value}
    config = load_config(overrides={"video": video, "llm": CPU_SETTINGS if args.cpu else {}})
    send = args.source == "webrtc" and not args.external_sender
    async with open_visual_agent(config, start_llm=args.cpu, send_test_pattern=send, role="visual") as agent:
        if send:
            print(f"streaming the test pattern over WebRTC to {agent.source.offer_topic}")
        frame = await agent.wait_for_feed(60)  # the first frame, and --audio seconds of sound
        print(f"video: {args.source}, {frame.width}x{frame.height}")
        print(f"model {await agent.llm.resolve_model()}; up to {agent.image_limit} image(s) per prompt")
        if args.cpu:
            print(f"{CPU_VLM_NAME} has random weights and sees nothing; serve Gemma 3n:\n    {MODEL_HINT}")
        if agent.audio_s:
            print(f"sound: the last {agent.audio_s:g} s of {args.audio_source or 'the video source'}")
        question = " ".join(args.question) or QUESTION
        print(f"question: {question}")
        try:  # asked over MQTT, as any client asks
            answer = await AgentClient(agent.messager, agent.role).query(question)
        except AgentReplyError as exc:
            print(f"the agent could not answer: {exc}\nif the model cannot take images or sound, serve one:")
            print(f"    {MODEL_HINT}\nor run with --cpu to serve the tiny CPU model, which sees nothing")
            return 1
        print(f"answer (from {agent.last_look.describe()}): {answer}")
        # observations as they come (each is also published on {ns}/agents/visual/observations)
        options = {"interval_s": args.interval, "on_scene_change": True, "on_sound": args.on_sound}
        async for seen in agent.watch("What changed? One sentence.", max_observations=args.watch, **options):
            print(f"observation: {seen.text} (on {seen.trigger})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(parse_args())))
    except ArgenticError as exc:
        sys.exit(f"visual_agent_vllm: {exc}")
