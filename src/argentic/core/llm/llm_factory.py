"""``from argentic.core.llm.llm_factory import LLMFactory`` (earlier import path)."""

from argentic.llm import LLMFactory

__all__ = ["LLMFactory"]
