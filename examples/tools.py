"""Example tools, served by ``argentic tools --module examples.tools``.

``calculate`` evaluates arithmetic exactly (no ``eval``: the expression is parsed and only numbers
and arithmetic operators are allowed); ``utc_now`` tells the current time.
"""

from __future__ import annotations

import ast
import datetime
import operator
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, Field

from argentic.tools import tool

_OPERATORS: dict[type[ast.AST], Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
MAX_EXPONENT = 1000


def _evaluate(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError(f"exponent {right} is too large (at most {MAX_EXPONENT})")
        result: float | int = _OPERATORS[type(node.op)](left, right)
        return result
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        value: float | int = _OPERATORS[type(node.op)](_evaluate(node.operand))
        return value
    raise ValueError(f"only numbers and + - * / // % ** are allowed, not {ast.dump(node)[:60]}")


class Calculation(BaseModel):
    expression: str
    value: float | int


@tool(isolate=True)  # in a worker process, killed at its timeout: 9**999**999 cannot freeze the service
def calculate(
    expression: Annotated[str, Field(min_length=1, max_length=60, description="e.g. '1234 * 5678'")],
) -> Calculation:
    """Evaluate an arithmetic expression exactly and return its value."""
    tree = ast.parse(expression, mode="eval")
    return Calculation(expression=expression, value=_evaluate(tree))


@tool
async def utc_now() -> str:
    """The current date and time in UTC (ISO 8601)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
