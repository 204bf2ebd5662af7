"""Dotted-path patches of a scenario (interventions, overrides, search points).

A path such as ``touchpoints.email.reach.use`` walks the scenario's data
alongside its schema: a name under a model must be one of its fields, a name
under a collection (``touchpoints``, ``lift``, ``reach``…) must exist unless
it is the last part of the path, where it adds an entry. List items are
addressed by index (``population.initial.0.count``).
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Mapping
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from sim._errors import Problem, ScenarioError, hint

__all__ = ["PathError", "apply_patches", "check_path", "set_path"]

_EXCLUSIVE = {"p": "mean_days", "mean_days": "p"}
"""Setting one of these drops the other: an exit rate is given one way."""


class PathError(ValueError):
    """A dotted path that does not lead anywhere in the scenario."""


def _unwrap(tp: Any, value: Any) -> Any:
    """Strip Annotated/Optional and pick the union member that fits ``value``."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin is Union or origin is types.UnionType:
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            chosen = members[0]
            for member in members:
                m_origin = typing.get_origin(member) or member
                if isinstance(value, dict) and (m_origin is dict or (
                        isinstance(m_origin, type) and issubclass(m_origin, BaseModel))):
                    chosen = member
                    break
                if isinstance(value, list) and m_origin is list:
                    chosen = member
                    break
            tp = chosen
            continue
        return tp


def _suggest(word: str, options: list[str]) -> str:
    said = hint(word, options, listed=None)
    return f" ({said})" if said else ""


def _walk(data: dict[str, Any], path: str, model: type[BaseModel]) -> tuple[Any, Any, bool]:
    """Find the container of ``path``'s last part.

    Returns:
        (container, last key, whether the last key may be new).
    """
    parts = path.split(".")
    if not path or any(not p for p in parts):
        raise PathError(f"{path!r} is not a dotted path")
    node: Any = data
    tp: Any = model
    walked: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        tp = _unwrap(tp, node)
        origin = typing.get_origin(tp) or tp
        where = ".".join(walked) or "the scenario"
        if isinstance(origin, type) and issubclass(origin, BaseModel):
            fields = list(origin.model_fields)
            if part not in fields:
                raise PathError(f"{where} has no field {part!r}{_suggest(part, fields)}")
            if not isinstance(node, dict):
                raise PathError(f"{where} is not set in this scenario")
            if last:
                return node, part, True
            if node.get(part) is None:
                here = ".".join([*walked, part])
                raise PathError(f"{here} is not set in this scenario; set it whole")
            tp = origin.model_fields[part].annotation
            node = node[part]
        elif origin is dict:
            if not isinstance(node, dict):
                raise PathError(f"{where} is not a collection")
            if last:
                return node, part, True
            if part not in node:
                raise PathError(f"{where} has no entry {part!r}"
                                f"{_suggest(part, [str(k) for k in node])}")
            tp = typing.get_args(tp)[1]
            node = node[part]
        elif origin is list:
            if (not isinstance(node, list) or not (part.isascii() and part.isdigit())
                    or int(part) >= len(node)):
                raise PathError(f"{where} has no item {part!r}")
            if last:
                return node, int(part), False
            tp = typing.get_args(tp)[0]
            node = node[int(part)]
        else:
            raise PathError(f"{where} is a value, not a collection: cannot go into {part!r}")
        walked.append(part)
    raise AssertionError("unreachable")


def set_path(data: dict[str, Any], path: str, value: Any, model: type[BaseModel]) -> None:
    """Set ``path`` in plain scenario ``data`` (in place).

    Raises:
        PathError: the path does not lead anywhere.
    """
    container, key, _ = _walk(data, path, model)
    if isinstance(container, dict) and key in _EXCLUSIVE:
        container.pop(_EXCLUSIVE[key], None)
    container[key] = copy.deepcopy(value)


def check_path(data: dict[str, Any], path: str, model: type[BaseModel]) -> str | None:
    """Why ``path`` does not lead anywhere in ``data``, or None when it does."""
    try:
        _walk(data, path, model)
    except PathError as exc:
        return str(exc)
    return None


def apply_patches(scenario: Any, patches: Mapping[str, Any], *, patched: bool = False) -> Any:
    """Validate a new scenario: ``scenario`` with each dotted path set.

    Args:
        scenario: the base :class:`~sim.scenario.Scenario`.
        patches: dotted path -> value, applied in order.
        patched: the result is an intervention's materialisation, whose own
            intervention entries are not re-checked.

    Raises:
        ScenarioError: a path leads nowhere, or the result is invalid.
    """
    from sim.scenario._load import problems_from_validation
    from sim.scenario._yaml import Located

    cls = type(scenario)
    data = scenario.to_data()
    problems: list[Problem] = []
    for path, value in patches.items():
        try:
            set_path(data, path, value, cls)
        except PathError as exc:
            problems.append(Problem("<apply>", 0, 0, path, str(exc)))
    if problems:
        raise ScenarioError(problems)
    try:
        return cls.model_validate(data, context={"patched": patched})
    except ValidationError as exc:
        # located without positions: problems get the paths as patched, at line 0
        raise ScenarioError(problems_from_validation(exc, Located(data, source="<apply>"),
                                                     "<apply>")) from None
