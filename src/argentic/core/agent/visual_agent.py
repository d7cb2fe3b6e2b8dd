"""``from argentic.core.agent.visual_agent import VisualAgent`` (earlier import path)."""

from argentic.agents.visual_agent import VisualAgent

__all__ = ["VisualAgent"]
