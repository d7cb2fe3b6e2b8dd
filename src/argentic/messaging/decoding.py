"""Reading protocol messages from MQTT payloads, for deliveries and replies alike."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import ValidationError

from argentic.protocol import MESSAGE_ADAPTER, Message, parse_message

M = TypeVar("M", bound=Message)


def decode(payload: bytes, model: type[M] | None) -> M:
    """Validate straight from JSON bytes; on failure let parse_message say what is wrong."""
    try:
        if model is None:
            return MESSAGE_ADAPTER.validate_json(payload)  # type: ignore[return-value]
        return model.model_validate_json(payload)
    except ValidationError:
        return parse_message(payload, model)


def raw_correlation(payload: bytes) -> str | None:
    """The correlation id of a JSON payload that is not (yet) a known message type."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    value = data.get("correlation_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None
