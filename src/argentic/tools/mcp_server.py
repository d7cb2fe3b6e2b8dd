"""Every tool announced on the broker, as one MCP server (the official ``mcp`` SDK's lowlevel
``Server``): ``tools/list`` lists what a :class:`~argentic.tools.ToolManager` knows, ``tools/call``
calls over MQTT through it. When the announced tools change (a service starts, stops or dies),
clients are told: on 2026-07-28 connections through their ``subscriptions/listen`` streams, on
older ones with the ``notifications/tools/list_changed`` notification.

Serve it over stdio (:meth:`McpGateway.serve_stdio`) or streamable HTTP (:meth:`McpGateway.serve_http`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from typing import Any

import uvicorn
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.session import ServerSession
from mcp.server.stdio import stdio_server
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged
from mcp.shared.exceptions import MCPError
from mcp.types import (
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
    Tool,
)
from mcp_types import INVALID_PARAMS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from argentic import __version__
from argentic.lifecycle import Running
from argentic.tools.manager import ToolManager

log = logging.getLogger(__name__)

#: Seconds announcements are let settle before clients are told of a change: a service and its
#: replicas announcing at once make one change, not several.
SETTLE_S = 0.05


#: Pre-2026 connections told of changes to the tool list (the newest that listed it).
MAX_LEGACY_CONNECTIONS = 256


class _Server(Server[Any]):
    """The SDK's server, telling pre-2026 clients (at their handshake) that the tool list changes."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities,
            extensions,
        )


class McpGateway(Running):
    """The tools ``tools`` knows as one MCP server: ``async with McpGateway(tools) as gateway:``,
    then ``await gateway.serve_stdio()`` or ``await gateway.serve_http(port)``."""

    def __init__(self, tools: ToolManager, *, name: str = "argentic") -> None:
        self.tools = tools
        self.bus = InMemorySubscriptionBus()
        self._listen = ListenHandler(self.bus)
        self.server = _Server(
            name,
            version=__version__,
            description="the tools announced on an argentic MQTT broker",
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_subscriptions_listen=self._listen,
        )
        # Pre-2026 connections that listed the tools get list_changed notifications: one request's
        # session of each (it sends on the connection's own channel), by the connection's
        # initialize parameters, which live as long as it. Bounded: a gone connection's send is
        # dropped by the SDK, and the oldest are forgotten first.
        self._sessions: OrderedDict[int, tuple[object, ServerSession]] = OrderedDict()
        self._changed = asyncio.Event()
        self._listed = ""
        self._shown: set[str] = set()  # the lists clients were given since the last change was told
        self._cancel_watch: Any = None
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._watcher is not None:
            return
        self._listed = self._fingerprint()
        self._cancel_watch = self.tools.watch(self._changed.set)
        self._watcher = asyncio.create_task(self._tell_changes(), name="mcp tools/list_changed")

    async def stop(self) -> None:
        if self._cancel_watch is not None:
            self._cancel_watch()
            self._cancel_watch = None
        self._listen.close()  # listen streams end gracefully: clients know to listen again
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def serve_stdio(self) -> None:
        """Serve one client on this process's stdin and stdout until it closes them."""
        async with stdio_server() as (read, write):
            await self.server.run(read, write, self.server.create_initialization_options())

    async def serve_http(self, port: int, host: str = "127.0.0.1", path: str = "/mcp") -> None:
        """Serve streamable HTTP on ``host:port`` at ``path`` until the process is stopped."""
        app = self.server.streamable_http_app(streamable_http_path=path, host=host)
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        serving = asyncio.ensure_future(server.serve())
        try:
            await asyncio.shield(serving)
        except asyncio.CancelledError:
            # Let uvicorn close its connections and the SDK's sessions rather than cut them.
            server.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                async with asyncio.timeout(10):
                    await serving
            raise

    def tool_list(self) -> list[Tool]:
        return [
            Tool(name=d.name, description=d.description, input_schema=d.parameters)
            for d in sorted(self.tools.definitions(), key=lambda d: d.name)
        ]

    def _fingerprint(self) -> str:
        return self._fingerprint_of(self.tool_list())

    @staticmethod
    def _fingerprint_of(tools: list[Tool]) -> str:
        return json.dumps([t.model_dump(mode="json") for t in tools], sort_keys=True)

    async def _tell_changes(self) -> None:
        while True:
            await self._changed.wait()
            await asyncio.sleep(SETTLE_S)
            self._changed.clear()
            listed = self._fingerprint()
            # A client that listed a state never told (a tool that came and went within the
            # settling time) is told too, so it does not keep that list.
            shown, self._shown = self._shown, set()
            if listed == self._listed and shown <= {listed}:
                continue
            self._listed = listed
            log.info("the announced tools changed: %s", ", ".join(t.name for t in self.tool_list()) or "none")
            await self.bus.publish(ToolsListChanged())
            for key, (_, session) in list(self._sessions.items()):
                try:
                    async with asyncio.timeout(5):
                        await session.send_tool_list_changed()
                except Exception:  # that client is gone: forget it
                    log.debug("could not tell a session the tools changed", exc_info=True)
                    self._sessions.pop(key, None)

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            connection = ctx.session.client_params or ctx.session
            self._sessions[id(connection)] = (connection, ctx.session)
            self._sessions.move_to_end(id(connection))
            while len(self._sessions) > MAX_LEGACY_CONNECTIONS:
                self._sessions.popitem(last=False)
        tools = self.tool_list()
        self._shown.add(self._fingerprint_of(tools))
        return ListToolsResult(tools=tools)

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: CallToolRequestParams
    ) -> CallToolResult:
        arguments = dict(params.arguments or {})
        result = await self.tools.call(params.name, arguments)
        if result.ok:
            value = result.result
            text = value if isinstance(value, str) else json.dumps(value)
            structured = value if isinstance(value, dict) else None
            return CallToolResult(
                content=[TextContent(type="text", text=text)], structured_content=structured
            )
        error = result.error
        code, message = (error.code, error.message) if error is not None else ("tool_failed", "no message")
        if code == "unknown_tool":
            # MCP reports a tool it does not have as a protocol error, not as a tool's failure.
            raise MCPError(INVALID_PARAMS, message)
        # Anything else, invalid arguments included, is the tool's failure: the model reads it.
        return CallToolResult(content=[TextContent(type="text", text=f"{code}: {message}")], is_error=True)
