"""examples/visual_agent_vllm.py run as a user runs it, on a fresh-machine setup: the embedded
broker it starts itself and the scripted model (multimodal inference needs a GPU here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from argentic.netutil import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "visual_agent_vllm.py"


def run_example(tmp_path: Path, *args: str) -> str:
    env = dict(os.environ)
    env.update(
        ARGENTIC_CONFIG=str(REPO / "config.yaml"),
        ARGENTIC_LLM__PROVIDER="scripted",
        ARGENTIC_MESSAGING__BROKER_ADDRESS="127.0.0.1",
        ARGENTIC_MESSAGING__PORT=str(free_port()),
        ARGENTIC_MESSAGING__EMBEDDED_BROKER="auto",
    )
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), *args], cwd=tmp_path, env=env, capture_output=True, timeout=120
    )
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, out + err[-3000:]
    assert "started the embedded MQTT broker" in err  # what was started is said on stderr
    return out


@pytest.mark.parametrize("source", ["test_pattern", "webrtc"])
def test_visual_example_answers_from_one_jpeg_frame(tmp_path: Path, source: str) -> None:
    out = run_example(tmp_path, "--source", source, "What colour is the bar?")
    assert re.search(r"answer \(from 1 frame\(s\), 640x480 JPEG\)", out), out
    if source == "webrtc":
        assert "streaming the test pattern over WebRTC" in out


def test_visual_example_watch_mode_prints_observations(tmp_path: Path) -> None:
    out = run_example(tmp_path, "--watch", "2", "--interval", "0.5")
    assert len(re.findall(r"^observation: ", out, flags=re.M)) == 2, out


def test_visual_example_reads_a_video_file(tmp_path: Path, pattern_video: Callable[..., Path]) -> None:
    clip = pattern_video(frames=60, width=320, height=240)
    out = run_example(tmp_path, "--source", str(clip))
    assert re.search(rf"video: {re.escape(str(clip))}, 320x240", out), out
    assert re.search(r"answer \(from 1 frame\(s\), 320x240 JPEG\)", out), out
