"""``scripts/gpu_check.sh`` on a machine without a GPU: one FAIL line that says why, and exit 2
at once (nothing installed, nothing served). On a GPU machine the script runs the whole GPU tier,
which this test does not start."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine: run the script itself")
def test_gpu_check_without_a_gpu_fails_at_once_saying_why() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ARGENTIC_TEST_GEMMA3N_URL"}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, timeout=60)
    lines = done.stdout.decode().splitlines()
    assert done.returncode == 2, done.stdout.decode() + done.stderr.decode()
    assert len(lines) == 1 and lines[0].split()[:2] == ["FAIL", "gpu"]
    assert "no NVIDIA GPU" in lines[0]
