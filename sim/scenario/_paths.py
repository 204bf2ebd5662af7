"""Paths into a scenario: dotted paths over its data, locations in its schema.

A path such as ``touchpoints.email.reach.use`` walks the scenario's data
alongside its schema: a name under a model must be one of its fields, a name
under a collection (``touchpoints``, ``lift``, ``reach``…) must exist unless
it is the last part of the path, where it adds an entry. List items are
addressed by index (``population.initial.0.count``). The schema is passed in
(any pydantic model), so patches, checks and error messages share one walk.
"""

from __future__ import annotations

import copy
import types
import typing
from typing import Any, Union

from pydantic import BaseModel

from sim._errors import hint

__all__ = ["Loc", "PathError", "check_path", "model_at", "set_path"]

Loc = tuple[str | int, ...]
"""A location in scenario data: keys and list indices, outermost first."""

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


def get_path(data: dict[str, Any], path: str, model: type[BaseModel]) -> Any:
    """The value at ``path`` in plain scenario ``data``, or None where it is not set.

    Raises:
        PathError: the path does not lead anywhere.
    """
    container, key, _ = _walk(data, path, model)
    if isinstance(container, dict):
        return container.get(key)
    return container[key]


def check_path(data: dict[str, Any], path: str, model: type[BaseModel]) -> str | None:
    """Why ``path`` does not lead anywhere in ``data``, or None when it does."""
    try:
        _walk(data, path, model)
    except PathError as exc:
        return str(exc)
    return None


def model_at(loc: Loc, root: type[BaseModel]) -> type[BaseModel] | None:
    """The schema model that the data at ``loc`` (a validation location) is validated
    against when ``root`` is validated, if any."""
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
