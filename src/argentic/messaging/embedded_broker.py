"""An MQTT broker inside the process (amqtt) for development and single-machine setups.

amqtt speaks MQTT 3.1.1 only (the Messager falls back to it by itself) and has no shared
subscriptions. It keeps offline sessions only for clients it does not mark anonymous, and its
stock anonymous plugin marks every client anonymous when anonymous access is on. So the embedded
broker authenticates with :class:`SessionKeepingAuth`: any client on its loopback listener is
admitted (or, with ``users``, only those with the right password) and keeps a persistent session,
so QoS 1 messages published while a client is away reach it when it returns.

For production, run mosquitto or EMQX (see ``docs/messaging.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from amqtt.plugins.base import BaseAuthPlugin

from argentic.config import MessagingConfig
from argentic.errors import MessagingError
from argentic.lifecycle import Running
from argentic.messaging.transport import remember_protocol
from argentic.netutil import is_listening

logger = logging.getLogger("argentic.messaging.broker")

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}
_PLUGIN = "argentic.messaging.embedded_broker.SessionKeepingAuth"


class SessionKeepingAuth(BaseAuthPlugin):  # type: ignore[misc]
    """Admits clients without marking them anonymous, so their sessions outlive a disconnect."""

    @dataclass
    class Config:
        users: dict[str, str] = field(default_factory=dict)

    async def authenticate(self, *, session: Any) -> bool:
        users: dict[str, str] = getattr(self.config, "users", {}) or {}
        if not users:
            session.is_anonymous = False
            return True
        ok = session.username in users and users[session.username] == session.password
        if not ok:
            logger.warning("refused client %s: bad username or password", session.client_id)
        return bool(ok)


class EmbeddedBroker(Running):
    """amqtt listening on a loopback address: ``async with EmbeddedBroker(...)`` starts it and
    stops it (or ``await start()`` / ``await stop()``)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        users: dict[str, str] | None = None,
        session_expiry_s: int | None = 3600,
    ) -> None:
        self.host = host
        self.port = port
        self.users = dict(users or {})
        self.session_expiry_s = session_expiry_s
        self._broker: Any = None

    @property
    def running(self) -> bool:
        return self._broker is not None

    def _config(self) -> dict[str, Any]:
        return {
            "listeners": {
                "default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 0}
            },
            "session_expiry_interval": self.session_expiry_s,
            "plugins": {_PLUGIN: {"users": self.users}},
        }

    def _aliases(self) -> set[str]:
        return {self.host, "localhost", "127.0.0.1"} if self.host in LOCAL_HOSTS else {self.host}

    async def start(self) -> None:
        """Listen; raises :class:`MessagingError` (nothing left listening) when it cannot."""
        if self._broker is not None:
            return
        from amqtt.broker import Broker

        # amqtt's state machine logs every transition at INFO.
        logging.getLogger("transitions").setLevel(
            max(logging.WARNING, logging.getLogger("transitions").level)
        )
        # amqtt logs every connection at INFO; keep it quiet unless the application chose a level.
        if logging.getLogger("amqtt").level == logging.NOTSET:
            logging.getLogger("amqtt").setLevel(logging.WARNING)
        broker = Broker(self._config())
        try:
            await broker.start()
        except BaseException as exc:
            await _discard(broker)
            if not isinstance(exc, Exception):
                raise
            raise MessagingError(
                f"cannot start the embedded MQTT broker on {self.host}:{self.port}: {exc}"
            ) from exc
        self._broker = broker
        for host in self._aliases():
            remember_protocol(host, self.port, "3.1.1")
        logger.info("embedded MQTT broker (amqtt, MQTT 3.1.1) listening on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is None:
            return
        for host in self._aliases():
            remember_protocol(host, self.port, None)
        try:
            await asyncio.wait_for(broker.shutdown(), 10)
        except Exception:
            logger.exception("the embedded MQTT broker did not shut down cleanly")
        logger.info("embedded MQTT broker on %s:%s stopped", self.host, self.port)


async def _discard(broker: Any) -> None:
    """Close what a failed ``Broker.start`` opened: its shutdown refuses a broker that never
    started, yet listeners opened before the failure and its plugins would stay."""
    for server in list(getattr(broker, "_servers", {}).values()):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.close_instance(), 5)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(broker.plugins_manager.close(), 5)


async def ensure_broker(config: MessagingConfig) -> EmbeddedBroker | None:
    """Start an embedded broker if the config asks for one; the caller stops it on exit.

    ``embedded_broker``: ``never`` starts nothing; ``always`` starts one at the configured address
    (it must be local); ``auto`` starts one only when the configured address is local and nothing
    listens there yet.
    """
    mode = config.embedded_broker
    host, port = config.broker_address, config.port
    if mode == "never":
        logger.debug("embedded broker disabled; using the broker at %s:%s", host, port)
        return None
    local = host in LOCAL_HOSTS
    bind = "127.0.0.1" if host in ("localhost", "0.0.0.0", "") else host
    if mode == "auto":
        if not local:
            logger.info("using the MQTT broker at %s:%s (not local: no embedded broker)", host, port)
            return None
        if await asyncio.to_thread(is_listening, bind, port):
            logger.info("an MQTT broker already listens at %s:%s; using it", host, port)
            return None
    elif not local:
        from argentic.errors import ConfigError

        raise ConfigError(
            f"messaging.embedded_broker is 'always' but messaging.broker_address {host!r} is not a local "
            "address; use 127.0.0.1 or set embedded_broker to 'auto' or 'never'"
        )
    broker = EmbeddedBroker(bind, port, session_expiry_s=config.session_expiry_s or None)
    await broker.start()
    logger.info("started an embedded MQTT broker at %s:%s (embedded_broker=%s)", bind, port, mode)
    return broker


@contextlib.asynccontextmanager
async def broker_for(config: MessagingConfig) -> AsyncIterator[EmbeddedBroker | None]:
    """``ensure_broker`` as a context: the broker started (if any) is stopped on exit."""
    broker = await ensure_broker(config)
    try:
        yield broker
    finally:
        if broker is not None:
            await broker.stop()
