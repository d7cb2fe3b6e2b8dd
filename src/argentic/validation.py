"""Pydantic validation errors as one line a person (or a model retrying a tool call) can act on."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation_error(exc: ValidationError, *, root: str = "(root)", limit: int = 5) -> str:
    """``"field.sub: what is wrong; other: ..."`` for the first ``limit`` problems."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or root}: {error['msg']}"
        for error in exc.errors(include_url=False)[:limit]
    )
