"""What runs on the bus, as one client sees it: roles, tool services, model servers, tasks.

:class:`FleetWatch` follows the retained presences (``{ns}/agents/+/status``), the retained tool
announcements (``{ns}/tools/services/+``), the clients' retained statuses
(``{ns}/clients/+/status``) and the task statuses on every role's events topics while it is open,
and reads the configured model servers on each :meth:`FleetWatch.report`. A presence or
announcement naming a client the broker reports gone is not online. Replicas are the agents
serving a role, busy or idle: each client's status says how many of each role it runs, and its
last will (or its graceful exit) takes them back. A client that does not say counts once, when
its presence or its task statuses show it serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType
from typing import Any, Self

from pydantic import BaseModel

from argentic.config import LLMConfig
from argentic.messaging import Messager
from argentic.observability.model_servers import ModelServerStatus, ServerProbe, configured_servers
from argentic.protocol import AgentCard, Message, Presence, TaskStatus, ToolAnnouncement

#: Task states a task leaves again: a task last seen in one of them is in flight.
OPEN_STATES = frozenset({"submitted", "working", "input-required"})
#: Tasks remembered at most (the oldest finished ones are forgotten first).
MAX_TASKS = 10_000


class RoleStatus(BaseModel):
    role: str
    online: bool
    client_id: str | None = None
    replicas: int = 0
    clients: list[str] = []
    card: AgentCard | None = None


class ToolServiceStatus(BaseModel):
    service_id: str
    online: bool
    client_id: str | None = None
    tools: list[str] = []


class TaskInFlight(BaseModel):
    role: str
    question_id: str
    state: str
    asked_by: str | None = None
    client_id: str | None = None
    age_s: float


class FleetStatus(BaseModel):
    """What ``argentic status --json`` prints."""

    namespace: str
    roles: list[RoleStatus]
    tool_services: list[ToolServiceStatus]
    model_servers: list[ModelServerStatus]
    tasks: list[TaskInFlight]


class FleetWatch:
    """``async with FleetWatch(messager, llm_config) as watch: ... await watch.report()``."""

    def __init__(self, messager: Messager, llm: LLMConfig | None = None) -> None:
        self.messager = messager
        servers = configured_servers(llm) if llm is not None else []
        self.probes = [ServerProbe(name, url) for name, url in servers]
        self._presences: dict[str, Presence] = {}
        self._services: dict[str, ToolAnnouncement] = {}
        self._tasks: dict[tuple[str, str], tuple[TaskStatus, float]] = {}
        self._workers: dict[str, set[str]] = {}  # role -> clients seen working on its tasks
        self._subscriptions: list[Any] = []

    async def __aenter__(self) -> Self:
        topics = self.messager.topics
        await self.messager.peers.start()
        try:
            for topic, handler, model in (
                (topics.agent_status_all(), self._on_presence, Presence),
                (topics.tool_services_all(), self._on_announcement, ToolAnnouncement),
                (topics.agent_events_every_role(), self._on_event, None),
            ):
                self._subscriptions.append(await self.messager.subscribe(topic, handler, model=model))
            await self._read_servers()  # a first reading: tokens per second need two
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            with contextlib.suppress(Exception):  # the broker may be gone; leaving must not fail
                await self.messager.unsubscribe(subscription)

    async def _on_presence(self, presence: Presence) -> None:
        self._presences[presence.role] = presence

    async def _on_announcement(self, announcement: ToolAnnouncement) -> None:
        self._services[announcement.service_id] = announcement

    async def _on_event(self, event: Message) -> None:
        if not isinstance(event, TaskStatus):
            return  # progress and tokens
        self._tasks[(event.role, event.question_id)] = (event, time.time())
        if event.client_id:
            self._workers.setdefault(event.role, set()).add(event.client_id)
        if len(self._tasks) > MAX_TASKS:
            finished = [k for k, (s, _) in self._tasks.items() if s.state not in OPEN_STATES]
            for key in finished[: len(self._tasks) - MAX_TASKS] or list(self._tasks)[:1]:
                del self._tasks[key]

    def _online(self, client_id: str | None) -> bool:
        return not self.messager.peers.gone(client_id)

    async def _read_servers(self) -> list[ModelServerStatus]:
        return list(await asyncio.gather(*(probe.read() for probe in self.probes)))

    async def report(self) -> FleetStatus:
        servers = await self._read_servers()
        return FleetStatus(
            namespace=self.messager.topics.namespace,
            roles=self._roles(),
            tool_services=self._tool_services(),
            model_servers=servers,
            tasks=self._tasks_in_flight(),
        )

    def _roles(self) -> list[RoleStatus]:
        # Clients that say which roles they serve are counted from that (idle replicas too, and
        # several agents of a role on one client); a client that does not say (an older one, or
        # one whose will is not its client status) counts once while its presence shows it
        # serving, or its task statuses did and it is still online (not gone, nor left).
        serving = self.messager.peers.serving()
        agents: dict[str, dict[str, int]] = {}  # role -> client -> agents
        for client, roles in serving.items():
            for role, count in roles.items():
                if count > 0:
                    agents.setdefault(role, {})[client] = count
        found = []
        for role in sorted(set(self._presences) | set(agents)):
            presence = self._presences.get(role)
            counted = dict(agents.get(role, {}))
            peers = self.messager.peers
            silent = {c for c in self._workers.get(role, set()) if c not in serving and peers.online(c)}
            holder = presence.client_id if presence is not None and presence.online else None
            if holder is not None and holder not in serving and self._online(holder):
                silent.add(holder)
            for client in silent:
                counted[client] = 1
            replicas = sum(counted.values())
            found.append(
                RoleStatus(
                    role=role,
                    online=replicas > 0,
                    client_id=presence.client_id if presence is not None else None,
                    replicas=replicas,
                    clients=sorted(counted),
                    card=presence.card if presence is not None else None,
                )
            )
        return found

    def _tool_services(self) -> list[ToolServiceStatus]:
        return [
            ToolServiceStatus(
                service_id=service_id,
                online=self._online(announcement.client_id),
                client_id=announcement.client_id,
                tools=[tool.name for tool in announcement.tools],
            )
            for service_id, announcement in sorted(self._services.items())
        ]

    def _tasks_in_flight(self) -> list[TaskInFlight]:
        now = time.time()
        return [
            TaskInFlight(
                role=status.role,
                question_id=status.question_id,
                state=status.state,
                asked_by=status.asked_by,
                client_id=status.client_id,
                age_s=round(now - status.ts, 3),
            )
            for status, _ in self._tasks.values()
            if status.state in OPEN_STATES and self._online(status.client_id)
        ]
