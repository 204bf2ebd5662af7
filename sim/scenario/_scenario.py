"""The public :class:`Scenario`: the schema's fields, the rules across them, variants.

:class:`~sim.scenario._schema.ScenarioFields` holds the data;
this adds what needs the rooms above the data: validation across fields
(:func:`~sim.scenario._checks.cross_check`, run by pydantic after the fields)
and variants by patches (:meth:`Scenario.apply`, :meth:`Scenario.materialise`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from sim.scenario._checks import cross_check
from sim.scenario._patch import apply_patches, materialise, materialise_weighted
from sim.scenario._schema import ScenarioFields

__all__ = ["Scenario", "json_schema"]


class Scenario(ScenarioFields):
    """A customer journey: the whole input of a run.

    Load one with :func:`sim.load_scenario`; derive variants with
    :meth:`apply`. A scenario is immutable, has a canonical YAML text
    (:meth:`to_yaml`) and a content hash (:attr:`content_hash`).

    Example:
        >>> import sim
        >>> s = sim.load_scenario('''
        ... name: tiny
        ... time: {horizon_days: 30}
        ... population: {initial: [{stage: browsing, count: 100}]}
        ... stages:
        ...   browsing: {kind: prospect, exits: {buying: 0.1}}
        ...   buying: {kind: customer}
        ... ''')
        >>> faster = s.apply(overrides={"stages.browsing.exits.buying.p": 0.2})
        >>> faster.stage_exit_p("browsing", "buying")
        0.2
    """

    @model_validator(mode="after")
    def _cross_fields(self, info: ValidationInfo) -> Scenario:
        context = info.context if isinstance(info.context, dict) else {}
        problems = [p for p in cross_check(self, check_patches=not context.get("patched"))
                    if p.severity == "error"]
        if problems:
            summary = "; ".join(f"{'.'.join(map(str, p.loc))}: {p.message}" for p in problems)
            raise PydanticCustomError("scenario_rules", "{summary}",
                                      {"summary": summary,
                                       "problems": [(p.loc, p.message) for p in problems]})
        return self

    # --- variants --------------------------------------------------------

    def apply(self, interventions: Iterable[str] = (),
              overrides: Mapping[str, Any] | None = None) -> Scenario:
        """A new scenario with interventions enabled and parameters overridden.

        Args:
            interventions: names of interventions to enable.
            overrides: dotted path -> value, e.g.
                ``{"touchpoints.email.reach.use": 0.3}``; a path may end in a
                new name under a collection (a new lift, a new touchpoint).

        Returns:
            The validated new scenario.

        Raises:
            ScenarioError: an unknown intervention or path, or a result that
                breaks a rule of the schema.
        """
        patches: dict[str, Any] = {}
        for name in interventions:
            patches[f"interventions.{name}.enabled"] = True
        patches.update(overrides or {})
        return apply_patches(self, patches)

    def materialise(self, active: Iterable[str]) -> Scenario:
        """The scenario with the ``set`` patches of ``active`` interventions merged in.

        Windows are not consulted: the caller chooses what is active when.
        """
        return materialise(self, active)

    def materialise_weighted(self, active: Iterable[tuple[str, float]]) -> Scenario:
        """The scenario with each ``(intervention, weight)``'s ``set`` numbers weighted
        between the base value and its own (a shaped intervention's effect at a step)."""
        return materialise_weighted(self, active)


def json_schema() -> dict[str, Any]:
    """JSON Schema of scenario files, short forms included.

    pydantic describes the canonical form; the file format also accepts a bare
    number for an exit rate (its ``p``) and one number for a touchpoint's reach
    (every active stage), so those two places get an ``anyOf``.
    """
    doc = Scenario.model_json_schema()
    defs = doc["$defs"]
    exits = defs["Stage"]["properties"]["exits"]
    exits["additionalProperties"] = {"anyOf": [
        {"type": "number", "minimum": 0, "maximum": 1,
         "description": "per-step probability (short for {p: ...})"},
        exits["additionalProperties"]]}
    reach = defs["Touchpoint"]["properties"]["reach"]
    defs["Touchpoint"]["properties"]["reach"] = {"anyOf": [
        {"type": "number", "minimum": 0, "maximum": 1,
         "description": "one exposure probability for every active stage"}, reach]}
    doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    doc["title"] = "Journey engine scenario"
    return doc
