"""Which other clients the broker reports gone, from their retained ``client_status``.

MQTT gives a client one last will. argentic spends it on the client itself: every Messager says
``online: true`` on ``{ns}/clients/{client_id}/status`` when it connects and its will says
``online: false``. Each announcement (an agent's presence, a tool service's tools) names the
client that made it, so one will covers any number of agents and tool services sharing one
Messager: when the broker reports a client gone, what it announced is stale.

:class:`Peers` is that view, one per Messager (``messager.peers``), shared by every component on
it: one subscription however many agents and services watch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from argentic.protocol import ClientStatus

if TYPE_CHECKING:
    from argentic.messaging.messager import Messager

log = logging.getLogger(__name__)

#: Gone (and online) clients remembered; the oldest are forgotten first (a long-lived broker sees many).
MAX_GONE = 10_000

OnGone = Callable[[str], Awaitable[None]]


class Peers:
    """The clients the broker reported gone (their will said ``online: false``), and those that
    said they are online."""

    def __init__(self, messager: Messager) -> None:
        self._messager = messager
        self._gone: OrderedDict[str, None] = OrderedDict()
        # client -> the roles it serves (None: it does not say, an older client)
        self._online: OrderedDict[str, dict[str, int] | None] = OrderedDict()
        self._watchers: list[OnGone] = []
        self._returners: list[OnGone] = []
        self._subscription: Any = None
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Follow the client statuses (idempotent; the retained ones arrive right away)."""
        if self._subscription is not None:  # every request asks: no lock once started
            return
        async with self._starting:
            if self._subscription is None:
                self._subscription = await self._messager.subscribe(
                    self._messager.topics.client_status_all(),
                    self._on_status,
                    model=ClientStatus,
                    on_empty=self._on_cleared,
                )

    def gone(self, client_id: str | None) -> bool:
        """Whether the broker reported ``client_id`` gone (and it has not come back since)."""
        return client_id is not None and client_id in self._gone

    def online(self, client_id: str | None) -> bool:
        """Whether ``client_id`` is this messager's own or said ``online: true`` on its status and
        has not been reported gone since: an announcement is believed only from such a client."""
        if client_id is None:
            return False
        if client_id == self._messager.client_id:
            return True
        return client_id in self._online and client_id not in self._gone

    def serving(self) -> dict[str, dict[str, int]]:
        """The clients online that say which roles they serve (``ClientStatus.roles``; this
        messager too), each with the agents of every role it runs (``{}``: none)."""
        found = {c: dict(r) for c, r in self._online.items() if r is not None and c not in self._gone}
        found[self._messager.client_id] = self._messager.roles
        return found

    def watch(self, on_gone: OnGone) -> Callable[[], None]:
        """Call ``on_gone(client_id)`` whenever a client is reported gone; returns the cancel."""
        self._watchers.append(on_gone)

        def cancel() -> None:
            if on_gone in self._watchers:
                self._watchers.remove(on_gone)

        return cancel

    def watch_return(self, on_back: OnGone) -> Callable[[], None]:
        """Call ``on_back(client_id)`` when a client reported gone says it is online again (a broker
        restart sends every client's will); returns the cancel."""
        self._returners.append(on_back)

        def cancel() -> None:
            if on_back in self._returners:
                self._returners.remove(on_back)

        return cancel

    async def _on_status(self, status: ClientStatus) -> None:
        if status.client_id == self._messager.client_id:
            return  # our own will from an earlier connection; we are here
        if status.online:
            self._online[status.client_id] = None if status.roles is None else dict(status.roles)
            self._online.move_to_end(status.client_id)
            while len(self._online) > MAX_GONE:
                self._online.popitem(last=False)
            if status.client_id in self._gone:
                del self._gone[status.client_id]
                log.info("client %s is back", status.client_id)
                for on_back in list(self._returners):
                    try:
                        await on_back(status.client_id)
                    except Exception:
                        log.exception("a watcher of client %s raised", status.client_id)
            return
        self._online.pop(status.client_id, None)
        if status.client_id in self._gone:
            return
        self._gone[status.client_id] = None
        while len(self._gone) > MAX_GONE:
            self._gone.popitem(last=False)
        log.info("client %s is gone (its last will)", status.client_id)
        for on_gone in list(self._watchers):
            try:
                await on_gone(status.client_id)
            except Exception:
                log.exception("a watcher of client %s raised", status.client_id)

    async def _on_cleared(self, topic: str) -> None:
        # A graceful exit: the client withdrew what it announced itself.
        client_id = topic.split("/")[-2]
        self._gone.pop(client_id, None)
        self._online.pop(client_id, None)
