"""Loading config.yaml, environment overrides, code overrides and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from argentic.config import ArgenticConfig, load_config
from argentic.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_config_yaml_loads() -> None:
    config = load_config(ROOT / "config.yaml", environ={})
    assert isinstance(config, ArgenticConfig)
    assert config.llm.provider == "vllm"


def test_ecosystem_keys_are_read(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text(
        "messaging:\n  broker_address: broker.example\n  port: 1884\n"
        "llm:\n  provider: vllm\n  vllm_base_url: http://gpu:8000/v1\n"
        "  vllm_model_name: google/gemma-3n-E4B-it\n"
        "  vllm_api_key: secret\n  temperature: 0.2\n  max_tokens: 256\n"
    )
    config = load_config(file, environ={})
    assert config.messaging.broker_address == "broker.example"
    assert config.messaging.port == 1884
    assert config.llm.vllm_base_url == "http://gpu:8000/v1"
    assert config.llm.vllm_model_name == "google/gemma-3n-E4B-it"
    assert config.llm.vllm_api_key is not None and config.llm.vllm_api_key.get_secret_value() == "secret"
    assert config.llm.temperature == 0.2
    assert config.llm.max_tokens == 256


def test_precedence_file_then_environment_then_code(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("llm:\n  temperature: 0.1\n  max_tokens: 10\nmessaging:\n  port: 1000\n")
    env = {"ARGENTIC_LLM__TEMPERATURE": "0.5", "ARGENTIC_MESSAGING__PORT": "2000", "UNRELATED": "x"}
    config = load_config(file, environ=env, overrides={"messaging": {"port": 3000}})
    assert config.llm.temperature == 0.5  # environment beats the file
    assert config.llm.max_tokens == 10  # the file beats the default
    assert config.messaging.port == 3000  # code beats the environment


def test_environment_reaches_nested_sections() -> None:
    config = load_config(
        None,
        environ={
            "ARGENTIC_LLM__SERVER__EXTRA_ARGS": "['--seed', '1']",
            "ARGENTIC_MESSAGING__TLS__ENABLED": "true",
        },
    )
    assert config.llm.server.extra_args == ["--seed", "1"]
    assert config.messaging.tls.enabled is True


def test_wrong_value_names_key_value_and_expectation(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("messaging:\n  port: seventy\n")
    with pytest.raises(ConfigError) as info:
        load_config(file, environ={})
    text = str(info.value)
    assert "messaging.port" in text and "'seventy'" in text and "integer" in text


def test_unknown_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"llm\.temprature: unknown key"):
        load_config(environ={}, overrides={"llm": {"temprature": 1}})


def test_out_of_range_value_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"llm\.temperature = 7"):
        load_config(environ={"ARGENTIC_LLM__TEMPERATURE": "7"})


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml", environ={})


def test_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(file, environ={})
