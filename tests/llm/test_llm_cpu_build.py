"""The CPU build finds the wheel folder of the CPU torch however it is started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from argentic.llm.local import SETUP_SCRIPT


def find_links(path: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("UV_FIND_LINKS", "PIP_FIND_LINKS", "VIRTUAL_ENV")}
    env["PATH"] = path
    done = subprocess.run(
        ["bash", str(SETUP_SCRIPT), "--find-links"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_find_links_is_read_under_uv_run_too() -> None:
    """Under `uv run` the first python3 on PATH is the project's, which has no pip."""
    venv_bin = str(Path(sys.executable).parent)
    outside = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    expected = find_links(outside)
    if not expected:
        pytest.skip("pip has no find-links setting on this machine")
    assert find_links(venv_bin + os.pathsep + outside) == expected


def test_an_explicit_folder_wins(tmp_path: Path) -> None:
    env = {**os.environ, "UV_FIND_LINKS": str(tmp_path)}
    done = subprocess.run(
        ["bash", str(SETUP_SCRIPT), "--find-links"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == str(tmp_path)
