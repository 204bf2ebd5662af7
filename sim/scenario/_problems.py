"""pydantic's validation errors as located problems, in the author's own spelling.

Every way a scenario (or another file read with :func:`~sim.scenario.read_yaml`)
is validated reports through :func:`problems_from_validation`: one
:class:`~sim.Problem` per rule broken, at the file, line, column and dotted path
the author wrote (:func:`as_written`), with the message that names the rule.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from sim._errors import Problem, hint
from sim.scenario._paths import Loc, model_at
from sim.scenario._schema import ScenarioFields, canonical_exit
from sim.scenario._yaml import Located

__all__ = ["as_written", "clean_loc", "index_canonical_exits", "problems_from_validation"]


def _message(err: Any, root: type[BaseModel]) -> str:
    kind = err["type"]
    loc = tuple(err["loc"])
    if kind == "extra_forbidden":
        model = model_at(loc[:-1], root)
        name = str(loc[-1])
        if model is not None:
            fields = list(model.model_fields)
            return f"unknown field {name!r} ({hint(name, fields, listed='allowed')})"
        return f"unknown field {name!r}"
    if kind == "missing":
        return "required field is missing"
    msg: str = err["msg"]
    return msg[0].lower() + msg[1:] if msg else kind


def clean_loc(loc: Loc) -> Loc:
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
                            and canonical_exit(k) == part), part)
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
                             source: str, root: type[BaseModel] = ScenarioFields) -> list[Problem]:
    """Turn pydantic's errors into located problems, one per rule broken.

    ``root`` is the model that was validated (a scenario unless said otherwise):
    an unknown field's "did you mean" comes from its fields. With ``located``
    (the data as read), each problem is reported at the path the author wrote
    (see :func:`as_written`); problems that then coincide are reported once.
    """
    out: list[Problem] = []

    def add(loc: Loc, message: str, severity: str = "error") -> None:
        loc = clean_loc(loc)
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


def index_canonical_exits(located: Located) -> None:
    """Also locate exit keys by their canonical spelling.

    ``'aware -> use'`` is validated (and reported) as ``'aware->use'``; without
    this, problems in such an entry would point at the enclosing mapping.
    """
    for path, pos in list(located.positions.items()):
        canonical = tuple(canonical_exit(p) if isinstance(p, str) else p for p in path)
        located.positions.setdefault(canonical, pos)
