"""A tool service: serves a set of tools over MQTT.

It announces its tools (retained, on ``{ns}/tools/services/{service_id}``), answers each
``tool_call`` with a ``tool_result`` (ok, or an error coded ``unknown_tool``, ``invalid_arguments``,
``tool_failed`` or ``timeout``), runs calls concurrently (bounded) with a timeout, and withdraws
the announcement when it stops. The service id is the service name, and tool ids derive from
service and tool name, so a restart replaces the announcement rather than adding another.

Replicas (several processes with the same service name) share the calls: each subscribes with
the shared group ``{service_id}`` (MQTT 5 shared subscriptions). They also share the announcement
topic: when the replica that announced last stops, or the broker reports its client gone, the
live ones announce again.

The announcement names the messager's client, whose last will (see
:mod:`argentic.messaging.peers`) makes it stale if the process dies: any number of services and
agents can share one messager. :func:`tool_service_will` remains for a messager of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from argentic.errors import ConfigError, StorageError, UnknownToolError
from argentic.errors_wire import failed_result
from argentic.lifecycle import Running
from argentic.messaging import Messager, Will
from argentic.messaging.dispatch import sender_key
from argentic.protocol import Message, ToolAnnouncement, ToolCall, ToolResult, Topics, topic_level
from argentic.storage import Claim, Once, Store
from argentic.tools.base import BaseTool, FunctionTool
from argentic.tools.execution import call_timeout, run_tool
from argentic.tools.isolation import WorkerPool

log = logging.getLogger(__name__)


#: Seconds a copy of a call another replica runs waits for its result, past the call's timeout.
CLAIM_GRACE_S = 30.0


def tool_service_will(topics: Topics, service_name: str) -> Will:
    """The last will that withdraws ``service_name``'s announcement if its process dies."""
    return Will(topic=topics.tool_service(service_name), message=None, retain=True)


class ToolService(Running):
    """Serves ``tools`` over ``messager``: ``async with ToolService(messager, tools, "math"):``."""

    def __init__(
        self,
        messager: Messager,
        tools: Sequence[BaseTool],
        service_name: str = "tools",
        *,
        call_timeout_s: float = 30.0,
        max_concurrent_calls: int = 32,
        isolate_sync_tools: bool = False,
        max_memory_mb: int | None = 1024,
        store: Store | None = None,
    ) -> None:
        self.messager = messager
        #: With a store shared by the service's replicas: each call runs once across them, and a
        #: resent call gets the kept result (the call's id, per caller, names it).
        self.once = Once(store) if store is not None else None
        # Sync tools in worker processes, cut off at the timeout (see tools.isolation): as many
        # workers as calls may run at once, forked as needed, kept while the service runs.
        self.isolate_sync_tools = isolate_sync_tools
        self.max_memory_mb = max_memory_mb
        self.service_id = topic_level(service_name, "tool service name")
        self.call_timeout_s = call_timeout_s
        self.tools: dict[str, BaseTool] = {}
        for item in tools:
            if item.tool_name in self.tools:
                raise ConfigError(f"two tools are named {item.tool_name!r} in service {service_name!r}")
            self.tools[item.tool_name] = item
        self._slots = asyncio.Semaphore(max_concurrent_calls)
        self._workers = WorkerPool(max_concurrent_calls)
        self._subscriptions: list[Any] = []
        self._started = False
        self._cancel_leave: Callable[[], None] = lambda: None
        self._cancel_watch: Callable[[], None] = lambda: None
        self._announcer: str | None = None  # the client whose announcement the topic holds
        self.calls_served = 0

    @property
    def serving(self) -> bool:
        """Whether it takes calls now (between :meth:`start` and :meth:`stop`)."""
        return self._started

    @property
    def topic(self) -> str:
        return self.messager.topics.tool_service(self.service_id)

    def announcement(self) -> ToolAnnouncement:
        return ToolAnnouncement(
            service_id=self.service_id,
            tools=[t.spec(self.service_id) for t in self.tools.values()],
            client_id=self.messager.client_id,
        )

    async def start(self) -> None:
        """Subscribe to each tool's call topic, then announce."""
        if self._started:
            return
        for item in self.tools.values():
            if isinstance(item, FunctionTool) and item.runs_isolated(self.isolate_sync_tools):
                self._workers.register(item.call_here)
        await self._workers.start()
        topics = self.messager.topics
        peers = self.messager.peers
        await peers.start()
        self._cancel_watch = peers.watch(self._on_client_gone)
        for name in self.tools:
            sub = await self.messager.subscribe(
                topics.tool_calls(name), self._on_call, model=ToolCall, shared_group=self.service_id
            )
            self._subscriptions.append(sub)
        # A replica's clean stop clears the shared announcement, its death makes it stale:
        # either way, announce again.
        watch = await self.messager.subscribe(
            self.topic,
            self._on_announcement,
            model=ToolAnnouncement,
            on_empty=self._on_withdrawn,
            on_invalid=self._on_garbage,
        )
        self._subscriptions.append(watch)
        self._started = True
        self._cancel_leave = self.messager.before_disconnect(self.stop)
        await self.announce()
        log.info("tool service %s serving %s", self.service_id, ", ".join(self.tools))

    async def announce(self) -> None:
        await self.messager.publish(self.topic, self.announcement(), retain=True)

    async def stop(self) -> None:
        """Withdraw the announcement, stop taking calls, and stop the tools' worker processes."""
        if not self._started:
            await self._workers.stop()  # a start that failed may have left workers
            return
        self._started = False
        self._cancel_leave()
        self._cancel_watch()
        for sub in self._subscriptions:
            try:
                await self.messager.unsubscribe(sub)
            except Exception:  # the broker may be gone already; stopping must not fail
                log.debug("unsubscribe failed while stopping", exc_info=True)
        self._subscriptions.clear()
        try:
            await self.messager.publish(self.topic, None, retain=True)
        except Exception:
            log.warning("could not withdraw the announcement of %s", self.service_id, exc_info=True)
        await self._workers.stop()

    async def _on_announcement(self, announcement: ToolAnnouncement) -> None:
        """Our own announcement echoed back, or a replica's: remember whose it is. One that names
        another service or hides our tools was not made by a replica: replace it."""
        self._announcer = announcement.client_id
        if self._started and (
            announcement.service_id != self.service_id or (self.tools and not announcement.tools)
        ):
            log.warning("the announcement of %s was replaced by another; announcing again", self.service_id)
            await self.announce()

    async def _on_garbage(self, topic: str) -> None:
        if self._started:
            log.warning("the announcement of %s was overwritten; announcing again", self.service_id)
            await self.announce()

    async def _on_client_gone(self, client_id: str) -> None:
        if self._started and client_id == self._announcer:
            log.info("the replica that announced %s is gone; announcing again", self.service_id)
            await self.announce()

    async def _on_withdrawn(self, topic: str) -> None:
        if self._started:
            log.info(
                "announcement of %s was withdrawn (a replica stopped); announcing again", self.service_id
            )
            await self.announce()

    async def _on_call(self, call: ToolCall) -> None:
        key = f"tool:{sender_key(call)}"
        claim: Claim | None = None
        if self.once is not None:
            taken, claim = await self._take(call, key)
            if not taken:
                return
        try:
            result = await self.execute(call)
            # The caller waits for the reply, not for the store: it goes first. The claim is held
            # until the result is kept, so a copy that reaches another replica meanwhile waits
            # for the kept result rather than running the call again.
            try:
                if call.reply_to:
                    await self.messager.reply(call, result)
                else:
                    log.warning("tool call %s for %s has no reply_to; result dropped", call.id, call.tool)
            finally:
                await self._keep(call, key, result, claim)
        finally:
            if claim is not None:
                await claim.release()  # when the call failed before its result was kept

    async def _keep(self, call: ToolCall, key: str, result: ToolResult, claim: Claim | None) -> None:
        """The result kept for copies of the call (the claim lapses: the kept result answers them)."""
        if self.once is None:
            return
        try:
            await self.once.store.batch(self.once.keep_step(key, result, claim=claim))
        except StorageError as exc:
            log.warning("could not keep the result of call %s: %s", call.id, exc)

    async def _take(self, call: ToolCall, key: str) -> tuple[bool, Claim | None]:
        """Whether this replica runs ``call`` (and its claim): not when another replica ran it
        (its kept result is sent from here too: the copy that reached this replica may be the
        one the caller still waits on) or still runs it past the call's longest run."""
        assert self.once is not None
        wait = call_timeout(self.tools.get(call.tool), self.call_timeout_s) + CLAIM_GRACE_S

        async def send_kept(kept: Message) -> None:
            if call.reply_to:
                await self.messager.reply(call, kept)

        return await self.once.take_or_reply(key, timeout=wait, what=f"call {call.id}", reply=send_kept)

    async def execute(self, call: ToolCall) -> ToolResult:
        """Run one call and make its result (never raises)."""
        item = self.tools.get(call.tool)
        if item is None:
            unknown = UnknownToolError(f"service {self.service_id} has no tool {call.tool!r}")
            result = failed_result(call.tool, unknown, call.id)
        else:
            async with self._slots:
                result = await run_tool(
                    item,
                    call,
                    self.call_timeout_s,
                    isolate=self.isolate_sync_tools,
                    max_memory_mb=self.max_memory_mb,
                    workers=self._workers if self._workers.running else None,
                )
            if result.ok:
                self.calls_served += 1
        return result.model_copy(update={"service_id": self.service_id})
