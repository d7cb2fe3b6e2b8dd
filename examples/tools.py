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


def evaluate(expression: str) -> float | int:
    """The value of an arithmetic expression (``ValueError`` for anything else)."""
    return _evaluate(ast.parse(expression, mode="eval"))


#: What an expression may hold, and how long it may be: under this pattern a small model writes an
#: expression and stops (a bare length bound let it trail a ", " or run on in digits).
EXPRESSION = r"^[0-9(][0-9 +*/().%-]{0,39}$"


@tool(isolate=True)  # in a worker process, killed at its timeout: 9**999**999 cannot freeze the service
def calculate(
    expression: Annotated[str, Field(pattern=EXPRESSION, description="e.g. '1234 * 5678'")],
) -> Calculation:
    """Evaluate an arithmetic expression exactly and return its value."""
    return Calculation(expression=expression, value=evaluate(expression))


@tool
async def utc_now() -> str:
    """The current date and time in UTC (ISO 8601)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
