"""An agent whose model is SpecReason, as LangGraph Studio / ``langgraph dev`` loads it (langgraph.json):
LangChain's ``create_agent`` with :class:`~specreason_graph.ChatSpecReason` as its chat model and two
real tools. Each model turn reasons with SpecReason (the small model drafts each step, the base model
judges it and rewrites the rejected ones), then the base model answers or calls a tool; the tool's
result comes back as a message and the next turn reasons again.

Which servers and judge: ``Context.for_servers("cpu")``, the local CPU pair (``specreason serve
start``) with its calibrated judge, at temperature 0; ``SPECREASON_*`` in the server's environment
set other endpoints. Streamed with ``stream_mode="messages"`` a run shows each kept step as a
reasoning chunk of the model's message when it is kept, then the reply.

The tools compute; they reach no network: ``calculator`` evaluates arithmetic exactly (Python's
``ast``, numbers and + - * / // % ** only), ``convert_units`` converts between a few units of length,
mass and time.
"""

from __future__ import annotations

import ast
import operator
from fractions import Fraction

from langchain.agents import create_agent
from langchain_core.tools import tool

from specreason_graph import ChatSpecReason, Context

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
              ast.Pow: operator.pow}


def _evaluate(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) \
            and not isinstance(node.value, bool):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and (right.denominator != 1 or abs(right) > 64):
            raise ValueError("only whole powers up to 64")
        return Fraction(_OPERATORS[type(node.op)](left, right))
    raise ValueError(f"not arithmetic: {ast.unparse(node)}")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly, e.g. "3 * 151.2" or "(17 + 25) / 6". Numbers and
    + - * / // % ** and parentheses only."""
    try:
        value = _evaluate(ast.parse(expression.replace("^", "**"), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError) as exc:
        return f"error: {exc}"
    return str(value.numerator) if value.denominator == 1 else f"{float(value):.10g}"


_UNITS = {"m": ("length", Fraction(1)), "km": ("length", Fraction(1000)),
          "cm": ("length", Fraction(1, 100)), "mile": ("length", Fraction("1609.344")),
          "foot": ("length", Fraction("0.3048")), "inch": ("length", Fraction("0.0254")),
          "kg": ("mass", Fraction(1)), "g": ("mass", Fraction(1, 1000)),
          "pound": ("mass", Fraction("0.45359237")), "s": ("time", Fraction(1)),
          "minute": ("time", Fraction(60)), "hour": ("time", Fraction(3600)),
          "day": ("time", Fraction(86400))}


@tool
def convert_units(value: float, from_unit: str, to_unit: str) -> str:
    """Convert a quantity between units of length (m, km, cm, mile, foot, inch), mass (kg, g,
    pound) or time (s, minute, hour, day)."""
    try:
        (kind, a), (other, b) = _UNITS[from_unit.strip().lower()], _UNITS[to_unit.strip().lower()]
    except KeyError as exc:
        return f"error: unknown unit {exc.args[0]!r}; known: {', '.join(_UNITS)}"
    if kind != other:
        return f"error: cannot convert {kind} to {other}"
    return f"{float(Fraction(str(value)) * a / b):.10g} {to_unit}"


TOOLS = [calculator, convert_units]
model = ChatSpecReason(context=Context.for_servers("cpu", temperature=0.0, seed=0))
graph = create_agent(model, TOOLS, name="agent")
