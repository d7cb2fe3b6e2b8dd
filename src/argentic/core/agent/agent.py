"""``from argentic.core.agent.agent import Agent`` (earlier import path)."""

from argentic.agents.agent import Agent

__all__ = ["Agent"]
