"""Sweep designs: the variants a sweep runs, from ``--vary`` flags or a sweep file.

A design is a grid over dotted scenario paths (every combination), or lists
zipped position by position; the key ``interventions`` varies which named
interventions are on. Each point is a :class:`Variant`: an id (``v0000``…, in
design order) and the values it sets.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sim import Scenario, ScenarioError, SimError
from sim.scenario import parse_assignment, parse_value, problems_from_validation, read_yaml

__all__ = ["INTERVENTIONS", "SweepFile", "Variant", "design", "parse_vary", "read_design"]

INTERVENTIONS = "interventions"
"""The design key whose values are sets of interventions to enable (``a+b``, ``none``)."""


@dataclass(frozen=True)
class Variant:
    """One point of a sweep design: an id and the values it sets."""

    id: str
    values: dict[str, Any]

    def describe(self) -> str:
        """The variant's values as a design writes them: ``path=1.5, interventions=a+b``."""
        def text(value: Any) -> str:
            if isinstance(value, list):
                return "+".join(value) or "none"
            return json.dumps(value) if isinstance(value, bool) or value is None else str(value)

        return ", ".join(f"{k}={text(v)}" for k, v in self.values.items())

    def scenario(self, base: Scenario) -> Scenario:
        """``base`` with this variant's interventions and paths applied.

        Raises:
            ScenarioError: the variant breaks a rule; each problem names the
                variant and its values (``variant v0003 (…=1.5): path: message``).
        """
        where = f"variant {self.id} ({self.describe()})"
        values = dict(self.values)
        overrides: dict[str, Any] = {}
        if INTERVENTIONS in values:
            chosen = values.pop(INTERVENTIONS)
            on = set(chosen)
            overrides.update({f"interventions.{n}.enabled": n in on for n in base.interventions})
            unknown = sorted(on - set(base.interventions))
            if unknown:
                raise ScenarioError.single(
                    where, f"unknown intervention {unknown[0]!r} (known: "
                           f"{', '.join(base.interventions) or 'none'})", path=INTERVENTIONS)
        overrides.update(values)
        try:
            return base.apply(overrides=overrides)
        except ScenarioError as exc:
            raise ScenarioError([replace(p, source=where) for p in exc.problems]) from None


def parse_vary(spec: str) -> tuple[str, list[Any]]:
    """``PATH=V1,V2,…`` -> (path, values); ``interventions=a+b,none`` -> sets of names.

    Each value is read like ``journey run --set`` reads one
    (:func:`sim.scenario.parse_value`: a YAML 1.2 scalar).
    """
    path, rest = parse_assignment(spec, flag="--vary", form="PATH=V1,V2,…",
                                  example="touchpoints.email.reach.use=0.1,0.2")
    items = [v.strip() for v in rest.split(",")]
    if any(not v for v in items):
        raise SimError(f"--vary {spec}: an empty value between commas")
    if path == INTERVENTIONS:
        return path, [[] if v == "none" else [n.strip() for n in v.split("+")] for v in items]
    return path, [parse_value(v, flag="--vary", spec=spec) for v in items]


def design(vary: Mapping[str, Sequence[Any]], *, zip_: bool = False) -> list[Variant]:
    """The variants of a grid (every combination) or of zipped lists (position by position).

    Variant ids are ``v0000``, ``v0001``… in design order, so the same design
    gives the same ids.
    """
    if not vary:
        raise SimError("a sweep needs at least one --vary PATH=V1,V2,…")
    keys = list(vary)
    lists = [list(vary[k]) for k in keys]
    if zip_:
        sizes = {len(v) for v in lists}
        if len(sizes) != 1:
            lengths = ", ".join(f"{k}: {len(v)}" for k, v in zip(keys, lists, strict=True))
            raise SimError(f"--zip needs lists of one length; got {lengths}")
        rows: Iterator[tuple[Any, ...]] = zip(*lists, strict=True)
    else:
        rows = itertools.product(*lists)
    return [Variant(f"v{i:04d}", dict(zip(keys, row, strict=True))) for i, row in enumerate(rows)]


class SweepFile(BaseModel):
    """A sweep file: the design ``journey sweep --design FILE`` runs.

    ``vary`` maps dotted scenario paths (or ``interventions``) to the values
    a variant takes; ``zip: true`` pairs the lists position by position
    instead of taking every combination.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    vary: dict[str, Annotated[list[bool | int | float | str | list[str] | None],
                              Field(min_length=1)]] = Field(min_length=1)
    zip: bool = False

    @field_validator("vary")
    @classmethod
    def _paths(cls, vary: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if any(not key.strip() for key in vary):
            raise ValueError("a path must not be empty")
        return vary


def read_design(path: str | os.PathLike[str]) -> tuple[dict[str, list[Any]], bool]:
    """Read a sweep file (see :class:`SweepFile`); every problem names its line.

    Raises:
        ScenarioError: unreadable, not YAML, or breaking the sweep file's schema.
    """
    p = Path(path)
    source = str(p)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ScenarioError.single(source, f"cannot read the sweep file: "
                                           f"{exc.strerror or exc}") from None
    located = read_yaml(raw, source)
    if not isinstance(located.data, dict):
        raise ScenarioError.single(source, "a sweep file is a mapping: vary: {PATH: [V1, V2, "
                                           "…]} and optional zip: true", line=1, column=1)
    try:
        spec = SweepFile.model_validate(located.data)
    except ValidationError as exc:
        raise ScenarioError(problems_from_validation(exc, located, source, SweepFile)) from None
    vary: dict[str, list[Any]] = {}
    for key, values in spec.vary.items():
        if key == INTERVENTIONS:
            values = [[] if v in ("none", None) else
                      ([v] if isinstance(v, str) else list(v)) for v in values]  # type: ignore
        vary[key] = list(values)
    return vary, spec.zip
