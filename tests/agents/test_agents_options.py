"""One set of agent options (``AgentOptions``) behind the ``agent`` section, team roles, ``Agent``,
``TeamAgent`` and ``VisualAgent``; sampling is one object wherever it is set."""

from __future__ import annotations

import pytest

from argentic import Agent, VisualAgent
from argentic.agents.team import TeamAgent
from argentic.config import DEFAULT_SYSTEM_PROMPT, AgentConfig, AgentOptions, ArgenticConfig, RoleConfig
from argentic.errors import ArgumentError
from argentic.llm.scripted import ScriptedLLM
from argentic.llm.types import SamplingSettings
from argentic.video.test_pattern import TestPatternSource


def test_keywords_override_the_options_and_are_validated() -> None:
    base = AgentOptions(max_steps=5, max_tasks=3, sampling=SamplingSettings(temperature=0.5))
    agent = Agent(ScriptedLLM([]), options=base, max_steps=2, tool_names=["add"])
    assert (agent.policy.max_steps, agent.max_tasks, agent.tool_names) == (2, 3, ["add"])
    assert agent.settings == SamplingSettings(temperature=0.5)
    assert base.max_steps == 5  # the options given are not changed
    with pytest.raises(ArgumentError, match="unknown agent option 'max_stepz'"):
        Agent(ScriptedLLM([]), max_stepz=2)
    with pytest.raises(ArgumentError, match="max_steps"):
        Agent(ScriptedLLM([]), max_steps=0)
    with pytest.raises(ArgumentError, match=r"sampling\.temperature"):
        Agent(ScriptedLLM([]), settings={"temperature": 9})


async def test_the_agents_sampling_reaches_each_request_under_the_requests_own() -> None:
    llm = ScriptedLLM(["one", "two"])
    agent = Agent(llm, sampling=SamplingSettings(temperature=0.3, max_tokens=40))
    await agent.ask("first")
    assert llm.requests[0].settings == SamplingSettings(temperature=0.3, max_tokens=40)


def test_the_agent_section_gives_every_option() -> None:
    section = AgentConfig(role="helper", system_prompt="Be brief.", max_steps=3, max_depth=1, max_tasks=7)
    agent = Agent.from_config(section, llm=ScriptedLLM([]), max_waiting_tasks=9)
    assert (agent.role, agent.system_prompt, agent.policy.max_steps) == ("helper", "Be brief.", 3)
    assert (agent.max_depth, agent.max_tasks, agent.max_waiting_tasks) == (1, 7, 9)


def test_a_team_role_is_the_same_options_with_its_own_keys() -> None:
    role = RoleConfig.model_validate(
        {"system_prompt": "Review.", "max_steps": 4, "max_depth": 2, "temperature": 0.1, "ask_back": True}
    )
    agent = TeamAgent.from_role("reviewer", role, llm=ScriptedLLM([]))
    assert (agent.role, agent.system_prompt, agent.policy.max_steps, agent.max_depth) == (
        "reviewer",
        "Review.",
        4,
        2,
    )
    assert agent.settings == SamplingSettings(temperature=0.1)
    assert agent.card is not None and agent.card.max_depth == 2


def test_the_visual_agent_takes_the_agent_section_and_keeps_its_own_default_prompt() -> None:
    source = TestPatternSource(64, 48, fps=None, limit=5)
    config = ArgenticConfig(agent=AgentConfig(role="eyes", max_steps=2, max_tasks=4))
    visual = VisualAgent.from_config(config, llm=ScriptedLLM([]), source=source)
    assert (visual.role, visual.policy.max_steps, visual.max_tasks) == ("eyes", 2, 4)
    assert visual.system_prompt != DEFAULT_SYSTEM_PROMPT and "frames" in visual.system_prompt
    prompted = ArgenticConfig(agent=AgentConfig(system_prompt="Count the squares."))
    assert VisualAgent.from_config(prompted, llm=ScriptedLLM([]), source=source).system_prompt == (
        "Count the squares."
    )


def test_whom_an_agent_may_ask_is_an_option_and_team_agents_keywords_still_work() -> None:
    section = AgentConfig(description="leads", delegates=["dev"], supervise=True, ask_back=True)
    plain = Agent.from_config(section, llm=ScriptedLLM([]))
    assert plain.card is not None and plain.card.asks_back
    assert (plain.card.description, plain.card.delegates) == ("leads", ["dev"])
    keywords = TeamAgent(
        ScriptedLLM([]),
        None,
        None,
        "lead",
        delegates={"dev": "writes code"},
        supervise=True,
        ask_back=True,
        delegate_timeout_s=9,
        description="leads",
    )
    assert keywords.card == plain.card.model_copy(update={"max_depth": keywords.max_depth})
    assert keywords.options.delegate_descriptions() == {"dev": "writes code"}
    assert (keywords.options.supervise, keywords.options.delegate_timeout_s) == (True, 9)
    # A role's own text for a delegate wins over the team's description of that role.
    role = RoleConfig.model_validate({"delegates": {"dev": "fixes bugs"}, "ask_back": True})
    agent = TeamAgent.from_role("lead", role, llm=ScriptedLLM([]), descriptions={"dev": "writes code"})
    assert agent.options.delegate_descriptions() == {"dev": "fixes bugs"}
    listed = TeamAgent.from_role(
        "lead", RoleConfig(delegates=["dev"]), llm=ScriptedLLM([]), descriptions={"dev": "writes code"}
    )
    assert listed.options.delegate_descriptions() == {"dev": "writes code"}
