"""The usage earlier argentic documents show, run as written (only addresses filled in)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agents_support import REPO

from argentic.testing.mosquitto import MosquittoBroker

SAMPLE = """
import asyncio

from argentic import Agent, Messager, LLMFactory
from argentic.core.tools import ToolManager


async def main():
    config = {
        "llm": {
            "provider": "vllm",
            "vllm_base_url": "{base_url}",
            "vllm_model_name": "{model}",
            "temperature": 0.0,{max_tokens}
        },
        "messaging": {"broker_address": "127.0.0.1", "port": {port}},
    }
    broker = config["messaging"]
    messager = Messager(broker_address=broker["broker_address"], port=broker["port"])
    await messager.connect()

    tool_manager = ToolManager(messager)
    await tool_manager.async_init()

    llm = LLMFactory.create(config, messager)
    agent = Agent(
        llm=llm,
        messager=messager,
        tool_manager=tool_manager,
        role="assistant",
        system_prompt="You are a helpful assistant.",
    )
    await agent.async_init()

    response = await agent.query("{question}")
    print("ANSWER", type(response).__name__, bool(response))
    await messager.disconnect()


asyncio.run(main())
"""


@pytest.mark.vllm
@pytest.mark.parametrize(
    ("max_tokens", "question"),
    [
        ('\n            "max_tokens": 48,', "Name a primary colour."),
        # No bound in the config: the CPU model never stops by itself, the server bounds the reply.
        ("", "What is the capital of France?"),
    ],
    ids=["max_tokens", "no_max_tokens"],
)
def test_seed_style_sample_runs(
    tmp_path: Path, mosquitto: MosquittoBroker, vllm_server: Any, max_tokens: str, question: str
) -> None:
    script = tmp_path / "sample.py"
    code = SAMPLE.replace("{base_url}", vllm_server.base_url).replace("{model}", vllm_server.model)
    code = code.replace("{max_tokens}", max_tokens).replace("{question}", question)
    script.write_text(code.replace("{port}", str(mosquitto.port)))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=REPO, env=dict(os.environ), capture_output=True, timeout=200
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert "ANSWER str True" in done.stdout.decode()
