"""Every benchmark under bench/ runs in its quick mode (``--quick``: seconds, tiny sizes, the code
path of a full run), exits 0 and ends with one JSON object line, so a change that breaks a benchmark
shows here. Benchmarks are found by globbing, so new ones are covered as they are added.

A benchmark needs the vLLM server when it declares the ``--vllm-url`` option: it then runs in the
vLLM tier with the URL of the session's ``vllm_server``. The others run in the fast tier.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHES = sorted(REPO.glob("bench/*.py"))
RUN_TIMEOUT_S = 240


def declared_options(bench: Path) -> set[str]:
    """The options a script's argparse declares (``add_argument("--x", ...)``), read without running it."""
    tree = ast.parse(bench.read_text(), filename=str(bench))
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "add_argument"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    }


def needs_vllm(bench: Path) -> bool:
    return "--vllm-url" in declared_options(bench)


def test_every_benchmark_has_a_quick_mode() -> None:
    assert BENCHES, "no bench/*.py found"
    missing = [bench.name for bench in BENCHES if "--quick" not in declared_options(bench)]
    assert not missing, f"benchmarks without --quick: {missing}"


def runs_quick(bench: Path, *options: str) -> None:
    command = [sys.executable, str(bench), "--quick", *options]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    output = f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert done.returncode == 0, output
    lines = done.stdout.strip().splitlines()
    assert lines, output
    assert isinstance(json.loads(lines[-1]), dict), output


@pytest.mark.parametrize("bench", [b for b in BENCHES if not needs_vllm(b)], ids=lambda b: b.stem)
def test_benchmark_runs_quick(bench: Path) -> None:
    runs_quick(bench)


@pytest.mark.vllm
@pytest.mark.parametrize("bench", [b for b in BENCHES if needs_vllm(b)], ids=lambda b: b.stem)
def test_vllm_benchmark_runs_quick(bench: Path, vllm_server: Any) -> None:
    runs_quick(bench, "--vllm-url", vllm_server.base_url)
