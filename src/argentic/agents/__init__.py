"""Agents: an LLM with tools answering questions, locally and over MQTT."""

from argentic.agents.agent import Agent, AgentResult
from argentic.agents.client import AgentClient, AgentRun, describe_event
from argentic.agents.conversation import ConversationStore
from argentic.agents.loop import LoopPolicy, ToolLoop
from argentic.agents.messages import MessageBuilder
from argentic.agents.team import Team, TeamAgent
from argentic.errors import StepLimitError

__all__ = [
    "Agent",
    "AgentClient",
    "AgentResult",
    "AgentRun",
    "ConversationStore",
    "LoopPolicy",
    "MessageBuilder",
    "StepLimitError",
    "Team",
    "TeamAgent",
    "ToolLoop",
    "describe_event",
]
