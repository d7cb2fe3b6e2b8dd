"""The README's Python sample, run as written (only the broker's port filled in) on the real CPU
model: user code is the measure of the library."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agents_support import REPO

from argentic.llm.markup import tool_markup
from argentic.testing.mosquitto import MosquittoBroker


def readme_sample() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## In Python") :]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match is not None, "the README has no Python sample"
    return match.group(1)


@pytest.mark.vllm
def test_the_readme_sample_runs(tmp_path: Path, mosquitto: MosquittoBroker, vllm_server: Any) -> None:
    code = readme_sample()
    assert "port=1883" in code
    script = tmp_path / "sample.py"
    script.write_text(code.replace("port=1883", f"port={mosquitto.port}"))
    env = {
        **os.environ,
        "ARGENTIC_CONFIG": str(REPO / "config.yaml"),
        "ARGENTIC_LLM__VLLM_BASE_URL": vllm_server.base_url,
        "ARGENTIC_LLM__VLLM_MODEL_NAME": vllm_server.model,
        # The answers' wording is not the point: short, with room for a whole guided tool call.
        "ARGENTIC_LLM__MAX_TOKENS": "64",
        "ARGENTIC_LLM__TIMEOUT_S": "300",
    }
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, timeout=280
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()[-3000:]
    # one answer from the agent in-process, one through AgentClient over MQTT: text, never tool
    # markup (what the numbers are is measured by bench/answers.py: the model writes them)
    answers = done.stdout.decode().strip().splitlines()
    assert len(answers) == 2 and all(a.strip() and tool_markup(a) is None for a in answers), answers
