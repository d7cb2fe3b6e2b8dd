"""The main example with an instruction-tuned model (Gemma 3n on a GPU): a good answer, not just a
well-formed one. Skipped without CUDA or ``ARGENTIC_TEST_GEMMA3N_URL``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest
from agents_support import REPO

from argentic.netutil import free_port

pytestmark = pytest.mark.gpu


def test_the_main_example_gives_the_right_answer(gemma3n_server: Any) -> None:
    env = {
        **os.environ,
        "ARGENTIC_LLM__PROVIDER": "vllm",
        "ARGENTIC_LLM__VLLM_BASE_URL": gemma3n_server.base_url,
        "ARGENTIC_LLM__VLLM_MODEL_NAME": gemma3n_server.model,
        "ARGENTIC_LLM__TEMPERATURE": "0",
        "ARGENTIC_MESSAGING__PORT": str(free_port()),
        "ARGENTIC_MESSAGING__EMBEDDED_BROKER": "auto",
    }
    done = subprocess.run(
        [sys.executable, "examples/single_agent_vllm.py"], cwd=REPO, env=env, capture_output=True, timeout=600
    )
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()[-3000:]
    assert re.search(r"^  tool_call calculate \{", out, flags=re.M), out
    answer = json.loads(re.search(r"^answer: (.*)$", out, flags=re.M).group(1))  # type: ignore[union-attr]
    assert answer["value"] == 1234 * 5678
