"""The gateway's HTTP server: an A2A agent per role at ``/agents/{role}/``, the live view at ``/``,
its event stream at ``/events`` and its ask box at ``/ask``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from importlib import resources
from types import TracebackType
from typing import Any

import uvicorn
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.types import AgentCard
from pydantic import BaseModel, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from argentic.agents.client import AgentClient
from argentic.errors import ArgenticError
from argentic.gateway.a2a_app import RoleHandler, agent_card
from argentic.gateway.roster import Roster
from argentic.messaging import Messager
from argentic.observability import tracing
from argentic.protocol import Question
from argentic.protocol.topics import topic_level

log = logging.getLogger(__name__)

CARD_PATH = "/.well-known/agent-card.json"
HEARTBEAT_S = 15.0
STARTUP_S = 10.0
STOP_S = 10.0
MAX_ASKS = 64


class Ask(BaseModel):
    role: str = Field(min_length=1, max_length=128)
    text: str = Field(min_length=1, max_length=200_000)


class Gateway:
    """``async with Gateway(messager, port=...) as gateway``: serving at ``gateway.url``."""

    def __init__(
        self, messager: Messager, *, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 300.0
    ) -> None:
        self.messager = messager
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.roster = Roster(messager)
        self._roles: dict[str, tuple[Starlette, RoleHandler]] = {}
        self._asks: set[asyncio.Task[None]] = set()
        self._server: uvicorn.Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self.app = Starlette(
            routes=[
                Route("/", self._page),
                Route("/events", self._events),
                Route("/roles", self._role_list),
                Route("/ask", self._ask, methods=["POST"]),
                Mount("/agents/{role}", app=self._role_app),
            ]
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def role_url(self, role: str) -> str:
        return f"{self.url}/agents/{role}/"

    async def __aenter__(self) -> Gateway:
        await self.roster.__aenter__()
        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._serving = asyncio.create_task(self._server.serve(), name="argentic-gateway-http")
        async with asyncio.timeout(STARTUP_S):
            while not self._server.started:
                if self._serving.done():
                    await self._serving  # raises why it could not start
                    raise ArgenticError(f"the gateway could not listen on {self.host}:{self.port}")
                await asyncio.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in list(self._asks):
            task.cancel()
        await asyncio.gather(*self._asks, return_exceptions=True)
        for _, handler in self._roles.values():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STOP_S):
                    await handler.aclose()
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                async with asyncio.timeout(STOP_S):
                    await self._serving
            if not self._serving.done():
                self._serving.cancel()
        await self.roster.__aexit__(exc_type, exc, tb)

    async def serve_forever(self) -> None:
        """Wait until the HTTP server stops."""
        if self._serving is not None:
            await asyncio.shield(self._serving)

    # The A2A agents, one per role, made when the role is first asked for.

    def _card(self, role: str) -> AgentCard:
        return agent_card(role, self.roster.presences.get(role), self.role_url(role))

    def _role(self, role: str) -> Starlette | None:
        made = self._roles.get(role)
        if made is not None:
            return made[0]
        if role not in self.roster.presences:
            return None
        client = AgentClient(self.messager, role, timeout_s=self.timeout_s)
        handler = RoleHandler(role, client, self.roster, timeout_s=self.timeout_s)

        async def card(_: AgentCard) -> AgentCard:
            return self._card(role)  # the role's card as the broker says it now

        routes = [
            *create_agent_card_routes(self._card(role), card_modifier=card, card_url=CARD_PATH),
            *create_jsonrpc_routes(handler, rpc_url="/"),
        ]
        app = Starlette(routes=routes)
        self._roles[role] = (app, handler)
        return app

    async def _role_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = str(scope.get("path_params", {}).get("role", ""))
        try:
            app = self._role(topic_level(name, "agent role"))
        except ArgenticError:
            app = None
        if app is None:
            response = JSONResponse(
                {"error": f"no role {name!r} has been online on the broker"}, status_code=404
            )
            await response(scope, receive, send)
            return
        # A caller that traces sends its trace context (W3C ``traceparent``): the request's spans,
        # and the question's, go on in its trace.
        traceparent = dict(scope.get("headers", ())).get(b"traceparent", b"").decode("latin-1")
        with tracing.continued(traceparent):
            await app(scope, receive, send)

    # The live view.

    async def _page(self, _: Request) -> Response:
        page = resources.files("argentic.gateway").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(page)

    async def _role_list(self, _: Request) -> Response:
        return JSONResponse(self.roster.snapshot())

    async def _events(self, request: Request) -> Response:
        queue = self.roster.listen()

        async def stream() -> AsyncIterator[str]:
            try:
                yield _sse(self.roster.snapshot())
                while not await request.is_disconnected():
                    try:
                        item = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    yield _sse(item)
            finally:
                self.roster.unlisten(queue)

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def _ask(self, request: Request) -> Response:
        try:
            ask = Ask.model_validate(await request.json())
            role = topic_level(ask.role, "agent role")
        except (ValidationError, ValueError, ArgenticError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if self.roster.online(role) is None:
            return JSONResponse({"error": f"no agent of role {role!r} is online"}, status_code=409)
        if len(self._asks) >= MAX_ASKS:
            return JSONResponse({"error": "too many questions in flight"}, status_code=429)
        question = Question(text=ask.text, stream=True)
        task = asyncio.create_task(self._follow(role, question), name=f"argentic-gateway-ask-{question.id}")
        self._asks.add(task)
        task.add_done_callback(self._asks.discard)
        return JSONResponse({"question_id": question.id, "role": role})

    async def _follow(self, role: str, question: Question) -> None:
        # The page follows the question's events through /events; this only keeps the asker.
        client = AgentClient(self.messager, role, timeout_s=self.timeout_s)
        with contextlib.suppress(ArgenticError, TimeoutError):
            async with client.stream(question, feed=self.roster.follow) as run:
                async for _ in run:
                    pass
                await run.answer()


def _sse(item: dict[str, Any]) -> str:
    return f"data: {json.dumps(item)}\n\n"
