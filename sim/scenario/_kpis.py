"""The KPIs of a scenario: the built-in ones, one set per capacity-limited touchpoint,
and the custom ones of its ``kpis:`` block.

Every name here is usable wherever a KPI name is (``optimise.objective.kpi``,
``optimise.constraints.kpis``, ``--kpi``); :mod:`sim.metrics` computes them all.
"""

from __future__ import annotations

from typing import Any

from sim._kpi_catalogue import KPI_NAMES, QUEUE_KPIS, kpi_kind, queue_kpi
from sim._kpi_expr import Context
from sim.scenario._schema import ScenarioFields

__all__ = ["expression_context", "kpi_kinds", "kpi_names", "queued_touchpoints"]


def _gives_capacity(path: str, value: Any, name: str) -> bool:
    if path == f"touchpoints.{name}.capacity":
        return value is not None
    if path == f"touchpoints.{name}":
        return isinstance(value, dict) and value.get("capacity") is not None
    return False


def _touchpoints_named(s: ScenarioFields) -> list[str]:
    """Touchpoints of the scenario, then those its interventions add, in file order."""
    names = list(s.touchpoints)
    for iv in s.interventions.values():
        for path in iv.set:
            parts = path.split(".")
            if len(parts) >= 2 and parts[0] == "touchpoints" and parts[1] not in names:
                names.append(parts[1])
    return names


def queued_touchpoints(s: ScenarioFields) -> list[str]:
    """Touchpoints that have a capacity in the scenario or in one of its interventions
    (the ones whose queue KPIs exist), in file order."""
    out = []
    for name in _touchpoints_named(s):
        tp = s.touchpoints.get(name)
        if (tp is not None and tp.capacity is not None) or any(
                _gives_capacity(path, value, name)
                for iv in s.interventions.values() for path, value in iv.set.items()):
            out.append(name)
    return out


def _queue_names(s: ScenarioFields) -> list[str]:
    return [queue_kpi(k, t) for t in queued_touchpoints(s) for k in QUEUE_KPIS]


def kpi_names(s: ScenarioFields) -> tuple[str, ...]:
    """Every KPI of a scenario's runs: the built-in ones, ``mean_wait_days:T``,
    ``served_within_target:T`` and ``abandonment:T`` for each capacity-limited
    touchpoint T, and the custom ones, in that order (the ``kpis`` table's columns)."""
    return (*KPI_NAMES, *_queue_names(s), *s.kpis)


def kpi_kinds(s: ScenarioFields) -> dict[str, str]:
    """The kind of every KPI of :func:`kpi_names` (:data:`sim.KPI_KINDS`)."""
    kinds = {name: kpi_kind(name) for name in (*KPI_NAMES, *_queue_names(s))}
    kinds.update({name: k.kind for name, k in s.kpis.items()})
    return kinds


def expression_context(s: ScenarioFields, before: str | None = None) -> Context:
    """The names a custom KPI's expression may use: every scenario name, and the
    KPIs defined before the custom KPI ``before`` (all of them when None)."""
    custom = list(s.kpis)
    if before is not None:
        custom = custom[: custom.index(before)]
    return Context(stages=list(s.stages), segments=list(s.segments),
                   touchpoints=_touchpoints_named(s),
                   items=[*_touchpoints_named(s), *s.interventions],
                   kpis=[*KPI_NAMES, *custom], queue_kpis=_queue_names(s),
                   horizon_days=s.time.horizon_days)
