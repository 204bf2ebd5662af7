"""Patches of a scenario: dotted paths set to new values, the result validated again.

Interventions, ``--set`` overrides and the points of a search are all patches
(:func:`apply_patches`); an intervention's own patches are merged in by
:func:`materialise`. The paths are walked by :mod:`sim.scenario._paths`; a
result that breaks a rule is reported through
:func:`~sim.scenario._problems.problems_from_validation`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import ValidationError

from sim._errors import Problem, ScenarioError, unknown_name
from sim.scenario._paths import PathError, get_path, set_path
from sim.scenario._problems import problems_from_validation
from sim.scenario._schema import ScenarioFields
from sim.scenario._yaml import Located

__all__ = ["apply_patches", "materialise", "materialise_weighted"]

S = TypeVar("S", bound=ScenarioFields)


def apply_patches(scenario: S, patches: Mapping[str, Any], *, patched: bool = False) -> S:
    """Validate a new scenario: ``scenario`` with each dotted path set.

    Args:
        scenario: the base :class:`~sim.scenario.Scenario`; the result has its type
            (and is validated by it).
        patches: dotted path -> value, applied in order.
        patched: the result is an intervention's materialisation, whose own
            intervention entries are not re-checked.

    Raises:
        ScenarioError: a path leads nowhere, or the result is invalid.
    """
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
                                                     "<apply>", cls)) from None


def materialise(scenario: S, active: Iterable[str]) -> S:
    """``scenario`` with the ``set`` patches of the ``active`` interventions merged in.

    Windows are not consulted: the caller chooses what is active when.

    Raises:
        ScenarioError: an unknown intervention, or a result that breaks a rule.
    """
    active = list(active)
    missing = [n for n in active if n not in scenario.interventions]
    if missing:
        raise ScenarioError([Problem("<apply>", 0, 0, f"interventions.{n}",
                                     unknown_name("intervention", n, scenario.interventions))
                             for n in missing])
    patches: dict[str, Any] = {}
    for name in active:
        patches.update(scenario.interventions[name].set)
    return apply_patches(scenario, patches, patched=True) if patches else scenario


def materialise_weighted(scenario: S, active: Iterable[tuple[str, float]]) -> S:
    """``scenario`` with the ``set`` patches of interventions merged in, each at a weight
    in [0, 1]: a number becomes ``base + w (set - base)`` (a value the scenario does
    not have counts as 0); at weight 1 this is :func:`materialise`.

    Raises:
        ScenarioError: an unknown intervention, a shaped patch of something other than
            a number, or a result that breaks a rule.
    """
    active = list(active)
    if all(w == 1.0 for _, w in active):
        return materialise(scenario, [n for n, _ in active])
    missing = [n for n, _ in active if n not in scenario.interventions]
    if missing:
        raise ScenarioError([Problem("<apply>", 0, 0, f"interventions.{n}",
                                     unknown_name("intervention", n, scenario.interventions))
                             for n in missing])
    data = scenario.to_data()
    patches: dict[str, Any] = {}
    for name, weight in active:
        for path, value in scenario.interventions[name].set.items():
            if weight == 1.0:
                patches[path] = value
                continue
            try:
                base = get_path(data, path, type(scenario))
            except PathError as exc:
                raise ScenarioError([Problem("<apply>", 0, 0, f"interventions.{name}.set",
                                             str(exc))]) from None
            if isinstance(base, dict) and "p" in base:     # an exit rate written as p
                base = base["p"]
            base = 0.0 if base is None or isinstance(base, (bool, dict, list)) else base
            patches[path] = float(base) + weight * (float(value) - float(base))
    return apply_patches(scenario, patches, patched=True) if patches else scenario
