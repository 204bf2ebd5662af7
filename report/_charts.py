"""Charts of one run: Sankey of flows, funnel, occupancy, retention, money.

Each builder takes a :class:`~report._data.RunData` and returns a
:class:`Chart` (a titled plotly figure) or None when the run has no data for
it. Counts are means per replicate; intervals are 95% Student-t intervals
over replicates, as in the KPI table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import pyarrow as pa

from report._cube import cube
from report._data import RunData
from sim.scenario import dates
from sim.stats import mean_interval

__all__ = ["Chart", "funnel", "money_over_time", "occupancy", "retention", "sankey",
           "spend_by_item"]

KIND_COLOUR = {"prospect": "#4C78A8", "customer": "#54A24B", "lost": "#E45756",
               "source": "#9D9D9D"}
PALETTE = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6",
           "#9D755D", "#EECA3B", "#BAB0AC")
ALL = "all segments"
SHADES = {"prospect": ("#2E5E8C", "#4C78A8", "#7FA6D1", "#B3CDE8", "#1B3B5A", "#9EC3E6"),
          "customer": ("#2F6B2A", "#54A24B", "#88C47F", "#B9DDB2", "#1D4A1A", "#A4D69C"),
          "lost": ("#9E2A2B", "#E45756", "#F28E8C", "#F9C0BF", "#6B1A1B", "#FFB3B3")}


Band = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""x, mean, 95% low, 95% high."""


@dataclass
class Chart:
    """One titled figure of the report.

    Attributes:
        key: a stable id (the figure's HTML id and PNG file name).
        title: what a reader sees above the chart.
        figure: the plotly figure (its own title says the same with units).
        note: one or two sentences under the title: what is counted, how.
        slide: whether ``--png`` exports it.
    """

    key: str
    title: str
    figure: go.Figure
    note: str = ""
    slide: bool = True


def rgba(colour: str, alpha: float) -> str:
    """``#rrggbb`` as an ``rgba()`` string with opacity ``alpha``."""
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def layout(fig: go.Figure, title: str, x: str | None = None, y: str | None = None,
           height: int = 480, subtitle: str = "") -> go.Figure:
    """The report's common layout: title (with units), axis titles with units, white template."""
    head: dict[str, object] = {"text": title, "x": 0.01, "xanchor": "left"}
    if subtitle:
        head["subtitle"] = {"text": subtitle}
    fig.update_layout(title=head,
                      template="plotly_white", height=height,
                      margin={"l": 70, "r": 30, "t": 100 if subtitle else 80, "b": 60},
                      legend={"orientation": "v"}, font={"family": "Arial, sans-serif"})
    if x is not None:
        fig.update_xaxes(title_text=x)
    if y is not None:
        fig.update_yaxes(title_text=y)
    return fig


def segment_menu(fig: go.Figure, groups: Sequence[str], traces_per_group: Sequence[int],
                 y: float = 1.18) -> None:
    """A dropdown that shows one group of traces (``ALL`` first, then each segment)."""
    total = sum(traces_per_group)
    buttons = []
    start = 0
    for name, count in zip(groups, traces_per_group, strict=True):
        visible = [start <= i < start + count for i in range(total)]
        buttons.append({"label": name, "method": "update", "args": [{"visible": visible}]})
        start += count
    fig.update_layout(updatemenus=[{"buttons": buttons, "direction": "down", "x": 1.0,
                                    "xanchor": "right", "y": y, "yanchor": "top",
                                    "showactive": True}])


def stage_colours(run: RunData) -> dict[str, str]:
    """A colour per stage: blues for prospect, greens for customer, reds for lost stages."""
    out = {}
    for kind, shades in SHADES.items():
        for i, stage in enumerate(run.scenario.stages_of_kind(kind)):
            out[stage] = shades[i % len(shades)]
    return out


def _days(run: RunData) -> str:
    return f"{run.scenario.time.horizon_days:g}-day horizon"


def per_replicate(run: RunData) -> str:
    """What a chart of counts per replicate shows: ``one replicate`` or ``mean of N
    replicates``."""
    n = run.replicates
    return "one replicate" if n == 1 else f"mean of {n} replicates"


def _full(run: RunData) -> float:
    """What turns simulated agents into the scenario's full population (1 / scale)."""
    return 1.0 / run.population_scale


def _replicates(run: RunData) -> list[int]:
    return sorted(set(run.tables["kpis"].column("replicate").to_pylist()))


def sankey(run: RunData) -> Chart | None:
    """Stage → stage flows over the horizon, with entries, churn and win-back, by segment."""
    scen = run.scenario
    stages = list(scen.stages)
    segments = list(scen.segments)
    reps = _replicates(run)
    flows = run.tables["flows"]
    sources = ["initial population", "arrivals", "referrals"]
    # flows: [rep, segment, from, to]; arrival/referral rows have no from_stage
    trans = flows.filter(flows.column("kind").to_numpy(zero_copy_only=False) == "transition")
    moved = cube(trans, [("segment", segments), ("from_stage", stages), ("to_stage", stages)],
                 "count", reps).mean(axis=0) * _full(run)
    entries = np.zeros((len(segments), 3, len(stages)))
    for k, kind in enumerate(("arrival", "referral"), start=1):
        rows = flows.filter(flows.column("kind").to_numpy(zero_copy_only=False) == kind)
        entries[:, k] = cube(rows, [("segment", segments), ("to_stage", stages)], "count",
                             reps).mean(axis=0) * _full(run)
    occ = run.tables["occupancy"]
    start = occ.filter(occ.column("step").to_numpy() == 0)
    entries[:, 0] = cube(start, [("segment", segments), ("stage", stages)], "count",
                         reps).mean(axis=0) * _full(run)
    if moved.sum() + entries.sum() == 0:
        return None
    kinds = ["source"] * 3 + [scen.stages[s].kind for s in stages]
    colours = [KIND_COLOUR[k] for k in kinds]
    labels = sources + [f"{s} ({scen.stages[s].kind})" for s in stages]
    groups = [ALL, *segments]
    fig = go.Figure()
    for gi, _ in enumerate(groups):
        sel = slice(None) if gi == 0 else slice(gi - 1, gi)
        m = moved[sel].sum(axis=0)
        e = entries[sel].sum(axis=0)
        src, dst, val, col, hover = [], [], [], [], []
        for i in range(3):
            for j in np.nonzero(e[i] > 0)[0]:
                src.append(i)
                dst.append(3 + int(j))
                val.append(float(e[i, j]))
        for i, j in zip(*np.nonzero(m > 0), strict=True):
            src.append(3 + int(i))
            dst.append(3 + int(j))
            val.append(float(m[i, j]))
        for a, b in zip(src, dst, strict=True):
            move = (kinds[a], kinds[b])
            col.append(rgba(colours[b] if move in (("customer", "lost"), ("lost", "customer"))
                            else colours[a], 0.45))
            what = {("customer", "lost"): "churn", ("lost", "customer"): "win-back"}.get(
                move, "entry" if kinds[a] == "source" else "move")
            hover.append(what)
        fig.add_trace(go.Sankey(
            visible=gi == 0, name=groups[gi], arrangement="snap", valueformat=",.0f",
            valuesuffix=" agents",
            node={"label": labels, "color": colours, "pad": 18, "thickness": 16,
                  "hovertemplate": "%{label}<br>%{value:,.0f} agents in<extra></extra>"},
            link={"source": src, "target": dst, "value": val, "color": col,
                  "customdata": hover,
                  "hovertemplate": "%{source.label} → %{target.label} (%{customdata})<br>"
                                   "%{value:,.0f} agents<extra></extra>"}))
    segment_menu(fig, groups, [1] * len(groups), y=1.12)
    layout(fig, f"Journey flows over the {_days(run)} (agents, {per_replicate(run)})", height=560,
           subtitle="stage → stage moves; churn into lost stages (red), win-back out of them")
    return Chart("sankey", "Journey flows (Sankey)", fig,
                 "Each band is a number of agents that moved from one stage to another over "
                 "the horizon; entries come from the initial population, arrivals and "
                 "referrals. Green stages are customer stages, red ones lost. Choose a segment "
                 "in the menu.")


def _entries(run: RunData) -> np.ndarray:
    """Entries into each stage by segment, for the full population: [rep, segment, stage]."""
    scen = run.scenario
    stages, segments, reps = list(scen.stages), list(scen.segments), _replicates(run)
    flows = run.tables["flows"]
    into = cube(flows, [("segment", segments), ("to_stage", stages)], "count", reps)
    occ = run.tables["occupancy"]
    start = occ.filter(occ.column("step").to_numpy() == 0)
    return (into + cube(start, [("segment", segments), ("stage", stages)], "count", reps)) \
        * _full(run)


def funnel(run: RunData) -> Chart | None:
    """Agents entering each prospect and customer stage, stage by stage, by segment."""
    scen = run.scenario
    order = scen.stages_of_kind("prospect") + scen.stages_of_kind("customer")
    if len(order) < 2:
        return None
    stages, segments = list(scen.stages), list(scen.segments)
    idx = [stages.index(s) for s in order]
    into = _entries(run)[:, :, idx].mean(axis=0)                     # [segment, stage]
    fig = go.Figure()
    for gi, seg in enumerate(segments):
        fig.add_trace(go.Funnel(name=seg, y=order, x=into[gi], textinfo="value",
                                texttemplate="%{value:,.0f}",
                                marker={"color": PALETTE[gi % len(PALETTE)]},
                                hovertemplate=f"{seg}<br>%{{y}}: %{{x:,.0f}} agents"
                                              f"<extra></extra>"))
    fig.update_layout(funnelmode="stack")
    layout(fig, f"Funnel: agents entering each stage (agents, {per_replicate(run)})",
           subtitle=f"over the {_days(run)}, stacked by segment",
           x="agents entering the stage (prospect stages, then customer stages)")
    total = into.sum(axis=0)
    first = total[0] if total[0] > 0 else np.nan
    pct = ", ".join(f"{s} {100 * v / first:.0f}%" for s, v in zip(order, total, strict=True))
    return Chart("funnel", "Funnel by segment", fig,
                 "Agents entering each stage (initial placements, arrivals and moves in; an "
                 "agent that re-enters a stage counts again), prospect stages then customer "
                 f"stages in the scenario's order. Relative to the first stage: {pct}.")


def calendar(run: RunData, days: np.ndarray) -> np.ndarray:
    """The x values of a chart over the run's time: dates when the scenario has a
    ``time.start_date``, else days."""
    at = dates(run.scenario.time, np.asarray(days, dtype=float))
    return at if at is not None else np.asarray(days, dtype=float)


def time_title(run: RunData) -> str:
    """The title of a chart's time axis: ``date`` or ``day``."""
    return "date" if run.scenario.time.start_date is not None else "day"


def occupancy(run: RunData) -> Chart | None:
    """Stage counts over time, stacked, for all segments and each one."""
    scen = run.scenario
    stages, segments, reps = list(scen.stages), list(scen.segments), _replicates(run)
    occ = run.tables["occupancy"]
    steps = scen.steps
    counts = cube(occ, [("step", list(range(steps + 1))), ("segment", segments),
                        ("stage", stages)], "count", reps).mean(axis=0) * _full(run)
    days = calendar(run, np.arange(steps + 1) * scen.time.step_days)
    groups = [ALL, *segments]
    fig = go.Figure()
    colour = stage_colours(run)
    for gi, group in enumerate(groups):
        data = counts.sum(axis=1) if gi == 0 else counts[:, gi - 1]
        for si, stage in enumerate(stages):
            fig.add_trace(go.Scatter(
                x=days, y=data[:, si], name=stage, stackgroup="one", mode="lines",
                line={"width": 0.5, "color": colour[stage]}, fillcolor=colour[stage],
                legendgroup=stage, visible=gi == 0,
                hovertemplate=f"{group}<br>{stage}: %{{y:,.0f}} agents on "
                              f"{_x_hover(days)}<extra></extra>"))
    segment_menu(fig, groups, [len(stages)] * len(groups))
    layout(fig, f"Stage occupancy over time (agents, {per_replicate(run)})",
           subtitle="agents in each stage at the end of each step, stacked",
           x=time_title(run), y="agents in the stage")
    return Chart("occupancy", "Stage occupancy over time", fig,
                 "Agents in each stage at the end of each step, stacked; blue prospect, "
                 "green customer, red lost stages. Choose a segment in the menu.")


def retention_bands(run: RunData) -> Band:
    """Retention share by days since acquisition: (days, mean, low, high), defined lags only."""
    ret = run.tables["retention"]
    reps = _replicates(run)
    lags = sorted(set(ret.column("lag_steps").to_pylist()))
    share = cube(ret, [("lag_steps", lags)], "share", reps)
    eligible = cube(ret, [("lag_steps", lags)], "eligible", reps)
    share[eligible == 0] = np.nan
    mean, low, high = mean_interval(share, bounds=(0.0, 1.0))
    days = np.array(lags, dtype=float) * run.scenario.time.step_days
    cohort = eligible.mean(axis=0)
    ok = ~np.isnan(mean) & (cohort >= min_cohort(cohort))
    return days[ok], mean[ok], low[ok], high[ok]


def min_cohort(cohort: np.ndarray) -> float:
    """Smallest mean cohort a retention point is shown for: 20 customers, or 2% of the largest."""
    return max(20.0, 0.02 * float(cohort.max(initial=0.0)))


def _x_hover(x: np.ndarray) -> str:
    """How a hover label shows a point's time: its date, or its day."""
    return "%{x|%d %b %Y}" if np.asarray(x).dtype.kind == "M" else "day %{x:g}"


def band_traces(x: np.ndarray, mean: np.ndarray, low: np.ndarray, high: np.ndarray,
                name: str, colour: str, unit: str, scale: float = 1.0,
                dash: str = "solid") -> list[go.Scatter]:
    """A mean line with a shaded 95% band (no band where the interval is undefined)."""
    traces: list[go.Scatter] = []
    has_band = np.isfinite(low).any()
    if x.size == 1:  # no area to shade: a point with its interval
        err = {"type": "data", "visible": bool(has_band),
               "array": np.nan_to_num(high - mean) * scale,
               "arrayminus": np.nan_to_num(mean - low) * scale}
        return [go.Scatter(x=x, y=mean * scale, name=name, mode="markers", legendgroup=name,
                           marker={"color": colour, "size": 9, "symbol": "diamond"},
                           error_y=err)]
    if has_band:
        lo, hi = np.where(np.isfinite(low), low, mean), np.where(np.isfinite(high), high, mean)
        traces.append(go.Scatter(x=np.concatenate([x, x[::-1]]),
                                 y=np.concatenate([hi, lo[::-1]]) * scale,
                                 fill="toself", fillcolor=rgba(colour, 0.18), mode="lines",
                                 line={"width": 0}, hoverinfo="skip", legendgroup=name,
                                 name=f"{name}: 95% CI", showlegend=True))
    traces.append(go.Scatter(x=x, y=mean * scale, name=name, mode="lines", legendgroup=name,
                             line={"color": colour, "width": 2, "dash": dash},
                             hovertemplate=f"{name}<br>{_x_hover(x)}: %{{y:.3g}}{unit}"
                                           f"<extra></extra>"))
    return traces


def retention(run: RunData) -> Chart | None:
    """The cohort retention curve with its 95% band, marks at 90/180/365 days."""
    days, mean, low, high = retention_bands(run)
    if days.size == 0:
        return None
    fig = go.Figure(band_traces(days, mean, low, high, "retained", PALETTE[2], "%", 100.0))
    for d in (90, 180, 365):
        if days.size and d <= days.max():
            fig.add_vline(x=d, line={"dash": "dot", "color": "#888", "width": 1},
                          annotation_text=f"{d} d", annotation_position="top")
    fig.update_yaxes(rangemode="tozero", ticksuffix="%")
    layout(fig, f"Cohort retention (% of acquired customers, {per_replicate(run)}, 95% CI)",
           subtitle="share in a customer stage by days since acquisition",
           x="days since acquisition",
           y="retained (% of the cohort)")
    note = ("Among customers acquired at least that many days before the horizon, the share "
            "in a customer stage that many days after acquisition. The curve stops where "
            "fewer than 20 customers (or 2% of the cohort) were acquired early enough to be "
            "followed that long.")
    if run.replicates < 2:
        note += " One replicate: no confidence band (run with --replicates 2 or more)."
    return Chart("retention", "Cohort retention curve", fig, note)


def money_bands(run: RunData) -> dict[str, Band]:
    """Cumulative revenue and cost by day: {name: (days, mean, low, high)}."""
    led = run.tables["ledger"]
    reps = _replicates(run)
    steps = run.scenario.steps
    grid = list(range(steps + 1))
    kind = np.asarray(led.column("kind").to_numpy(zero_copy_only=False))
    out: dict[str, Band] = {}
    bounds = run.bounds
    for name, mask in (("revenue", kind == "revenue"), ("cost", kind != "revenue")):
        per_step = cube(led.filter(mask), [("step", grid)], "amount", reps)
        mean, low, high = mean_interval(np.cumsum(per_step, axis=1), bounds=bounds[name])
        out[name] = (calendar(run, np.array(grid, dtype=float) * run.scenario.time.step_days),
                     mean, low, high)
    return out


def money_over_time(run: RunData) -> Chart | None:
    """Cumulative revenue and cost with 95% bands."""
    cur = run.scenario.economics.currency
    bands = money_bands(run)
    fig = go.Figure()
    for (name, (x, mean, low, high)), colour in zip(bands.items(), (PALETTE[2], PALETTE[3]),
                                                    strict=True):
        fig.add_traces(band_traces(x, mean, low, high, f"cumulative {name}", colour,
                                   f" {cur}"))
    layout(fig, f"Cumulative revenue and cost ({cur}, {per_replicate(run)}, 95% CI)",
           x=time_title(run), y=f"cumulative amount ({cur})")
    return Chart("money", "Revenue and cost over time", fig,
                 "Revenue is the stages' values earned (on entry and per day); cost is "
                 "touchpoint exposures and fixed costs plus intervention costs.")


def spend_by_item(run: RunData) -> Chart | None:
    """Total cost of each touchpoint and intervention over the horizon, with 95% CIs."""
    cur = run.scenario.economics.currency
    led = run.tables["ledger"]
    kind = np.asarray(led.column("kind").to_numpy(zero_copy_only=False))
    costs = led.filter(kind != "revenue")
    if costs.num_rows == 0:
        return None
    items = list(dict.fromkeys(costs.column("item").to_pylist()))
    item_kind = dict(zip(costs.column("item").to_pylist(),
                         costs.column("kind").to_pylist(), strict=True))
    total = cube(costs, [("item", items)], "amount", _replicates(run))
    mean, low, high = mean_interval(total, bounds=(0.0, np.inf))
    order = np.argsort(mean)
    plus = np.where(np.isfinite(high), high - mean, 0.0)[order]
    minus = np.where(np.isfinite(low), mean - low, 0.0)[order]
    fig = go.Figure(go.Bar(
        x=mean[order], y=[items[i] for i in order], orientation="h",
        error_x={"type": "data", "array": plus, "arrayminus": minus, "symmetric": False,
                 "visible": bool(np.isfinite(high).any())},
        marker={"color": [PALETTE[0] if item_kind[items[i]] == "touchpoint" else PALETTE[1]
                          for i in order]},
        customdata=[item_kind[items[i]] for i in order],
        hovertemplate=f"%{{y}} (%{{customdata}}): %{{x:,.0f}} {cur}<extra></extra>"))
    layout(fig, f"Cost by touchpoint and intervention ({cur}, {per_replicate(run)}, 95% CI)",
           subtitle=f"total over the {_days(run)}", x=f"cost ({cur})", y=None,
           height=max(320, 60 + 34 * len(items)))
    return Chart("cost_by_touchpoint", "Cost by touchpoint", fig,
                 "Blue bars are touchpoints (exposures and fixed costs), orange ones "
                 "interventions.")


def by_month(run: RunData) -> Chart | None:
    """Per calendar month (a scenario with ``time.start_date``): new prospects, new
    customers, churned customers and revenue, means over replicates with 95% CIs."""
    scen = run.scenario
    if scen.time.start_date is None:
        return None
    steps = scen.steps
    reps = _replicates(run)
    grid = list(range(steps + 1))
    at = dates(scen.time, np.arange(steps + 1) * scen.time.step_days)
    assert at is not None
    months = at.astype("datetime64[M]")
    labels = sorted(set(months[1:].tolist()))
    member = np.array([[m == label for m in months] for label in labels], dtype=float)  # [M, T1]
    kinds = {n: st.kind for n, st in scen.stages.items()}
    flows = run.tables["flows"]
    frm = flows.column("from_stage").to_pylist()
    to = flows.column("to_stage").to_pylist()
    kind = flows.column("kind").to_pylist()

    def monthly(mask: list[bool]) -> np.ndarray:
        per_step = cube(flows.filter(pa.array(mask)), [("step", grid)], "count", reps)
        return per_step @ member.T * _full(run)                               # [R, M]

    series = {
        "new prospects": monthly([k in ("arrival", "referral") for k in kind]),
        "new customers": monthly([k == "transition" and kinds.get(f or "") == "prospect"
                                  and kinds.get(t) == "customer"
                                  for k, f, t in zip(kind, frm, to, strict=True)]),
        "churned": monthly([k == "transition" and kinds.get(f or "") == "customer"
                            and kinds.get(t) == "lost"
                            for k, f, t in zip(kind, frm, to, strict=True)]),
    }
    led = run.tables["ledger"]
    revenue = cube(led.filter(pa.array([k == "revenue" for k in led.column("kind").to_pylist()])),
                   [("step", grid)], "amount", reps) @ member.T
    cur = scen.economics.currency
    x = [str(label) for label in labels]
    fig = go.Figure()
    for i, (name, values) in enumerate(series.items()):
        mean, low, high = mean_interval(values, bounds=(0.0, np.inf))
        fig.add_trace(go.Bar(
            x=x, y=mean, name=name, marker={"color": PALETTE[i]},
            error_y={"type": "data", "symmetric": False,
                     "array": np.nan_to_num(high - mean), "arrayminus": np.nan_to_num(mean - low),
                     "visible": bool(np.isfinite(high).any())},
            hovertemplate=f"%{{x}}: {name} %{{y:,.0f}}<extra></extra>"))
    r_mean, _, _ = mean_interval(revenue, bounds=(0.0, np.inf))
    fig.update_layout(barmode="group")
    layout(fig, f"By month (agents, {per_replicate(run)}, 95% CI)",
           subtitle=f"revenue per month ({cur}): " + ", ".join(
               f"{m} {v:,.0f}" for m, v in zip(x[:3], r_mean[:3], strict=False)) + " …",
           x="month", y="agents")
    return Chart("by_month", "By month", fig,
                 "Per calendar month: prospects who arrived or were referred, prospects who "
                 "became customers, customers who were lost. Revenue per month: " + "; ".join(
                     f"{m}: {v:,.0f} {cur}" for m, v in zip(x, r_mean, strict=True)) + ".")
