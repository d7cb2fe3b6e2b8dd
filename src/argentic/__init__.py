"""argentic: AI agents that talk over MQTT and think with vLLM.

The main names are importable from here; each is loaded on first use so that importing one part
(the Messager, say) does not pull in the video stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from argentic.config import ArgenticConfig, load_config
from argentic.errors import ArgenticError

if TYPE_CHECKING:
    from argentic.agents.agent import Agent
    from argentic.agents.client import AgentClient, describe_event
    from argentic.agents.runtime import backends
    from argentic.agents.team import Team, TeamAgent
    from argentic.agents.visual_agent import VisualAgent
    from argentic.agents.visual_service import open_visual_agent
    from argentic.llm import LLMFactory
    from argentic.messaging import Messager
    from argentic.tools import BaseTool, ToolManager, ToolService, tool

__version__ = "0.1.0"

_LAZY = {
    "Agent": "argentic.agents.agent",
    "AgentClient": "argentic.agents.client",
    "describe_event": "argentic.agents.client",
    "backends": "argentic.agents.runtime",
    "Team": "argentic.agents.team",
    "TeamAgent": "argentic.agents.team",
    "VisualAgent": "argentic.agents.visual_agent",
    "open_visual_agent": "argentic.agents.visual_service",
    "LLMFactory": "argentic.llm",
    "Messager": "argentic.messaging",
    "BaseTool": "argentic.tools",
    "ToolManager": "argentic.tools",
    "ToolService": "argentic.tools",
    "tool": "argentic.tools",
}

__all__ = [
    "Agent",
    "AgentClient",
    "ArgenticConfig",
    "ArgenticError",
    "BaseTool",
    "LLMFactory",
    "Messager",
    "Team",
    "TeamAgent",
    "ToolManager",
    "ToolService",
    "VisualAgent",
    "backends",
    "describe_event",
    "load_config",
    "open_visual_agent",
    "tool",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'argentic' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
