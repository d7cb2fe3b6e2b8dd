"""``from argentic.core.tools import ToolManager`` (earlier import path)."""

from argentic.tools import BaseTool, ToolManager, ToolService, tool

__all__ = ["BaseTool", "ToolManager", "ToolService", "tool"]
