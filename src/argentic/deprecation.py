"""Older names that keep working: each use warns with a :class:`DeprecationWarning` naming the new
one (docs/agents.md lists them)."""

from __future__ import annotations

import warnings
from typing import TypeVar

from argentic.errors import ArgumentError

T = TypeVar("T")


def deprecated(message: str, *, stacklevel: int = 3) -> None:
    """Warn that an older name was used. The default points the warning at the line that called
    the function or method calling this (the user's code)."""
    warnings.warn(message, DeprecationWarning, stacklevel=stacklevel)


def renamed(
    value: T | None, older: T | None, *, where: str, name: str, older_name: str, stacklevel: int = 4
) -> T | None:
    """An argument given as ``name`` or, with a warning, under ``older_name`` (its deprecated older
    keyword); both, unequal, raise :class:`~argentic.errors.ArgumentError`. The default
    ``stacklevel`` suits a call from the function ``where`` names (the warning points at its
    caller); one more for each function between."""
    if older is None:
        return value
    deprecated(f"{where}({older_name}=...) is deprecated: pass {name}=", stacklevel=stacklevel)
    if value is not None and value != older:
        raise ArgumentError(
            f"{where}: pass {name}= only ({older_name}= is its deprecated older name), not both"
        )
    return older
