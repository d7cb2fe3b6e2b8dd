"""Grounded arguments: a required tool call whose arguments are taken from the question's words.

A small model asked for a call under guided decoding writes valid JSON, yet its arguments drift:
it runs a number on into a digit pattern (``1234`` becomes ``1234567890...``) or names a word near
the one it should. With grounding, each string or number argument of the call may only be a span
of the question: its schema becomes an ``enum`` of the question's word spans that its own schema
accepts (type, pattern, length), which the server's structured outputs then hold; a word of the
tool's own name or description is what the tool is, not what it is asked about, and is left out
while another span is left. A tool that has a required argument with no such span is not offered
for that call.

Only for a model whose profile asks for it (``ModelProfile.ground_arguments``), and only for a
call the policy demands before any tool ran: later calls may need values the tools gave. The same
holds a structured answer shaped from a free one (``answer_then_shape``): its number fields are
numbers of the free answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from typing import Any

from argentic.llm.types import ToolDefinition

#: The longest span, in words, an argument may be.
MAX_SPAN_WORDS = 8
#: The most spans an argument's enum lists (a long question's longest spans are left out).
MAX_CHOICES = 64
#: Words no string argument holds: a question's frame ("How many ... are in"), which a small model
#: otherwise takes for (or runs on into) the thing asked about. English, the CPU model's language.
# fmt: off
FRAME_WORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "could", "do", "does",
    "for", "from", "has", "have", "hold", "holds", "how", "in", "is", "it", "many", "much",
    "of", "on", "or", "please", "tell", "that", "the", "there", "this", "to", "was", "what",
    "when", "where", "which", "who", "why", "will", "with", "would", "you",
})
# fmt: on
_WORD = re.compile(r"\S+")
_EDGES = "?!.,;:\"'“”‘’«»"


def spans(text: str) -> list[str]:
    """The question's spans of up to :data:`MAX_SPAN_WORDS` words, shortest first, each without
    the punctuation at its ends, each once."""
    words = _WORD.findall(text)
    found: dict[str, None] = {}
    for length in range(1, MAX_SPAN_WORDS + 1):
        for start in range(len(words) - length + 1):
            span = " ".join(words[start : start + length]).strip(_EDGES)
            if span:
                found.setdefault(span)
    return list(found)


def _number(span: str, integer: bool) -> int | float | None:
    """The number ``span`` writes (thousands separators allowed), None when it is none; "nan" and
    "inf" are words here, not numbers (JSON has neither)."""
    text = span.replace(",", "")
    try:
        value: int | float = int(text) if integer else float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _choices(schema: dict[str, Any], candidates: Sequence[str], kinds: Collection[str]) -> list[Any] | None:
    """The spans ``schema`` accepts, as values of its type; None when the schema is not a plain
    value of one of ``kinds`` (left as it is)."""
    kind = schema.get("type")
    if "enum" in schema or "const" in schema or kind not in kinds:
        return None
    chosen: list[Any] = []
    if kind == "string":
        try:
            pattern = re.compile(schema["pattern"]) if "pattern" in schema else None
        except re.error:
            pattern = None
        for span in candidates:
            if len(span) > schema.get("maxLength", 10**6) or len(span) < schema.get("minLength", 0):
                continue
            if any(word in FRAME_WORDS for word in span.lower().split()):
                continue
            if pattern is None or pattern.search(span):
                chosen.append(span)
    else:
        for span in candidates:
            value = _number(span, kind == "integer")
            if value is None:
                continue
            if "minimum" in schema and value < schema["minimum"]:
                continue
            if "maximum" in schema and value > schema["maximum"]:
                continue
            if value not in chosen:
                chosen.append(value)
    return chosen[:MAX_CHOICES]


def _vocabulary(tool: ToolDefinition) -> set[str]:
    """The words of a tool's name and description, lower case."""
    return {w.strip(_EDGES).lower() for w in re.split(r"[\s_]+", f"{tool.name} {tool.description}") if w}


def ground_schema(
    schema: dict[str, Any],
    text: str,
    kinds: Collection[str] = ("string", "integer", "number"),
    avoid: Collection[str] = (),
) -> dict[str, Any] | None:
    """The object ``schema`` with each plain property of ``kinds`` limited to the spans of
    ``text`` it accepts; None when a required property has none. String spans made only of words
    in ``avoid`` are left out unless nothing else is left."""
    properties = dict(schema.get("properties") or {})
    required = set(schema.get("required") or ())
    candidates = spans(text)
    for name, value_schema in properties.items():
        if not isinstance(value_schema, dict):
            continue
        choices = _choices(value_schema, candidates, kinds)
        if choices is None:
            continue
        if value_schema.get("type") == "string":
            # A word the tool's own name or description uses is what the tool is, not what it is
            # asked about ("stock" for stock_count, "capital" for capital_of).
            own = [c for c in choices if not all(w.lower() in avoid for w in c.split())]
            choices = own or choices
        if not choices:
            if name in required:
                return None
            continue
        properties[name] = {k: v for k, v in value_schema.items() if k != "pattern"} | {"enum": choices}
    return {**schema, "properties": properties}


def ground_tools(tools: Sequence[ToolDefinition], question: str) -> list[ToolDefinition]:
    """The tools that can be called with the question's words, their arguments grounded; all of
    them as they are when none can (the call is then as free as without grounding)."""
    kept = []
    for tool in tools:
        parameters = ground_schema(tool.parameters, question, avoid=_vocabulary(tool))
        if parameters is not None:
            kept.append(tool.model_copy(update={"parameters": parameters}))
    return kept or list(tools)
