"""Tool calls a model wrote into its text instead of the ``tool_calls`` field.

Local models often answer ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (Hermes
style), a fenced ```json block, or a bare JSON object, and the server's tool parser misses it.
:func:`extract_tool_calls` finds such calls for tools that exist and returns the remaining text.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from typing import Any

from argentic.llm.types import LLMToolCall

# Tags of tool-call formats (Hermes' <tool_call>, <tool_response>, and the variants small models
# invent from them, such as <tool_call_result>): text holding one is no answer.
_MARKUP_TAG = re.compile(r"<\s*/?\s*(?:tool|function)(?:_[a-z]+)*\s*>", re.IGNORECASE)
_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_FENCED = re.compile(r"```(?:json|tool_call)?\s*(.*?)```", re.DOTALL)


def tool_markup(text: str | None) -> str | None:
    """The first tool-call or tool-response tag in ``text``, or None: an answer is never markup."""
    match = _MARKUP_TAG.search(text or "")
    return match.group(0) if match else None


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def json_values(text: str) -> list[Any]:
    """Every JSON value in ``text`` (objects one after another, or one list)."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    position = 0
    text = text.strip()
    while position < len(text):
        start = min((i for i in (text.find("{", position), text.find("[", position)) if i >= 0), default=-1)
        if start < 0:
            break
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            position = start + 1
            continue
        values.append(value)
        position = end
    return values


def _as_call(value: Any, names: set[str]) -> LLMToolCall | None:
    if not isinstance(value, dict):
        return None
    name = value.get("name")
    if name is None and isinstance(value.get("function"), dict):  # {"function": {"name", "arguments"}}
        return _as_call(value["function"], names)
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(name, str) or name not in names or not isinstance(arguments, dict):
        return None
    return LLMToolCall(
        id=new_call_id(),
        name=name,
        arguments=arguments,
        raw_arguments=json.dumps(arguments, ensure_ascii=False),
    )


def _calls_in(block: str, names: set[str]) -> list[LLMToolCall]:
    calls: list[LLMToolCall] = []
    for value in json_values(block):
        for item in value if isinstance(value, list) else [value]:
            call = _as_call(item, names)
            if call is not None:
                calls.append(call)
    return calls


def extract_tool_calls(text: str | None, tool_names: Iterable[str]) -> tuple[list[LLMToolCall], str | None]:
    """The tool calls written in ``text`` (only for known tool names) and the text without them."""
    names = set(tool_names)
    if not text or not names:
        return [], text
    for pattern in (_TAGGED, _FENCED):
        blocks = pattern.findall(text)
        calls = [call for block in blocks for call in _calls_in(block, names)]
        if calls:
            rest = pattern.sub("", text).strip()
            return calls, rest or None
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        calls = _calls_in(stripped, names)
        if calls:
            return calls, None
    return [], text
