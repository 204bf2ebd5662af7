"""Loading scenarios from files or text, with every problem located.

:func:`load_scenario` is the public entry; :func:`check_scenario_file` is what
``journey validate`` calls to get every problem (and warning) in one pass.
"""

from __future__ import annotations

import copy
import os
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from sim._errors import Problem, ScenarioError, hint
from sim.scenario._checks import cross_check
from sim.scenario._patch import _unwrap
from sim.scenario._schema import _EXIT_RE, Scenario
from sim.scenario._yaml import MAX_BYTES, Located, read_yaml

__all__ = ["as_written", "check_scenario_file", "load_scenario", "problems_from_validation"]

Loc = tuple[str | int, ...]


def _model_at(loc: Loc, root: type[BaseModel] = Scenario) -> type[BaseModel] | None:
    """The schema model that the data at ``loc`` is validated against, if any."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp, {})
        origin = typing.get_origin(tp) or tp
        if isinstance(origin, type) and issubclass(origin, BaseModel):
            field = origin.model_fields.get(str(part))
            if field is None:
                return None
            tp = field.annotation
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        elif origin is list:
            tp = typing.get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp, {})
    origin = typing.get_origin(tp) or tp
    return origin if isinstance(origin, type) and issubclass(origin, BaseModel) else None


def _message(err: Any, root: type[BaseModel] = Scenario) -> str:
    kind = err["type"]
    loc = tuple(err["loc"])
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1], root)
        name = str(loc[-1])
        if model is not None:
            fields = list(model.model_fields)
            return f"unknown field {name!r} ({hint(name, fields, listed='allowed')})"
        return f"unknown field {name!r}"
    if kind == "missing":
        return "required field is missing"
    msg: str = err["msg"]
    return msg[0].lower() + msg[1:] if msg else kind


def _clean_loc(loc: Loc) -> Loc:
    """Drop pydantic's markers (``[key]``, union member names) from a location."""
    return tuple(p for p in loc if not (isinstance(p, str) and p.startswith("[")))


def as_written(loc: Loc, data: Any) -> Loc:
    """The part of a validation location that the author wrote, in their spelling.

    The schema reads short forms by expanding them: a bare number for an exit
    rate becomes ``{p: …}``, one reach for every stage a mapping of stages. A
    location that goes on below a value written as a scalar points into what
    the expansion synthesised; it is cut at the scalar, where the author can
    find (and fix) what they wrote. A key the schema canonicalised (the exit
    ``'aware -> use'``, validated as ``'aware->use'``) is given as spelled.
    Places that are not in ``data`` at all (a missing field) keep their path.
    """
    out: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict):
            key: Any = part
            if part not in node and isinstance(part, str):
                key = next((k for k in node if isinstance(k, str)
                            and _canonical_exit(k) == part), part)
            out.append(key)
            node = node.get(key)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        elif node is None:
            out.append(part)
        else:
            break
    return tuple(out)


def problems_from_validation(exc: ValidationError, located: Located | None,
                             source: str, root: type[BaseModel] = Scenario) -> list[Problem]:
    """Turn pydantic's errors into located problems, one per rule broken.

    ``root`` is the model that was validated (a scenario unless said otherwise):
    an unknown field's "did you mean" comes from its fields. With ``located``
    (the data as read), each problem is reported at the path the author wrote
    (see :func:`as_written`); problems that then coincide are reported once.
    """
    out: list[Problem] = []

    def add(loc: Loc, message: str, severity: str = "error") -> None:
        loc = _clean_loc(loc)
        if located is not None:
            loc = as_written(loc, located.data)
        line, col = located.locate(loc) if located is not None else (0, 0)
        path = ".".join(str(p) for p in loc)
        problem = Problem(source, line, col, path, message, severity)
        if problem not in out:
            out.append(problem)

    for err in exc.errors():
        if err["type"] == "scenario_rules":
            for loc, message in err["ctx"]["problems"]:
                add(tuple(err["loc"]) + tuple(loc), message)
        else:
            add(tuple(err["loc"]), _message(err, root))
    return sorted(out, key=lambda p: (p.line, p.column))


def _index_canonical_exits(located: Located) -> None:
    """Also locate exit keys by their canonical spelling.

    ``'aware -> use'`` is validated (and reported) as ``'aware->use'``; without
    this, problems in such an entry would point at the enclosing mapping.
    """
    for path, pos in list(located.positions.items()):
        canonical = tuple(_canonical_exit(p) if isinstance(p, str) else p for p in path)
        located.positions.setdefault(canonical, pos)


def _canonical_exit(key: str) -> str:
    m = _EXIT_RE.match(key)
    return f"{m.group(1)}->{m.group(2)}" if m else key


def _related(a: Loc, b: Loc) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _cross_despite(exc: ValidationError, located: Located, source: str) -> list[Problem]:
    """Cross-field problems of a file that also has structural errors.

    Each structural error is repaired only where that is safe: an unknown field is
    dropped, an invalid value of an optional model field falls back to its default.
    Anything else (a missing required field, a bad collection entry) and the
    cross-field check is left for the next pass. Problems that touch a repaired
    place are dropped, so the repair cannot invent errors.
    """
    data = copy.deepcopy(located.data)
    repaired: list[Loc] = []
    for err in exc.errors():
        loc = _clean_loc(tuple(err["loc"]))
        if err["type"] == "scenario_rules" or not loc:
            return []
        parent = data
        for part in loc[:-1]:
            in_dict = isinstance(parent, dict) and part in parent
            in_list = isinstance(parent, list) and isinstance(part, int) and part < len(parent)
            if not (in_dict or in_list):
                return []
            parent = parent[part]
        model = _model_at(loc[:-1])
        field = model.model_fields.get(str(loc[-1])) if model is not None else None
        optional = field is not None and not field.is_required()
        if not isinstance(parent, dict) or loc[-1] not in parent or not (
                err["type"] == "extra_forbidden" or optional):
            return []
        del parent[loc[-1]]
        repaired.append(loc)
    try:
        Scenario.model_validate(data)
    except ValidationError as again:
        rules = [e for e in again.errors() if e["type"] == "scenario_rules"]
        if len(rules) != len(again.errors()):
            return []
        return [p for p in problems_from_validation(again, located, source)
                if not any(_related(tuple(p.path.split(".")), tuple(map(str, r)))
                           for r in repaired)]
    return []


def _parse(text: str | bytes, source: str) -> tuple[Scenario, list[Problem]]:
    located = read_yaml(text, source)
    if not isinstance(located.data, dict):
        line, col = located.positions.get((), (1, 1))
        raise ScenarioError.single(source, "a scenario is a mapping of fields (name, time, "
                                           "stages, …)", line=line, column=col)
    _index_canonical_exits(located)
    try:
        scenario = Scenario.model_validate(located.data)
    except ValidationError as exc:
        problems = problems_from_validation(exc, located, source)
        problems += _cross_despite(exc, located, source)
        raise ScenarioError(sorted(problems, key=lambda p: (p.line, p.column))) from None
    warnings = []
    for check in cross_check(scenario, check_patches=False):
        if check.severity == "warning":
            loc = as_written(check.loc, located.data)
            line, col = located.locate(loc)
            warnings.append(Problem(source, line, col, ".".join(map(str, loc)),
                                    check.message, "warning"))
    return scenario, warnings


def _read_file(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        raw = path.read_bytes() if size <= MAX_BYTES else None
    except FileNotFoundError:
        raise ScenarioError.single(str(path), "no such file") from None
    except IsADirectoryError:
        raise ScenarioError.single(str(path), "is a directory, not a scenario file") from None
    except PermissionError:
        raise ScenarioError.single(str(path), "permission denied") from None
    except (OSError, ValueError) as exc:  # name too long, not a directory, NUL byte, I/O…
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ScenarioError.single(str(path), f"cannot read: {reason}") from None
    if raw is None:
        raise ScenarioError.single(str(path), f"file is {size:,} bytes; scenarios are "
                                              f"limited to {MAX_BYTES:,} bytes")
    return raw


def check_scenario_file(path: str | os.PathLike[str]) -> tuple[Scenario | None, list[Problem]]:
    """Validate one scenario file and return every problem found.

    Returns:
        The scenario (None when invalid) and its problems: errors first
        when invalid, else the warnings.
    """
    p = Path(path)
    try:
        return _parse(_read_file(p), str(path))
    except ScenarioError as exc:
        return None, exc.problems


def load_scenario(path_or_text: str | os.PathLike[str]) -> Scenario:
    """Load and validate a scenario.

    Args:
        path_or_text: a path (``Path``, or a ``str`` without a newline) to a
            YAML file, or the YAML text itself (a ``str`` with a newline).

    Returns:
        The validated, immutable scenario.

    Raises:
        ScenarioError: every problem found, each as ``FILE:LINE:COL: path: message``.

    Example:
        >>> import sim
        >>> s = sim.load_scenario("scenarios/dental_clinic.yaml")  # doctest: +SKIP
        >>> s.steps  # doctest: +SKIP
        730
    """
    if isinstance(path_or_text, str) and "\n" in path_or_text:
        return _parse(path_or_text, "<string>")[0]
    p = Path(path_or_text)
    return _parse(_read_file(p), str(path_or_text))[0]
