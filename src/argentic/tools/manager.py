"""The caller's side of tools: which tools are announced, and calling them over MQTT.

:class:`ToolManager` watches ``{ns}/tools/services/+``: each retained announcement replaces that
service's previous one, an empty payload (withdrawal, or a dead service's last will) removes it.
:meth:`ToolManager.call` sends a ``tool_call`` request and always returns a :class:`ToolResult`;
failures on the way (no such tool, no answer in time, the service went away mid-call) come back
as a result with an error, never as an exception, so an agent can hand them to its LLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from argentic.errors import (
    MessagingError,
    RequestTimeoutError,
    ToolExecutionError,
    ToolTimeoutError,
    UnknownToolError,
)
from argentic.errors_wire import failed_result
from argentic.lifecycle import Running
from argentic.llm import ToolDefinition
from argentic.messaging import Messager, delivery_topic
from argentic.protocol import ErrorReply, ToolAnnouncement, ToolCall, ToolResult, ToolSpec

log = logging.getLogger(__name__)


class ToolManager(Running):
    """Knows the announced tools and calls them: ``async with ToolManager(messager) as tools:``.

    An announcement whose client the broker reports gone (its last will) counts as withdrawn.
    """

    def __init__(
        self,
        messager: Messager,
        *,
        default_timeout_s: float = 30.0,
        caller: str | None = None,
        withdrawal_grace_s: float = 2.0,
        restart_grace_s: float = 15.0,
    ) -> None:
        self.messager = messager
        self.default_timeout_s = default_timeout_s
        self.caller = caller
        # A withdrawn tool may be announced again at once by a replica of its service: calls wait
        # this long for that before they fail.
        self.withdrawal_grace_s = withdrawal_grace_s
        # A broker that stops sends every client's will; a client reported gone around a restart
        # of our own connection gets this long to come back before its calls in flight fail.
        self.restart_grace_s = restart_grace_s
        # Services whose client was reported gone, kept to be restored if it comes back.
        self._suspended: dict[str, tuple[str, list[ToolSpec]]] = {}
        self._withdrawn_at: dict[str, float] = {}
        self._services: dict[str, list[ToolSpec]] = {}
        self._announcers: dict[str, str | None] = {}  # service id -> the client that announced it
        self._changed = asyncio.Event()
        self._watchers: dict[object, Callable[[], None]] = {}
        # In-flight calls per tool name, failed early when the last service of that tool goes away.
        self._inflight: dict[str, set[asyncio.Future[ToolResult]]] = {}
        self._subscription: Any = None
        self._cancel_watch: Any = None
        self._cancel_return: Any = None

    async def start(self, *, settle_s: float = 0.25) -> None:
        """Start watching announcements.

        The broker sends the retained announcements right after the subscription; this waits up to
        ``settle_s`` for them, so that tools already running are known when it returns.
        """
        if self._subscription is not None:
            return
        peers = self.messager.peers
        await peers.start()
        self._cancel_watch = peers.watch(self._on_client_gone)
        self._cancel_return = peers.watch_return(self._on_client_back)
        self._subscription = await self.messager.subscribe(
            self.messager.topics.tool_services_all(),
            self._on_announcement,
            model=ToolAnnouncement,
            on_empty=self._on_withdrawn,
        )
        with contextlib.suppress(TimeoutError):
            await self.wait_for_tools(timeout=settle_s)
            await asyncio.sleep(0.02)  # the rest of the retained burst

    async def async_init(self, *, settle_s: float = 0.25) -> None:
        """The older name of :meth:`start`."""
        await self.start(settle_s=settle_s)

    async def stop(self) -> None:
        """Stop watching announcements."""
        if self._cancel_watch is not None:
            self._cancel_watch()
            self._cancel_return()
            self._cancel_watch = self._cancel_return = None
        if self._subscription is not None:
            sub, self._subscription = self._subscription, None
            try:
                await self.messager.unsubscribe(sub)
            except MessagingError:
                log.debug("unsubscribe failed while closing", exc_info=True)

    async def close(self) -> None:
        """The older name of :meth:`stop`."""
        await self.stop()

    # --- what is announced --------------------------------------------------------------------

    @property
    def tools(self) -> dict[str, ToolSpec]:
        """Announced tools by name (when two services announce a name, the later one wins)."""
        merged: dict[str, ToolSpec] = {}
        for specs in self._services.values():
            for spec in specs:
                merged[spec.name] = spec
        return merged

    @property
    def services(self) -> dict[str, list[ToolSpec]]:
        return dict(self._services)

    def definitions(self, names: Iterable[str] | None = None) -> list[ToolDefinition]:
        """The announced tools as the LLM sees them (all, or those in ``names``)."""
        wanted = set(names) if names is not None else None
        return [
            ToolDefinition(name=spec.name, description=spec.description, parameters=spec.parameters)
            for spec in self.tools.values()
            if wanted is None or spec.name in wanted
        ]

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` whenever the announced tools may have changed (a service announced,
        withdrawn, gone or back); returns the function that stops it. The callback must not block."""
        token = object()
        self._watchers[token] = callback

        def cancel() -> None:
            self._watchers.pop(token, None)

        return cancel

    def _notify(self) -> None:
        self._changed.set()
        for callback in list(self._watchers.values()):
            try:
                callback()
            except Exception:  # one watcher's bug must not stop the announcements
                log.exception("a watcher of the tools failed")

    async def wait_for_tools(self, *names: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until the named tools (or, with no names, any tool) are announced; raises
        :class:`~argentic.errors.ToolTimeoutError` (a ``TimeoutError``) naming those still missing."""

        def ready() -> bool:
            known = self.tools
            return all(n in known for n in names) if names else bool(known)

        try:
            async with asyncio.timeout(timeout):
                while not ready():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            missing = ", ".join(n for n in names if n not in self.tools) or "any tool"
            raise ToolTimeoutError(f"{missing} not announced within {timeout:g} s") from None

    async def _on_announcement(self, announcement: ToolAnnouncement) -> None:
        # Filed under the topic's service id, which the broker's ACL guards; the payload repeats it
        # and anyone who may publish somewhere could write any name there.
        topic = delivery_topic()
        if topic is not None and topic.rsplit("/", 1)[-1] != announcement.service_id:
            log.warning(
                "ignored an announcement on %s that names service %.64r", topic, announcement.service_id
            )
            await self._withdraw(topic.rsplit("/", 1)[-1])
            return
        if announcement.client_id is not None and self.messager.peers.gone(announcement.client_id):
            log.info("set aside the tools of %s: its client is gone", announcement.service_id)
            self._suspended[announcement.service_id] = (announcement.client_id, list(announcement.tools))
            await self._withdraw(announcement.service_id, gone_client=announcement.client_id)
            return
        self._suspended.pop(announcement.service_id, None)
        self._services[announcement.service_id] = list(announcement.tools)
        self._announcers[announcement.service_id] = announcement.client_id
        for spec in announcement.tools:
            self._withdrawn_at.pop(spec.name, None)
        log.info(
            "tools of %s: %s",
            announcement.service_id,
            ", ".join(t.name for t in announcement.tools) or "(none)",
        )
        self._notify()

    async def _on_withdrawn(self, topic: str) -> None:
        service_id = topic.rsplit("/", 1)[-1]
        self._suspended.pop(service_id, None)
        await self._withdraw(service_id)

    async def _on_client_gone(self, client_id: str) -> None:
        stale = [service for service, client in self._announcers.items() if client == client_id]
        for service in stale:
            self._suspended[service] = (client_id, list(self._services.get(service, [])))
        # Calls the gone client may have held go out again at once; a live replica takes them.
        topics = self.messager.topics
        names = {spec.name for service in stale for spec in self._services.get(service, [])}
        await self.messager.resend({topics.tool_calls(name) for name in names})
        await asyncio.gather(*(self._withdraw(service, gone_client=client_id) for service in stale))

    async def _on_client_back(self, client_id: str) -> None:
        """A client reported gone is online again (a broker restart): its tools are back at once."""
        for service, (client, specs) in list(self._suspended.items()):
            if client == client_id and service not in self._services:
                del self._suspended[service]
                self._services[service] = specs
                self._announcers[service] = client
                for spec in specs:
                    self._withdrawn_at.pop(spec.name, None)
                log.info("tools of %s are back: %s", service, ", ".join(t.name for t in specs))
        self._notify()

    async def _withdraw(self, service_id: str, *, gone_client: str | None = None) -> None:
        """Forget ``service_id``'s tools; calls in flight fail unless another service has them soon.

        When its client was reported gone while our own connection dropped or came back, the
        broker restarted: the service's result may still come, so its calls wait for the client
        to return (up to ``restart_grace_s``) before they fail."""
        self._announcers.pop(service_id, None)
        specs = self._services.pop(service_id, None)
        if specs is None:
            return
        log.info("tool service %s withdrawn", service_id)
        self._notify()
        now = time.monotonic()
        for spec in specs:
            self._withdrawn_at[spec.name] = now
        await asyncio.sleep(self.withdrawal_grace_s)
        peers = self.messager.peers
        if gone_client is not None and self.messager.reconnected_within(self.restart_grace_s):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.restart_grace_s):
                    while peers.gone(gone_client):
                        self._changed.clear()
                        await self._changed.wait()
            if not peers.gone(gone_client):
                return
        known = self.tools
        for name, waiters in list(self._inflight.items()):
            if name in known:
                continue
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(
                        failed_result(
                            name, ToolExecutionError(f"the service of tool {name} went away during the call")
                        )
                    )

    def _suspended_tool(self, name: str) -> bool:
        return any(spec.name == name for _, specs in self._suspended.values() for spec in specs)

    # --- calling ------------------------------------------------------------------------------

    async def call(self, name: str, arguments: dict[str, Any], *, timeout: float | None = None) -> ToolResult:  # noqa: ASYNC109
        """Call tool ``name``; the result's ``ok`` tells success, ``error`` says what went wrong."""
        spec = self.tools.get(name)
        if (
            spec is None
            and self._suspended_tool(name)
            and self.messager.reconnected_within(self.restart_grace_s)
        ):
            # Its service was reported gone by a broker restart: wait for it to come back.
            with contextlib.suppress(TimeoutError):
                await self.wait_for_tools(name, timeout=self.restart_grace_s)
            spec = self.tools.get(name)
        withdrawn = self._withdrawn_at.get(name)
        if spec is None and withdrawn is not None:
            remaining = withdrawn + self.withdrawal_grace_s - time.monotonic()
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    await self.wait_for_tools(name, timeout=remaining)
                spec = self.tools.get(name)
        if spec is None:
            known = ", ".join(sorted(self.tools)) or "none"
            return failed_result(
                name, UnknownToolError(f"no tool named {name!r} is announced (known: {known})")
            )
        wait = timeout or spec.timeout_s or self.default_timeout_s
        call = ToolCall(tool=name, arguments=arguments, caller=self.caller)
        gone: asyncio.Future[ToolResult] = asyncio.get_running_loop().create_future()
        waiters = self._inflight.setdefault(name, set())
        waiters.add(gone)
        request = asyncio.ensure_future(
            # The service enforces the tool's own timeout; allow a little for the trip back.
            self.messager.request(
                self.messager.topics.tool_calls(name), call, response_model=ToolResult, timeout=wait + 1.0
            )
        )
        try:
            racing: set[asyncio.Future[Any]] = {request, gone}
            await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
            if not request.done():
                return gone.result()
            reply = request.result()
        except RequestTimeoutError:
            return failed_result(
                name, ToolTimeoutError(f"tool {name} did not answer within {wait:g} s"), call.id
            )
        except MessagingError as exc:
            return failed_result(name, ToolExecutionError(f"could not reach tool {name}: {exc}"), call.id)
        finally:
            waiters.discard(gone)
            if not waiters:
                self._inflight.pop(name, None)
            if not request.done():
                request.cancel()  # the messager's request removes its pending entry when cancelled
        if isinstance(reply, ErrorReply):
            return ToolResult(call_id=call.id, tool=name, ok=False, error=reply.error)
        return reply
