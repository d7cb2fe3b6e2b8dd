"""What a client says about itself: ``online`` on each connection, its last will when it leaves.

Without a will of the caller's, the will says the client is gone (see :mod:`messaging.peers`): it
covers whatever the agents and tool services on that messager announced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Protocol

from argentic.errors import MessagingError
from argentic.messaging.connection import Will
from argentic.protocol import ClientStatus, Message, Topics, new_id

logger = logging.getLogger("argentic.messaging")


class Publish(Protocol):
    async def __call__(
        self, topic: str, message: Message | None, *, qos: int | None = None, retain: bool = False
    ) -> None: ...


class OwnStatus:
    def __init__(self, topics: Topics, client_id: str, will: Will | None) -> None:
        self.client_id = client_id
        self.topic = topics.client_status(client_id)
        self.is_status_will = will is None  # the will is the client status, not the caller's own
        self.will = will or Will(topic=self.topic, message=ClientStatus(client_id=client_id, online=False))
        #: The roles served on this client and how many agents each (see ClientStatus.roles).
        self.roles: dict[str, int] = {}
        self._lock = asyncio.Lock()  # the last status published is the newest

    async def announce(self, publish: Publish) -> None:
        """Retain ``online: true`` and the roles served on the client's status topic (a will from an
        earlier connection may have said otherwise). Only with the status as the will: a status
        no will takes back would say the client serves after it vanished."""
        if not self.is_status_will:
            return
        async with self._lock:
            status = ClientStatus(client_id=self.client_id, online=True, roles=dict(self.roles))
            try:
                await publish(self.topic, status, retain=True)
            except MessagingError as exc:
                logger.warning("could not publish the client status: %s", exc)

    async def serve(self, roles: Mapping[str, int], publish: Publish | None) -> None:
        """The roles served here changed: say so (``publish`` None: at the next connection)."""
        if dict(roles) == self.roles:
            return
        self.roles = dict(roles)
        if publish is not None:
            await self.announce(publish)

    async def farewell(self, publish: Publish, timeout_s: float) -> None:
        """Publish the will on a graceful exit: a broker sends it only for clients that vanish, yet
        a process that exits without withdrawing what it announced is just as gone."""
        will = self.will
        message = will.message
        if self.is_status_will:
            # Everything announced was withdrawn before: clear the status rather than leave a
            # retained "gone" behind for every client that ever ran.
            message = None
        elif message is not None:
            message = message.model_copy(update={"id": new_id(), "ts": time.time()})
        try:
            async with asyncio.timeout(timeout_s):
                await publish(will.topic, message, qos=will.qos, retain=will.retain)
        except (MessagingError, TimeoutError) as exc:
            logger.warning("could not publish the will on %s while leaving: %s", will.topic, exc)
