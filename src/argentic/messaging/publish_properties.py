"""MQTT 5 PUBLISH properties packed once, for the per-message path."""

from __future__ import annotations

import math
import struct
import time

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


class PublishProperties(Properties):
    """Response Topic, Correlation Data, Message Expiry Interval and the ``traceparent`` user
    property, packed once.

    paho's Properties validates every assignment and scans all property names when packing,
    which costs more than the rest of a publish; paho only calls ``pack()`` on these.
    """

    def __init__(
        self,
        response_topic: str | None,
        correlation: bytes | None,
        expires_at: float | None,
        traceparent: str | None = None,
    ) -> None:
        buffer = b""
        if response_topic is not None:
            topic = response_topic.encode()
            buffer += b"\x08" + struct.pack("!H", len(topic)) + topic
        if correlation is not None:
            buffer += b"\x09" + struct.pack("!H", len(correlation)) + correlation
        if expires_at is not None:
            buffer += b"\x02" + struct.pack("!L", max(1, math.ceil(expires_at - time.time())))
        if traceparent is not None:
            buffer += b"\x26" + _utf8(TRACEPARENT) + _utf8(traceparent)
        # Properties.__setattr__ accepts only property names; these two bypass it.
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "packed", varint(len(buffer)) + buffer)

    def pack(self) -> bytes:
        packed: bytes = object.__getattribute__(self, "packed")
        return packed

    def __str__(self) -> str:
        return "[publish properties]"


#: The user property name of the W3C trace context.
TRACEPARENT = "traceparent"


def _utf8(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def varint(value: int) -> bytes:
    """MQTT's Variable Byte Integer."""
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)
