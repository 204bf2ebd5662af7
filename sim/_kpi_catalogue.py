"""The catalogue of per-run KPIs (one row of the ``kpis`` table): names, meanings, kinds.

The scenario's cross-field checks validate ``optimise.objective.kpi`` against
these names; ``sim.metrics`` computes them; ``sim.display`` writes each in the
unit of its kind.
"""

from __future__ import annotations

__all__ = ["CUSTOM_KINDS", "KPI_DESCRIPTIONS", "KPI_KINDS", "KPI_NAMES", "QUEUE_KPIS", "kpi_kind",
           "queue_kpi"]

KPI_DESCRIPTIONS: dict[str, str] = {
    "entrants": "agents that entered the journey during the run (arrivals and referrals)",
    "acquired": "agents that reached a customer stage for the first time",
    "conversion": "acquired / (initial prospects + entrants)",
    "retention_90": "share in a customer stage 90 days after acquisition",
    "retention_180": "share in a customer stage 180 days after acquisition",
    "retention_365": "share in a customer stage 365 days after acquisition",
    "churned": "moves from a customer stage to a lost stage",
    "won_back": "moves from a lost stage to a customer stage",
    "revenue": "stage values earned over the horizon (currency)",
    "cost": "touchpoint and intervention costs over the horizon (currency)",
    "clv": "discounted revenue per acquired customer (currency)",
    "roi": "(revenue - cost) / cost",
    "referrals": "prospects brought in by referrals",
    "reviews": "reviews posted",
    "rating": "public rating at the horizon",
    "nps": "promoters minus detractors among customers at the horizon, in points",
    "median_days_to_convert": "median days from entry to first acquisition",
    "mean_wait_days": "mean wait of the requests served by capacity-limited touchpoints "
                      "(event engine; NaN without queues)",
    "served_within_target": "share of the served requests that waited at most their "
                            "touchpoint's target_wait_days (event engine; NaN without queues)",
    "abandonment": "share of the ended waits that ended in abandonment (patience ran out) "
                   "rather than service (event engine; NaN without queues)",
}

KPI_NAMES: tuple[str, ...] = tuple(KPI_DESCRIPTIONS)

KPI_KINDS: dict[str, str] = {
    "entrants": "count",
    "acquired": "count",
    "conversion": "share",
    "retention_90": "share",
    "retention_180": "share",
    "retention_365": "share",
    "churned": "count",
    "won_back": "count",
    "revenue": "money",
    "cost": "money",
    "clv": "money",
    "roi": "ratio",
    "referrals": "count",
    "reviews": "count",
    "rating": "number",
    "nps": "points",
    "median_days_to_convert": "days",
    "mean_wait_days": "days",
    "served_within_target": "share",
    "abandonment": "share",
}
"""What each KPI measures, for display: ``count`` (agents or events), ``share`` (a
fraction in [0, 1], shown as a percentage), ``money`` (the scenario's
``economics.currency``), ``days``, ``ratio`` (a plain quotient), ``points`` (NPS
points) or ``number``. Counts and money are expressed for the scenario's full
population. The kind also decides a KPI's range, hence its interval
(``sim.metrics.kpi_bounds``)."""


QUEUE_KPIS: tuple[str, ...] = ("mean_wait_days", "served_within_target", "abandonment")
"""The queue KPIs, pooled over every capacity-limited touchpoint under these names, and
per touchpoint T as ``NAME:T`` (:func:`queue_kpi`)."""

CUSTOM_KINDS: tuple[str, ...] = ("count", "share", "money", "ratio", "days", "points", "number")
"""Kinds a scenario's custom KPI may declare (``kpis: NAME: {kind: ...}``)."""


def queue_kpi(kpi: str, touchpoint: str) -> str:
    """The name of a queue KPI of one capacity-limited touchpoint:
    ``served_within_target:consult``."""
    return f"{kpi}:{touchpoint}"


def kpi_kind(name: str, kinds: dict[str, str] | None = None) -> str:
    """The kind of a KPI (see :data:`KPI_KINDS`); ``number`` for a name it does not know.

    Every ``retention_D`` is a share, whatever its lag D; a per-queue KPI
    (``served_within_target:consult``) has the kind of its pooled KPI; a custom KPI
    has the kind its scenario gives it in ``kinds``.
    """
    if kinds and name in kinds:
        return kinds[name]
    if name in KPI_KINDS:
        return KPI_KINDS[name]
    base = name.split(":", 1)[0]
    if base != name and base in QUEUE_KPIS:
        return KPI_KINDS[base]
    return "share" if name.startswith("retention_") else "number"
