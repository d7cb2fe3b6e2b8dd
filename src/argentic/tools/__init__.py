"""Tools: write them (:func:`tool`, :class:`BaseTool`), serve them (:class:`ToolService`), call them
(:class:`ToolManager`), or give them to an agent to call in its own process (:class:`LocalTools`,
``Agent(tools=[...])``)."""

from argentic.tools.base import BaseTool, FunctionTool, NoArguments, tool, tool_id
from argentic.tools.local import LocalTools
from argentic.tools.manager import ToolManager
from argentic.tools.service import ToolService, tool_service_will

__all__ = [
    "BaseTool",
    "FunctionTool",
    "LocalTools",
    "NoArguments",
    "ToolManager",
    "ToolService",
    "tool",
    "tool_id",
    "tool_service_will",
]
