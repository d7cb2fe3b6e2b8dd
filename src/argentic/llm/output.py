"""Structured output: the schema sent for an output spec, and the reply parsed back into it."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from argentic.errors import LLMOutputError
from argentic.llm.types import OutputSpec

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def output_name(output: OutputSpec) -> str:
    if isinstance(output, dict):
        title = output.get("title")
        name = title if isinstance(title, str) and title else "output"
    else:
        name = output.__name__
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64]


def output_schema(output: OutputSpec) -> dict[str, Any]:
    """The JSON schema of ``output``."""
    if isinstance(output, dict):
        return output
    return output.model_json_schema()


def _json_text(text: str) -> str:
    """The JSON inside ``text``: the text itself, or the body of a fenced block."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        return stripped
    fenced = _FENCE.search(stripped)
    return fenced.group(1).strip() if fenced else stripped


def parse_output(text: str | None, output: OutputSpec) -> Any:
    """``text`` parsed and validated: an ``output`` instance, or plain JSON data for a schema.

    Raises :class:`LLMOutputError` naming what was wrong when the reply does not fit.
    """
    if text is None or not text.strip():
        raise LLMOutputError(f"the model gave no {output_name(output)} answer (empty reply)")
    raw = _json_text(text)
    if isinstance(output, dict):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise LLMOutputError(f"the model's answer is not valid JSON ({exc}): {text[:200]!r}") from exc
        if output.get("type") == "object" and not isinstance(data, dict):
            raise LLMOutputError(f"the model's answer is not a JSON object: {text[:200]!r}")
        return data
    assert issubclass(output, BaseModel)
    try:
        return output.model_validate_json(raw)
    except ValidationError as exc:
        raise LLMOutputError(
            f"the model's answer does not match {output.__name__}: {exc.errors(include_url=False)}; "
            f"answer was {text[:200]!r}"
        ) from exc
