"""A baseline beside alternatives: KPI deltas with 95% CIs and overlaid curves."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from report._charts import (
    PALETTE,
    Band,
    Chart,
    band_traces,
    calendar,
    layout,
    money_bands,
    retention_bands,
    time_title,
)
from report._cube import cube
from report._data import RunData
from sim import KPI_NAMES
from sim.stats import mean_interval, paired_or_welch

__all__ = ["Delta", "compare_charts", "kpi_deltas"]


@dataclass(frozen=True)
class Delta:
    """One KPI of an alternative against the baseline."""

    kpi: str
    alternative: str
    base: float
    value: float
    delta: float
    low: float
    high: float
    paired: bool

    @property
    def relative(self) -> tuple[float, float, float]:
        """Delta and its interval in % of the baseline mean (NaN when that is 0 or NaN)."""
        if not self.base or math.isnan(self.base):
            return math.nan, math.nan, math.nan
        s = 100.0 / abs(self.base)
        return self.delta * s, self.low * s, self.high * s


def _kpi_values(run: RunData, name: str) -> np.ndarray:
    return np.asarray(run.tables["kpis"].column(name).to_numpy(zero_copy_only=False),
                      dtype=float)


def kpi_deltas(base: RunData, alternatives: list[RunData]) -> list[Delta]:
    """Each alternative's KPIs minus the baseline's, with 95% CIs.

    The difference is paired (per replicate) when both runs used the same
    replicate seeds — common random numbers — and Welch's otherwise.
    """
    out = []
    for alt in alternatives:
        paired = alt.seeds == base.seeds
        have = set(base.tables["kpis"].column_names) & set(alt.tables["kpis"].column_names)
        for name in (k for k in KPI_NAMES if k in have):
            a, b = _kpi_values(base, name), _kpi_values(alt, name)
            delta, low, high = paired_or_welch(a, b, paired)
            out.append(Delta(name, alt_label(alt, base), float(np.nanmean(a)) if
                             np.isfinite(a).any() else math.nan,
                             float(np.nanmean(b)) if np.isfinite(b).any() else math.nan,
                             delta, low, high, paired))
    return out


def alt_label(run: RunData, base: RunData | None = None) -> str:
    """The run's label, with its folder when it would be ambiguous."""
    if base is not None and run.label == base.label:
        return f"{run.label} ({run.root})"
    return run.label


def _customers(run: RunData) -> Band:
    scen = run.scenario
    reps = sorted(set(run.tables["kpis"].column("replicate").to_pylist()))
    steps = list(range(scen.steps + 1))
    occ = run.tables["occupancy"]
    customer = set(scen.stages_of_kind("customer"))
    mask = np.array([s in customer for s in occ.column("stage").to_pylist()], dtype=bool)
    counts = cube(occ.filter(mask), [("step", steps)], "count", reps) / run.population_scale
    mean, low, high = mean_interval(counts, bounds=(0.0, np.inf))
    return calendar(run, np.array(steps, dtype=float) * scen.time.step_days), mean, low, high


def compare_charts(base: RunData, alternatives: list[RunData],
                   deltas: list[Delta]) -> list[Chart]:
    """Relative KPI deltas, and retention, customers and money overlaid for every run."""
    runs = [base, *alternatives]
    names = [f"baseline: {base.label}"] + [alt_label(r, base) for r in alternatives]
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(runs))]
    charts = []
    fig = go.Figure()
    for i, alt in enumerate(alternatives):
        rows = [d for d in deltas if d.alternative == alt_label(alt, base)
                and not math.isnan(d.relative[0])]
        rel = [d.relative for d in rows]
        fig.add_trace(go.Scatter(
            y=[d.kpi for d in rows], x=[r[0] for r in rel], mode="markers", name=names[i + 1],
            marker={"color": colours[i + 1], "size": 9},
            error_x={"type": "data", "visible": True,
                     "array": [r[2] - r[0] if math.isfinite(r[2]) else 0 for r in rel],
                     "arrayminus": [r[0] - r[1] if math.isfinite(r[1]) else 0 for r in rel]},
            hovertemplate="%{y}: %{x:+.1f}% of the baseline<extra></extra>"))
    fig.add_vline(x=0, line={"color": "#444", "width": 1})
    fig.update_xaxes(ticksuffix="%")
    fig.update_yaxes(autorange="reversed")
    layout(fig, "KPI change against the baseline (% of the baseline mean, 95% CI)",
           x="change (% of the baseline mean)", height=max(420, 60 + 26 * len(KPI_NAMES)))
    charts.append(Chart("compare_kpis", "KPI deltas against the baseline", fig,
                        "Paired differences per replicate when the runs share their seeds "
                        "(common random numbers), Welch intervals otherwise."))
    fig = go.Figure()
    for run, name, colour in zip(runs, names, colours, strict=True):
        days, mean, low, high = retention_bands(run)
        fig.add_traces(band_traces(days, mean, low, high, name, colour, "%", 100.0))
    fig.update_yaxes(ticksuffix="%", rangemode="tozero")
    layout(fig, "Cohort retention, overlaid (% of the cohort, 95% CI)",
           x="days since acquisition", y="retained (% of the cohort)")
    charts.append(Chart("compare_retention", "Retention curves, overlaid", fig))
    fig = go.Figure()
    for run, name, colour in zip(runs, names, colours, strict=True):
        fig.add_traces(band_traces(*_customers(run), name, colour, " agents"))
    layout(fig, "Customers over time, overlaid (agents in customer stages, 95% CI)",
           x=time_title(base), y="agents in customer stages")
    charts.append(Chart("compare_customers", "Customers over time, overlaid", fig))
    cur = base.scenario.economics.currency
    fig = go.Figure()
    for run, name, colour in zip(runs, names, colours, strict=True):
        for kind, dash in (("revenue", "solid"), ("cost", "dash")):
            fig.add_traces(band_traces(*money_bands(run)[kind], f"{name}: {kind}", colour,
                                       f" {cur}", dash=dash))
    layout(fig, f"Cumulative revenue (solid) and cost (dashed), overlaid ({cur}, 95% CI)",
           x=time_title(base), y=f"cumulative amount ({cur})")
    charts.append(Chart("compare_money", "Revenue and cost, overlaid", fig))
    return charts
