"""An MCP server's tools as argentic tools: ``McpTools`` connects to the server (a command over
stdio, or a streamable HTTP URL) with the official ``mcp`` SDK and makes a :class:`McpTool` of each
tool it lists. Served by a :class:`~argentic.tools.ToolService`, they are announced on the broker
like any other tool, with the service's presence, validation, timeouts and replicas.

The connection lives in a task of its own (the SDK's transports are anyio task groups, which must
be left by the task that entered them). A server that exits fails the call in flight and every
later one at once with a clear ``tool_failed`` error; the next call connects again, so a server
that crashed on one call serves the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from typing import Any

import jsonschema
from mcp import Client, MCPError, StdioServerParameters
from mcp.types import CallToolResult, TextContent, Tool
from mcp_types import CONNECTION_CLOSED
from pydantic import BaseModel, ConfigDict

from argentic.errors import (
    ArgenticError,
    InvalidTopicError,
    McpServerGone,
    ToolArgumentsError,
    ToolExecutionError,
)
from argentic.lifecycle import Running
from argentic.tools.base import BaseTool
from argentic.tools.isolation import WorkerPool

log = logging.getLogger(__name__)


def stdio_server(command: str) -> StdioServerParameters:
    """Parameters that start ``command`` (a command line, split like a shell does) as a stdio server."""
    words = shlex.split(command)
    if not words:
        raise ArgenticError("the MCP server command is empty")
    return StdioServerParameters(command=words[0], args=words[1:])


class McpConnection(Running):
    """One connection to an MCP server, made again on demand after the server went away.

    ``server`` is a :class:`~mcp.StdioServerParameters` or a streamable HTTP URL.
    """

    def __init__(self, server: StdioServerParameters | str, *, connect_timeout_s: float = 30.0) -> None:
        self.server = server
        self.connect_timeout_s = connect_timeout_s
        self.label = server if isinstance(server, str) else shlex.join([server.command, *server.args])
        self._client: Client | None = None
        self._holder: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._stopped = False
        self._broken = False  # the server went away: the next call connects again

    async def start(self) -> None:
        self._stopped = False
        await self.client()

    async def stop(self) -> None:
        self._stopped = True
        await self._disconnect()

    async def _disconnect(self) -> None:
        holder, self._holder, self._client = self._holder, None, None
        if holder is None:
            return
        self._stop.set()
        try:
            async with asyncio.timeout(10):
                await asyncio.shield(holder)
        except TimeoutError:
            holder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await holder
        except Exception:  # the connection's end was already reported
            log.debug("the MCP connection to %s ended with an error", self.label, exc_info=True)

    async def client(self) -> Client:
        """The connected client, connecting first when there is none or the server went away."""
        async with self._lock:
            if self._stopped:
                raise McpServerGone(f"the connection to MCP server {self.label} is closed")
            holder = self._holder
            if self._client is not None and not self._broken and holder is not None and not holder.done():
                return self._client
            await self._disconnect()
            self._broken = False
            self._stop = asyncio.Event()
            ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
            self._holder = asyncio.create_task(self._hold(ready, self._stop), name=f"mcp {self.label}")
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    self._client = await asyncio.shield(ready)
            except TimeoutError:
                await self._disconnect()
                raise McpServerGone(
                    f"MCP server {self.label} did not answer within {self.connect_timeout_s:g} s"
                ) from None
            except Exception as exc:
                await self._disconnect()
                reason = _describe(exc)
                raise McpServerGone(f"could not connect to MCP server {self.label}: {reason}") from exc
            return self._client

    async def _hold(self, ready: asyncio.Future[Client], stop: asyncio.Event) -> None:
        """Enter the SDK's client, hand it over, and leave it when told to (or when it fails)."""
        try:
            async with Client(self.server, cache=None) as client:
                ready.set_result(client)
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else McpServerGone("cancelled"))
            elif not isinstance(exc, asyncio.CancelledError):
                log.warning("MCP server %s went away: %s", self.label, _describe(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def list_tools(self) -> list[Tool]:
        client = await self.client()
        tools: list[Tool] = []
        cursor: str | None = None
        for _ in range(100):  # a server whose pages never end cannot hang the start
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> CallToolResult:
        client = await self.client()
        holder = self._holder
        assert holder is not None
        call = asyncio.ensure_future(client.call_tool(name, arguments))
        try:
            # The server's exit ends the holder: the call then fails at once instead of waiting.
            await asyncio.wait({call, holder}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not call.done():
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await call
        exc = None if call.cancelled() else call.exception()
        if not call.cancelled() and exc is None:
            return call.result()
        if isinstance(exc, MCPError) and exc.code != CONNECTION_CLOSED and not holder.done():
            raise ToolExecutionError(f"MCP server {self.label} refused the call of {name}: {exc}")
        self._broken = True
        reason = f": {_describe(exc)}" if exc is not None else ""
        raise McpServerGone(f"MCP server {self.label} went away during the call of {name}{reason}")


def _describe(exc: BaseException) -> str:
    """One line for an exception, looking inside the exception groups anyio raises."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class McpArguments(BaseModel):
    """The arguments of an MCP tool, checked against its JSON schema (which says what they are)."""

    model_config = ConfigDict(extra="allow")


class McpTool(BaseTool):
    """One tool of an MCP server: its input schema is the arguments' schema, a call is a
    ``tools/call`` on the connection."""

    def __init__(self, connection: McpConnection, tool: Tool, *, timeout_s: float | None = None) -> None:
        self.connection = connection
        self.mcp_tool = tool
        self._timeout_s = timeout_s
        schema = dict(tool.input_schema)
        schema.pop("title", None)
        schema.setdefault("properties", {})
        self._schema = schema
        jsonschema.validators.validator_for(schema).check_schema(schema)
        self._validator = jsonschema.validators.validator_for(schema)(schema)
        super().__init__()

    @property
    def tool_name(self) -> str:
        return self.mcp_tool.name

    @property
    def tool_description(self) -> str:
        return self.mcp_tool.description or self.mcp_tool.title or ""

    @property
    def call_timeout_s(self) -> float | None:
        return self._timeout_s

    def parameters(self) -> dict[str, Any]:
        return dict(self._schema)

    def validate_arguments(self, arguments: dict[str, Any]) -> BaseModel:
        problems = [
            f"{'.'.join(str(p) for p in error.absolute_path) or '(arguments)'}: {error.message}"
            for error in list(self._validator.iter_errors(arguments))[:8]
        ]
        if problems:
            raise ToolArgumentsError(f"invalid arguments for {self.tool_name}: {'; '.join(problems)}")
        return McpArguments.model_validate(arguments)

    async def invoke(
        self,
        arguments: dict[str, Any],
        *,
        isolate: bool = False,
        max_memory_mb: int | None = None,
        workers: WorkerPool | None = None,
    ) -> Any:
        self.validate_arguments(arguments)
        return result_value(self.tool_name, await self.connection.call_tool(self.tool_name, arguments))

    async def run(self, args: Any) -> Any:  # invoke() calls the server itself
        raise NotImplementedError


def result_value(name: str, result: CallToolResult) -> Any:
    """The JSON value of a ``tools/call`` result: its structured content, else its text (one
    block) or its content blocks; an error result raises :class:`ToolExecutionError`."""
    texts = [block.text for block in result.content if isinstance(block, TextContent)]
    if result.is_error:
        raise ToolExecutionError(f"MCP tool {name} failed: {' '.join(texts) or 'no message'}")
    if result.structured_content is not None:
        return result.structured_content
    if len(texts) == len(result.content) == 1:
        return texts[0]
    return [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content]


async def mcp_tools(
    connection: McpConnection, *, only: list[str] | None = None, timeout_s: float | None = None
) -> list[McpTool]:
    """The tools ``connection``'s server lists (those named in ``only``), as argentic tools; a tool
    whose name cannot be an MQTT topic level or whose schema is not a JSON schema is left out."""
    made: list[McpTool] = []
    for tool in await connection.list_tools():
        if only and tool.name not in only:
            continue
        try:
            made.append(McpTool(connection, tool, timeout_s=timeout_s))
        except (InvalidTopicError, jsonschema.SchemaError) as exc:
            log.warning("left out MCP tool %r of %s: %s", tool.name, connection.label, exc)
    return made
