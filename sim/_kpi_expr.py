"""Custom KPIs: safe arithmetic over a run's tables, parsed with :mod:`ast` into a whitelist.

A scenario's ``kpis:`` block names expressions such as
``occupancy("members", 365) / occupancy("members", 0)``. :func:`check` validates
an expression against the scenario's names at load time (every problem in the
user's words); :func:`evaluate` computes it for one replicate from a
:class:`Quantities` (the run's counts, expressed for the full population).

Allowed: numbers, ``+ - * / **``, unary ``-``, parentheses, the names of
KPIs (built-in ones and custom ones defined earlier in the block), and calls
of the functions of :data:`FUNCTIONS` with literal arguments. Nothing else —
no attribute access, subscripts, comprehensions, lambdas or other calls — so
a scenario file cannot run code. A division by zero (or any undefined value)
gives NaN, as the built-in KPIs do.
"""

from __future__ import annotations

import ast
import difflib
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["FUNCTIONS", "Context", "ExprError", "Quantities", "check", "evaluate"]


@dataclass(frozen=True)
class _Signature:
    """Arguments of a function: required then optional, each with its type."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    doc: str = ""


_ARG_TYPES: dict[str, str] = {
    "stage": "stages", "from_stage": "stage", "to_stage": "stage", "segment": "segment",
    "touchpoint": "touchpoint", "item": "item", "name": "kpi",
    "day": "day", "from_day": "day", "to_day": "day",
}
"""What each argument must be: a stage name (``stages``: one name or a list of
names), a segment, a touchpoint, a ledger item, a KPI name, or a day (a number)."""

FUNCTIONS: dict[str, _Signature] = {
    "occupancy": _Signature(("stage", "day"), ("segment",),
                            "agents in the stage(s) at the end of the step holding the day"),
    "entries": _Signature(("stage",), ("from_day", "to_day", "segment"),
                          "entries into the stage(s) (moves, arrivals, referrals)"),
    "flows": _Signature(("from_stage", "to_stage"), ("from_day", "to_day", "segment"),
                        "moves from one stage to another"),
    "revenue": _Signature((), ("segment", "from_day", "to_day"),
                          "revenue (currency), of one segment or all"),
    "cost": _Signature((), ("item", "from_day", "to_day"),
                       "cost (currency) of one touchpoint or intervention, or all"),
    "exposures": _Signature(("touchpoint",), ("from_day", "to_day", "segment"),
                            "exposures to a touchpoint"),
    "kpi": _Signature(("name",), (), "any KPI by name (e.g. 'served_within_target:consult')"),
}
"""The functions an expression may call. Windows count the steps whose day
(the tables' ``day`` column) lies in ``from_day < day <= to_day`` (default: the
whole run). Counts are expressed for the scenario's full population, as the
built-in KPIs are. ``min``, ``max`` (two or more numbers) and ``abs`` are
allowed too."""

_MATH: dict[str, Callable[..., float]] = {"min": min, "max": max, "abs": abs}
_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b if b != 0 else math.nan,
    ast.Pow: lambda a, b: _power(a, b),
}


def _power(a: float, b: float) -> float:
    try:
        value = a ** b
    except (OverflowError, ZeroDivisionError):
        return math.nan
    return value if isinstance(value, float | int) else math.nan


class ExprError(ValueError):
    """An expression outside the whitelist, or naming something the scenario lacks."""


@dataclass(frozen=True)
class Context:
    """The names an expression may use (from the scenario) and the horizon."""

    stages: Sequence[str]
    segments: Sequence[str]
    touchpoints: Sequence[str]
    items: Sequence[str]
    kpis: Sequence[str]
    horizon_days: float
    queue_kpis: Sequence[str] = field(default_factory=tuple)


def _hint(kind: str, name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    if close:
        return f"unknown {kind} {name!r} (did you mean {close[0]!r}?)"
    shown = ", ".join(known[:12]) + (", …" if len(known) > 12 else "")
    return f"unknown {kind} {name!r} (known: {shown or 'none'})"


@functools.lru_cache(maxsize=256)
def _parse(text: str) -> ast.expr:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        column = max(exc.offset or 1, 1)
        raise ExprError(f"not an expression: {exc.msg} at column {column}") from None
    return tree.body


def _where(node: ast.AST) -> str:
    return f" at column {getattr(node, 'col_offset', 0) + 1}"


def _string(node: ast.expr, what: str) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    raise ExprError(f"{what} must be a quoted name{_where(node)}")


def _number(node: ast.expr, what: str) -> float:
    sign = 1.0
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        sign, node = -1.0, node.operand
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) \
            and not isinstance(node.value, bool):
        return sign * float(node.value)
    raise ExprError(f"{what} must be a number{_where(node)}")


def _bind(name: str, call: ast.Call) -> dict[str, ast.expr]:
    """The call's arguments by parameter name (positional, then keywords)."""
    sig = FUNCTIONS[name]
    params = (*sig.required, *sig.optional)
    if any(isinstance(a, ast.Starred) for a in call.args) or any(
            k.arg is None for k in call.keywords):
        raise ExprError(f"{name}(): no * or ** arguments{_where(call)}")
    if len(call.args) > len(params):
        raise ExprError(f"{name}() takes at most {len(params)} arguments "
                        f"({', '.join(params)}){_where(call)}")
    bound = dict(zip(params, call.args, strict=False))
    for kw in call.keywords:
        assert kw.arg is not None
        if kw.arg not in params:
            raise ExprError(f"{name}() has no argument {kw.arg!r} (it takes "
                            f"{', '.join(params)}){_where(kw.value)}")
        if kw.arg in bound:
            raise ExprError(f"{name}(): {kw.arg} given twice{_where(kw.value)}")
        bound[kw.arg] = kw.value
    missing = [p for p in sig.required if p not in bound]
    if missing:
        raise ExprError(f"{name}() needs {', '.join(missing)}{_where(call)}")
    return bound


def _check_arg(func: str, param: str, node: ast.expr, ctx: Context) -> None:
    kind = _ARG_TYPES[param]
    what = f"{func}(): {param}"
    if kind == "day":
        day = _number(node, what)
        if not 0.0 <= day <= ctx.horizon_days:
            raise ExprError(f"{what} {day:g} lies outside the run (0..{ctx.horizon_days:g} "
                            f"days){_where(node)}")
        return
    if kind == "stages" and isinstance(node, ast.List | ast.Tuple):
        if not node.elts:
            raise ExprError(f"{what}: an empty list of stages{_where(node)}")
        for elt in node.elts:
            _check_arg(func, "from_stage", elt, ctx)
        return
    name = _string(node, what)
    known: dict[str, tuple[str, Sequence[str]]] = {
        "stages": ("stage", ctx.stages), "stage": ("stage", ctx.stages),
        "segment": ("segment", ctx.segments), "touchpoint": ("touchpoint", ctx.touchpoints),
        "item": ("cost item (touchpoint or intervention)", ctx.items),
        "kpi": ("KPI", [*ctx.kpis, *ctx.queue_kpis]),
    }
    label, names = known[kind]
    if name not in names:
        raise ExprError(_hint(label, name, names) + _where(node))


def check(text: str, ctx: Context) -> None:
    """Validate an expression against a scenario's names.

    Raises:
        ExprError: what is wrong, in the words of the expression.
    """
    if not text.strip():
        raise ExprError("an empty expression")
    if len(text) > 2000:
        raise ExprError("an expression of more than 2000 characters")
    _check_node(_parse(text), ctx, 0)


def _check_node(node: ast.expr, ctx: Context, depth: int) -> None:
    if depth > 50:
        raise ExprError("an expression nested more than 50 deep")
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ExprError(f"{node.value!r} is not a number; quoted names go inside a "
                            f"function call{_where(node)}")
        return
    if isinstance(node, ast.Name):
        if node.id in _MATH or node.id in FUNCTIONS:
            raise ExprError(f"{node.id} is a function: call it{_where(node)}")
        if node.id not in ctx.kpis:
            raise ExprError(_hint("KPI", node.id, ctx.kpis) + _where(node))
        return
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise ExprError(f"operator not allowed{_where(node)} (use + - * / **)")
        _check_node(node.left, ctx, depth + 1)
        _check_node(node.right, ctx, depth + 1)
        return
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.USub | ast.UAdd):
            raise ExprError(f"operator not allowed{_where(node)} (use + - * / **)")
        _check_node(node.operand, ctx, depth + 1)
        return
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise ExprError(f"only the named functions may be called{_where(node)}")
        name = node.func.id
        if name in _MATH:
            if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                raise ExprError(f"{name}() takes numbers only{_where(node)}")
            want = 1 if name == "abs" else 2
            if (name == "abs" and len(node.args) != 1) or len(node.args) < want:
                takes = "one number" if want == 1 else "two or more numbers"
                raise ExprError(f"{name}() takes {takes}{_where(node)}")
            for arg in node.args:
                _check_node(arg, ctx, depth + 1)
            return
        if name not in FUNCTIONS:
            raise ExprError(_hint("function", name, [*FUNCTIONS, *_MATH]) + _where(node))
        for param, arg in _bind(name, node).items():
            _check_arg(name, param, arg, ctx)
        return
    what = {ast.Attribute: "attribute access", ast.Subscript: "subscripts",
            ast.Compare: "comparisons", ast.BoolOp: "and/or", ast.IfExp: "if/else",
            ast.Lambda: "lambda"}.get(type(node), type(node).__name__.lower())
    raise ExprError(f"{what} not allowed{_where(node)}: use numbers, KPI names, + - * / **, "
                    f"parentheses and the functions {', '.join([*FUNCTIONS, *_MATH])}")


class Quantities(Protocol):
    """What an expression reads from one replicate (see :data:`FUNCTIONS`)."""

    def value(self, func: str, args: Mapping[str, Any]) -> float:
        """The value of a function call; ``args`` by parameter name, literals."""
        ...

    def kpi(self, name: str) -> float:
        """A KPI of the replicate (built-in, per-queue, or custom computed before)."""
        ...


def _literal(node: ast.expr) -> Any:
    if isinstance(node, ast.List | ast.Tuple):
        return tuple(_literal(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_literal(node.operand)
    assert isinstance(node, ast.Constant)
    return node.value


def evaluate(text: str, q: Quantities) -> float:
    """The value of a checked expression for one replicate (NaN where undefined)."""
    return float(_eval(_parse(text), q))


def _eval(node: ast.expr, q: Quantities) -> float:
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, int | float)
        return float(node.value)
    if isinstance(node, ast.Name):
        return q.kpi(node.id)
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, q), _eval(node.right, q)
        if math.isnan(a) or math.isnan(b):
            return math.nan
        try:
            return _BINARY[type(node.op)](a, b)
        except OverflowError:
            return math.nan
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, q)
        return -value if isinstance(node.op, ast.USub) else value
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    name = node.func.id
    if name in _MATH:
        values = [_eval(a, q) for a in node.args]
        if any(math.isnan(v) for v in values):
            return math.nan
        return float(_MATH[name](*values) if name != "abs" else abs(values[0]))
    args = {p: _literal(a) for p, a in _bind(name, node).items()}
    if name == "kpi":
        return q.kpi(args["name"])
    return q.value(name, args)
