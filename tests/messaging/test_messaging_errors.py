"""Every messaging error is in the one tree of argentic.errors, and importable where it used to be."""

from __future__ import annotations

import ast
from pathlib import Path

import argentic
from argentic import errors
from argentic.messaging import outbox, transport


def test_messaging_errors_are_in_the_tree_and_at_their_old_paths() -> None:
    for name in ("OutboxFullError", "ConnectionLostError", "ProtocolRefusedError"):
        error = getattr(errors, name)
        assert issubclass(error, errors.MessagingError)
        assert name in (errors.__doc__ or "")
    assert outbox.OutboxFullError is errors.OutboxFullError
    assert transport.ConnectionLostError is errors.ConnectionLostError
    assert transport.ProtocolRefusedError is errors.ProtocolRefusedError


def test_no_public_exception_is_defined_outside_errors() -> None:
    package = Path(argentic.__file__).parent
    outside = []
    for path in package.rglob("*.py"):
        if path.name == "errors.py" and path.parent == package:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {ast.unparse(base) for base in node.bases}
                if any(base.endswith(("Error", "Exception")) for base in bases):
                    outside.append(f"{path.relative_to(package)}:{node.name}")
    assert outside == []
