"""The team example end to end on the real CPU vLLM server (few tokens per answer)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest
from agents_support import REPO

from argentic.netutil import free_port

pytestmark = pytest.mark.vllm


def test_the_team_example_answers_a_task_through_its_roles(vllm_server: Any) -> None:
    """examples/team_vllm.py on a broker it starts itself: the lead splits, the members answer."""
    env = {
        **os.environ,
        "ARGENTIC_LLM__PROVIDER": "vllm",
        "ARGENTIC_LLM__VLLM_BASE_URL": vllm_server.base_url,
        "ARGENTIC_LLM__VLLM_MODEL_NAME": vllm_server.model,
        "ARGENTIC_LLM__TEMPERATURE": "0",
        "ARGENTIC_LLM__TIMEOUT_S": "300",
        "ARGENTIC_MESSAGING__PORT": str(free_port()),  # nothing listens: the embedded broker starts
        "ARGENTIC_MESSAGING__EMBEDDED_BROKER": "auto",
    }
    done = subprocess.run(
        [sys.executable, "examples/team_vllm.py"], cwd=REPO, env=env, capture_output=True, timeout=600
    )
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()[-3000:]
    tree = re.findall(r"^  (\w+) -> (\w+) \[(\w+)\]", out, flags=re.M)
    assert tree[0] == ("you", "lead", "submitted")
    assert tree[-1] == ("you", "lead", "completed")
    asked = {(asker, role) for asker, role, state in tree if state == "submitted"}
    assert asked & {("lead", "developer"), ("lead", "reviewer")}  # the lead handed out work
    for asker, role in asked:  # every part the lead handed out finished
        assert (asker, role, "completed") in tree
    answer = [line for line in out.splitlines() if line.startswith("answer: ")]
    assert len(answer) == 1 and len(answer[0]) > len("answer: ")
