"""The Messager's options: read from the configuration, and handed on to its connection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from argentic.config import MessagingConfig
from argentic.messaging.connection import ConnectionSettings

if TYPE_CHECKING:
    from argentic.messaging.messager import Messager


def config_options(config: MessagingConfig) -> dict[str, Any]:
    """The keyword arguments of :class:`Messager` that ``config`` sets."""
    return {
        "broker_address": config.broker_address,
        "port": config.port,
        "client_id": config.client_id,
        "username": config.username,
        "password": config.password.get_secret_value() if config.password else None,
        "tls": config.tls,
        "namespace": config.namespace,
        "protocol": config.protocol,
        "qos": config.qos,
        "keepalive": config.keepalive,
        "session_expiry_s": config.session_expiry_s,
        "max_payload_bytes": config.max_payload_bytes,
        "request_timeout_s": config.request_timeout_s,
        "connect_timeout_s": config.connect_timeout_s,
        "outbox_size": config.outbox_size,
        "persistent": config.persistent,
        "max_concurrent_handlers": config.max_concurrent_handlers,
        "reconnect_initial_delay_s": config.reconnect.initial_delay_s,
        "reconnect_max_delay_s": config.reconnect.max_delay_s,
        "reply_topics": config.reply_topics,
        "max_queued_bytes": config.max_queued_bytes,
    }


def connection_settings(
    messager: Messager, *, generated_id: bool, password: str | None, max_queued_bytes: int | None
) -> ConnectionSettings:
    """What the connection of ``messager`` needs, from the options it was built with."""
    return ConnectionSettings(
        broker_address=messager.broker_address,
        port=messager.port,
        client_id=messager.client_id,
        generated_id=generated_id,
        username=messager.username,
        password=password,
        tls=messager.tls,
        protocol=messager.protocol,
        keepalive=messager.keepalive,
        session_expiry_s=messager.session_expiry_s,
        persistent=messager.persistent,
        will=messager.will,
        connect_timeout_s=messager.connect_timeout_s,
        publish_timeout_s=messager.publish_timeout_s,
        reconnect_initial_delay_s=messager.reconnect_initial_delay_s,
        reconnect_max_delay_s=messager.reconnect_max_delay_s,
        max_inflight=messager.max_inflight,
        max_queued_bytes=max_queued_bytes,
    )
