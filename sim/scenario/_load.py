"""Loading scenarios from files or text, with every problem located.

:func:`load_scenario` is the public entry; :func:`check_scenario_file` is what
``journey validate`` calls to get every problem (and warning) in one pass.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from pydantic import ValidationError

from sim._errors import Problem, ScenarioError
from sim.scenario._checks import cross_check
from sim.scenario._paths import Loc, model_at
from sim.scenario._problems import (
    as_written,
    clean_loc,
    index_canonical_exits,
    problems_from_validation,
)
from sim.scenario._scenario import Scenario
from sim.scenario._yaml import MAX_BYTES, Located, read_yaml

__all__ = ["check_scenario_file", "load_scenario"]


def _related(a: Loc, b: Loc) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _cross_despite(exc: ValidationError, located: Located, source: str) -> list[Problem]:
    """Cross-field problems of a file that also has structural errors.

    Each structural error is repaired only where that is safe: an unknown field is
    dropped, an invalid value of an optional model field falls back to its default.
    Anything else (a missing required field, a bad collection entry) and the
    cross-field check is left for the next pass. Problems that touch a repaired
    place, or that name a repaired field, are dropped, so the repair cannot invent
    errors.
    """
    data = copy.deepcopy(located.data)
    repaired: list[Loc] = []
    for err in exc.errors():
        loc = clean_loc(tuple(err["loc"]))
        if err["type"] == "scenario_rules" or not loc:
            return []
        parent = data
        for part in loc[:-1]:
            in_dict = isinstance(parent, dict) and part in parent
            in_list = isinstance(parent, list) and isinstance(part, int) and part < len(parent)
            if not (in_dict or in_list):
                return []
            parent = parent[part]
        model = model_at(loc[:-1], Scenario)
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
        # a problem at a repaired place, or one that names a repaired field (a profile
        # that "needs time.start_date" when the start date was dropped), is its echo
        return [p for p in problems_from_validation(again, located, source)
                if not any(_related(tuple(p.path.split(".")), tuple(map(str, r)))
                           or ".".join(map(str, r)) in p.message for r in repaired)]
    return []


def _parse(text: str | bytes, source: str) -> tuple[Scenario, list[Problem]]:
    located = read_yaml(text, source)
    if not isinstance(located.data, dict):
        line, col = located.positions.get((), (1, 1))
        raise ScenarioError.single(source, "a scenario is a mapping of fields (name, time, "
                                           "stages, …)", line=line, column=col)
    index_canonical_exits(located)
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
