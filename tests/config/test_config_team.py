"""Roles and named endpoints in config: loading, clear errors naming role and key, providers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from argentic.agents.team import Team
from argentic.config import ArgenticConfig, load_config, team_roles
from argentic.errors import ConfigError
from argentic.llm import FunctionLLM
from argentic.llm.factory import endpoint_config
from argentic.llm.openai_provider import OpenAICompatibleProvider
from argentic.messaging import Messager

ROOT = Path(__file__).resolve().parents[2]


def _load(tmp_path: Path, text: str) -> ArgenticConfig:
    file = tmp_path / "team.yaml"
    file.write_text(text)
    return load_config(file, environ={})


def test_the_example_team_loads_with_roles_on_named_endpoints() -> None:
    config = load_config(ROOT / "examples" / "team.yaml", environ={})
    assert list(config.roles) == ["architect", "developer", "reviewer"]
    architect, developer = config.roles["architect"], config.roles["developer"]
    assert architect.sampling is not None and developer.sampling is not None
    assert (architect.llm, architect.sampling.temperature, architect.delegates) == (
        "big",
        0.1,
        ["developer", "reviewer"],
    )
    assert (developer.llm, developer.sampling.temperature, developer.replicas) == ("coder", 0.3, 2)
    coder = endpoint_config(config.llm, "coder")
    assert coder.vllm_base_url == "http://localhost:8001/v1"
    assert coder.vllm_model_name == "Qwen/Qwen2.5-Coder-7B-Instruct"
    assert coder.server.port == 8001 and coder.max_tokens == 512


def test_a_roles_older_flat_sampling_keys_load_into_sampling(tmp_path: Path) -> None:
    text = "roles:\n  dev:\n    temperature: 0.2\n    seed: 7\n    sampling: {max_tokens: 64}\n"
    sampling = _load(tmp_path, text).roles["dev"].sampling
    assert sampling is not None
    assert (sampling.temperature, sampling.seed, sampling.max_tokens) == (0.2, 7, 64)


def test_the_agent_section_is_a_team_of_one(tmp_path: Path) -> None:
    text = "agent:\n  role: helper\n  system_prompt: Be brief.\n  max_steps: 3\n  max_tasks: 5\n"
    config = _load(tmp_path, text + "  sampling: {temperature: 0.4}\n")
    roles = team_roles(config)
    assert list(roles) == ["helper"]
    helper = roles["helper"]
    assert helper.system_prompt == "Be brief." and helper.max_steps == 3
    # Every agent option carries over, not a chosen few.
    assert helper.max_tasks == 5 and helper.sampling is not None and helper.sampling.temperature == 0.4


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            "roles:\n  architect:\n    delegates: [developer]\n",
            ["roles.architect.delegates", "unknown role 'developer'"],
        ),
        (
            "roles:\n  architect:\n    llm: big\n",
            ["roles.architect.llm", "unknown endpoint 'big'"],
        ),
        ("roles:\n  architect:\n    temprature: 0.1\n", ["roles.architect.temprature", "unknown key"]),
        ("roles:\n  architect:\n    temperature: 9\n", ["roles.architect.sampling.temperature"]),
        ("roles:\n  architect:\n    sampling: {temperature: 9}\n", ["roles.architect.sampling.temperature"]),
        ("roles:\n  architect:\n    sampling: {temprature: 1}\n", ["roles.architect.sampling.temprature"]),
        ("roles:\n  lead:\n    supervise: true\n", ["roles.lead.supervise", "needs delegates"]),
        ("roles:\n  a/b: {}\n", ["roles.a/b", "'/'"]),
        ("llm:\n  endpoints:\n    big:\n      modle: x\n", ["llm.endpoints.big.modle", "unknown key"]),
    ],
)
def test_team_errors_name_the_role_and_the_key(tmp_path: Path, text: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_an_unknown_endpoint_is_named_when_asked_for() -> None:
    with pytest.raises(ConfigError, match="no endpoint 'small'"):
        endpoint_config(ArgenticConfig().llm, "small")


async def test_roles_share_their_endpoints_provider_and_set_their_sampling() -> None:
    config = ArgenticConfig.model_validate(
        {
            "llm": {
                "vllm_base_url": "http://127.0.0.1:9/v1",
                "endpoints": {"coder": {"base_url": "http://127.0.0.1:10/v1", "model": "coder-7b"}},
            },
            "roles": {
                "architect": {"temperature": 0.1},
                "developer": {"llm": "coder", "temperature": 0.3, "replicas": 3},
                "reviewer": {"llm": "coder"},
            },
        }
    )
    default = OpenAICompatibleProvider(base_url="http://127.0.0.1:9/v1", model="big")
    team = Team(config, messager=Messager(), llm=default)
    agents = team.build()
    by_role: dict[str, list[object]] = {}
    for agent in agents:
        by_role.setdefault(agent.role, []).append(agent.llm)
    assert [len(v) for v in by_role.values()] == [1, 3, 1]
    developer = by_role["developer"][0]
    assert all(llm is developer for llm in by_role["developer"])  # one provider for the replicas
    assert isinstance(developer, OpenAICompatibleProvider)
    reviewer = by_role["reviewer"][0]
    assert isinstance(reviewer, OpenAICompatibleProvider)
    assert developer.endpoint is reviewer.endpoint  # one connection pool per endpoint
    assert developer.base_url == "http://127.0.0.1:10/v1" and developer.model_name == "coder-7b"
    assert developer.defaults.temperature == 0.3 and reviewer.defaults.temperature is None
    architect = by_role["architect"][0]
    assert isinstance(architect, OpenAICompatibleProvider)
    assert architect.endpoint is default.endpoint and architect.defaults.temperature == 0.1
    await team.stop()
    await default.close()


def test_a_team_refuses_unknown_roles() -> None:
    config = ArgenticConfig.model_validate({"roles": {"a": {}}})
    with pytest.raises(ConfigError, match="unknown role"):
        Team(config, messager=Messager(), llm=FunctionLLM(lambda *_: "x"), roles=["b"])


def test_argentic_team_names_an_unknown_role(tmp_path: Path) -> None:
    file = tmp_path / "team.yaml"
    file.write_text("roles:\n  a: {}\n  b: {}\n")
    done = subprocess.run(
        [sys.executable, "-m", "argentic.cli.main", "-c", str(file), "team", "--roles", "a,zed"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown role(s) zed" in done.stderr and "roles: a, b" in done.stderr


def test_an_endpoint_without_server_settings_is_served_where_its_url_points() -> None:
    config = ArgenticConfig.model_validate(
        {
            "llm": {
                "endpoints": {
                    "small": {"base_url": "http://127.0.0.1:8123/v1", "model": "tiny", "temperature": 0.2}
                }
            }
        }
    )
    small = endpoint_config(config.llm, "small")
    assert (small.server.host, small.server.port, small.server.model) == ("127.0.0.1", 8123, "tiny")
    assert small.vllm_base_url == "http://127.0.0.1:8123/v1" and small.temperature == 0.2
    assert small.endpoints == {}


def test_argentic_serve_starts_the_server_of_a_named_endpoint() -> None:
    env = {**os.environ, "ARGENTIC_LLM__ENDPOINTS__CODER__SERVER__PYTHON": sys.executable}
    config = str(ROOT / "examples" / "team.yaml")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "argentic.cli.main",
            "-c",
            config,
            "serve",
            "--endpoint",
            "coder",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "--model Qwen/Qwen2.5-Coder-7B-Instruct" in done.stdout and "--port 8001" in done.stdout
    unknown = subprocess.run(
        [sys.executable, "-m", "argentic.cli.main", "-c", config, "serve", "--endpoint", "codr", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 2 and "no endpoint 'codr' (endpoints: big, coder)" in unknown.stderr
