"""A small team answers one task over MQTT: a lead splits it between a developer and a reviewer
(in parallel), then combines their answers. Prints who asked whom, and the final answer.

    uv run python examples/team_vllm.py ["your task"]

Like the single-agent example it starts what does not answer: the embedded broker, and a local
vLLM server (the small CPU model, built on first use). The roles are set here; a real team lists
them under ``roles:`` in ``config.yaml`` (see ``examples/team.yaml``) and runs ``argentic team``.
"""

import asyncio
import sys

from argentic import AgentClient, Messager, Team, backends, load_config
from argentic.protocol import TaskStatus

ROLES = {
    "lead": {
        "description": "splits a task among the team and combines the answers",
        "system_prompt": "You lead a small team. Give each member a part of the task, then combine.",
        "delegates": ["developer", "reviewer"],
        "supervise": True,
        "max_tokens": 120,
    },
    "developer": {
        "description": "writes code",
        "system_prompt": "You write Python code. Answer with code only.",
        "max_tokens": 40,
    },
    "reviewer": {
        "description": "reviews code for bugs",
        "system_prompt": "You review code. Name one risk, briefly.",
        "max_tokens": 40,
    },
}


async def main(task: str) -> None:
    config = load_config(overrides={"roles": ROLES})
    async with (
        backends(config, start_llm=True) as backend,
        Messager.from_config(config.messaging) as messager,
        Team(config, messager=messager, llm=backend.llm) as team,
    ):
        print(f"model {await backend.llm.resolve_model()}; team: {', '.join(team.selected)}; task: {task}")
        async with AgentClient(messager, "lead").stream(task, deadline_s=600) as run:
            async for event in run:
                if isinstance(event, TaskStatus) and event.state in ("submitted", "completed", "failed"):
                    asker = event.asked_by or "you"
                    what = event.error.message if event.error else (event.text or "")
                    print(f"  {asker} -> {event.role} [{event.state}] {what[:100]!r}")
        print(f"answer: {await run.query()}")


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "Write a Python function that adds two numbers."))
