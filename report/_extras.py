"""Charts of what lies beside a run when present: queues, optimisation, calibration."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pyarrow as pa
import pyarrow.compute as pc

from report._charts import (
    PALETTE,
    Chart,
    band_traces,
    calendar,
    layout,
    per_replicate,
    rgba,
    time_title,
)
from report._cube import cube
from report._data import (
    Attribution,
    Calibration,
    DiscoveryCheck,
    ReportError,
    RunData,
    Sensitivity,
    Study,
)
from sim.display import DASH, format_number, plural
from sim.stats import mean_interval

__all__ = ["attribution_charts", "calibration_charts", "discovery_charts", "queue_charts",
           "sensitivity_charts",
           "study_charts"]


def _num(table: pa.Table, col: str) -> np.ndarray:
    return np.asarray(table.column(col).to_numpy(zero_copy_only=False), dtype=float)


QUEUE_COLUMNS = ("step", "touchpoint", "served", "mean_wait_days", "p90_wait_days",
                 "utilisation")
"""Columns of the event engine's ``queues`` table the charts read."""


def _bucketed(values: np.ndarray, weights: np.ndarray | None, size: int) -> np.ndarray:
    """Average [rep, step] values over consecutive buckets of ``size`` steps (NaN ignored).

    With ``weights`` the average is weighted (waits by the requests served).
    """
    reps, steps = values.shape
    pad = (-steps) % size
    v = np.pad(values, ((0, 0), (0, pad)), constant_values=np.nan).reshape(reps, -1, size)
    w = np.ones_like(v) if weights is None else np.pad(
        weights, ((0, 0), (0, pad))).reshape(reps, -1, size)
    w = np.where(np.isnan(v), 0.0, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.nansum(np.where(w > 0, v * w, 0.0), axis=2)
        return np.where(w.sum(axis=2) > 0, total / w.sum(axis=2), np.nan)


def _series(rows: pa.Table, col: str, steps: list[int], reps: list[int],
            present: np.ndarray) -> np.ndarray:
    """[rep, step] values of one column; NaN where the table has no row (or a null)."""
    filled = rows.set_column(rows.column_names.index(col), col,
                             pc.fill_null(rows.column(col).cast(pa.float64()), np.nan))
    values = cube(filled, [("step", steps)], col, reps)
    values[~present] = np.nan
    return values


def queue_charts(run: RunData) -> list[Chart]:
    """Waits and utilisation of capacity-limited touchpoints (the event engine's queues).

    Daily values are noisy, so they are averaged over buckets of about a sixtieth
    of the horizon (a week on a 400-day run): waits weighted by the requests served.
    """
    q = run.table("queues")
    if q is None or q.num_rows == 0:
        return []
    missing = [c for c in QUEUE_COLUMNS if c not in q.column_names]
    if missing:
        raise ReportError(f"{run.root}: the queues table lacks {', '.join(missing)}")
    scen = run.scenario
    steps = list(range(1, scen.steps + 1))
    size = max(1, math.ceil(len(steps) / 60))
    span = size * scen.time.step_days
    reps = sorted(set(run.tables["kpis"].column("replicate").to_pylist()))
    points = sorted(set(q.column("touchpoint").to_pylist()))
    starts = np.array(steps[::size], dtype=float)
    days = calendar(run, (starts - 1 + np.minimum(size, len(steps) - starts + 1))
                    * scen.time.step_days)
    waits, util = go.Figure(), go.Figure()
    totals = []
    for i, tp in enumerate(points):
        rows = q.filter(pc.equal(q.column("touchpoint"), tp))
        present = cube(rows.append_column("rows", pa.array(np.ones(rows.num_rows))),
                       [("step", steps)], "rows", reps) > 0
        served = cube(rows, [("step", steps)], "served", reps)

        colour = PALETTE[i % len(PALETTE)]
        for col, dash, label in (("mean_wait_days", "solid", "mean wait"),
                                 ("p90_wait_days", "dot", "90th percentile wait")):
            values = _series(rows, col, steps, reps, present)
            mean, low, high = mean_interval(_bucketed(values, served, size), bounds=(0.0, np.inf))
            ok = ~np.isnan(mean)
            traces = band_traces(days[ok], mean[ok], low[ok], high[ok],
                                 f"{tp}: {label}", colour, " days", dash=dash)
            waits.add_traces(traces if col == "mean_wait_days" else traces[-1:])
        values = _series(rows, "utilisation", steps, reps, present)
        mean, low, high = mean_interval(_bucketed(values, None, size), bounds=(0.0, 1.0))
        ok = ~np.isnan(mean)
        util.add_traces(band_traces(days[ok], mean[ok], low[ok], high[ok], tp, colour, "%",
                                    100.0))
        counts = {c: float(_num(rows, c).sum() / max(len(reps), 1))
                  for c in ("arrivals", "served", "abandoned") if c in rows.column_names}
        if counts:
            totals.append(f"{tp}: " + ", ".join(f"{format_number(v)} {k}"
                                                for k, v in counts.items()))
    per = per_replicate(run)
    every = f"per {span:g} days" if span != 1 else "per day"
    layout(waits, f"Queue waits at capacity-limited touchpoints (days, {per}, 95% CI)",
           subtitle=f"requests served {every}: mean wait (solid) and 90th percentile (dotted), "
                    f"weighted by the requests served", x=time_title(run), y="wait (days)")
    waits.update_yaxes(rangemode="tozero")
    util.update_yaxes(ticksuffix="%", rangemode="tozero")
    layout(util, f"Utilisation of capacity-limited touchpoints (% of capacity, {per}, 95% CI)",
           subtitle=f"server time spent serving over servers × time, averaged {every}",
           x=time_title(run), y="utilisation (% of capacity)")
    note = "From the event engine's queues table."
    if totals:
        note += " Over the horizon, per replicate: " + "; ".join(totals) + "."
    return [Chart("queue_waits", "Queue waits", waits, note),
            Chart("queue_utilisation", "Touchpoint utilisation", util,
                  "Share of the touchpoint's capacity in use.")]


def _best_so_far(values: list[float | None], maximise: bool) -> list[float | None]:
    best: float | None = None
    out: list[float | None] = []
    for v in values:
        if v is not None and not math.isnan(v) and (
                best is None or (v > best if maximise else v < best)):
            best = v
        out.append(best)
    return out


def study_charts(study: Study) -> list[Chart]:
    """History, parameter importances and (with two objectives) the Pareto front of a study."""
    trials = study.trials.to_pylist()
    objective = str(study.summary.get("objective", "objective"))
    direction = str(study.summary.get("direction", "maximize"))
    maximise = direction != "minimize"
    charts = []
    done = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
    fig = go.Figure()
    for label, rows, colour, symbol in (
            ("feasible", [t for t in done if t.get("feasible") is not False], PALETTE[0],
             "circle"),
            ("infeasible", [t for t in done if t.get("feasible") is False], "#9D9D9D", "x")):
        if rows:
            fig.add_trace(go.Scatter(x=[t["number"] for t in rows], y=[t["value"] for t in rows],
                                     mode="markers", name=f"{label} trial",
                                     marker={"color": colour, "symbol": symbol, "size": 8},
                                     hovertemplate=f"trial %{{x}} ({label}): %{{y:.4g}}"
                                                   f"<extra></extra>"))
    feasible = sorted((t for t in done if t.get("feasible") is not False),
                      key=lambda t: t["number"])
    if feasible:
        fig.add_trace(go.Scatter(x=[t["number"] for t in feasible],
                                 y=_best_so_far([t["value"] for t in feasible], maximise),
                                 mode="lines", line={"shape": "hv", "color": PALETTE[2]},
                                 name="best feasible so far"))
    pruned = sum(1 for t in trials if t["state"] == "PRUNED")
    layout(fig, f"Optimisation history of study {study.name}: {objective} per trial "
                f"({direction})", x="trial number", y=f"{objective} (trial mean)")
    charts.append(Chart(f"optimise_history_{study.name}", f"Optimisation history: {study.name}",
                        fig, f"{plural(len(done), 'complete trial')}, {pruned} pruned early "
                             f"(no value shown), of {len(trials)}. The objective is the mean "
                             f"over the trial's replicates."))
    if study.importances:
        names = sorted(study.importances, key=lambda k: study.importances[k])
        fig = go.Figure(go.Bar(x=[study.importances[n] for n in names], y=names,
                               orientation="h", marker={"color": PALETTE[1]},
                               hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
        layout(fig, f"Parameter importances for {objective} (fANOVA share, sums to 1)",
               x="importance (share of the objective's variance)",
               height=max(300, 80 + 40 * len(names)))
        charts.append(Chart(f"optimise_importances_{study.name}",
                            f"Parameter importances: {study.name}", fig,
                            "How much of the variation of the objective across trials each "
                            "searched parameter explains (Optuna's importance evaluator)."))
    if study.pareto is not None and study.pareto.num_rows:
        charts.append(_pareto(study, objective))
    return charts


def _pareto(study: Study, objective: str) -> Chart:
    assert study.pareto is not None
    p = study.pareto
    fixed = {"trial", "params", objective, f"{objective}_ci_low", f"{objective}_ci_high",
             "feasible"}
    second = next((c for c in p.column_names if c not in fixed), "second objective")
    rows = p.to_pylist()
    fig = go.Figure()
    done = [t for t in study.trials.to_pylist() if t["state"] == "COMPLETE"
            and t["value"] is not None and t["value_2"] is not None]
    if done:
        fig.add_trace(go.Scatter(x=[t["value_2"] for t in done], y=[t["value"] for t in done],
                                 mode="markers", name="all trials",
                                 marker={"color": "#BAB0AC", "size": 6}))
    rows.sort(key=lambda r: float(r.get(second) or 0.0))
    up = [(r[f"{objective}_ci_high"] or r[objective]) - r[objective] for r in rows]
    down = [r[objective] - (r[f"{objective}_ci_low"] or r[objective]) for r in rows]
    fig.add_trace(go.Scatter(
        x=[r.get(second) for r in rows], y=[r[objective] for r in rows], mode="lines+markers",
        name="Pareto front (re-evaluated, 95% CI)",
        marker={"color": [PALETTE[2] if r["feasible"] else PALETTE[3] for r in rows],
                "size": 10},
        line={"color": rgba(PALETTE[2], 0.6), "shape": "hv"},
        error_y={"type": "data", "array": up, "arrayminus": down, "visible": True},
        customdata=[r["trial"] for r in rows],
        hovertemplate=f"trial %{{customdata}}<br>{second}: %{{x:.4g}}<br>{objective}: "
                      f"%{{y:.4g}}<extra></extra>"))
    layout(fig, f"Pareto front of study {study.name}: {objective} against {second}",
           x=second, y=objective)
    return Chart(f"optimise_pareto_{study.name}", f"Pareto front: {study.name}", fig,
                 "Grey: every complete trial; coloured: the front's designs re-evaluated on "
                 "fresh seeds (red where a constraint fails), with 95% CIs.")


TARGET_AXES = {"survival": ("period", "surviving (scale of the observed data)"),
               "occupancy": ("step", "agents in the stage (scale of the observed data)"),
               "funnel": ("stage", "value (scale of the observed data)")}


def _series_name(seg: Any, stage: Any) -> str:
    parts = [str(v) for v in (seg, stage) if v is not None]
    return " / ".join(parts) or "all"


def calibration_charts(cal: Calibration) -> list[Chart]:
    """Observed vs fitted (fit rows) vs projected (holdout rows), one chart per target."""
    rows = cal.fit.to_pylist()
    charts = []
    for target in sorted({str(r["target"]) for r in rows}):
        sub = [r for r in rows if r["target"] == target]
        x_label, y_label = TARGET_AXES.get(target, ("x", "value"))
        categorical = all(r["x"] is None for r in sub)
        fig = go.Figure()
        # a categorical target (funnel) puts its stages on the x axis: one series a segment
        keys = [(r["segment"], None if categorical else r["stage"]) for r in sub]
        groups = list(dict.fromkeys(keys))
        for gi, (seg, stage) in enumerate(groups):
            colour = PALETTE[gi % len(PALETTE)]
            name = _series_name(seg, stage)
            g = [r for r, k in zip(sub, keys, strict=True) if k == (seg, stage)]
            if categorical:
                g_x = [str(r["stage"] or r["segment"] or "all") for r in g]
                _categorical(fig, g, g_x, name if len(groups) > 1 else "", colour)
                continue
            g.sort(key=lambda r: float(r["x"]))
            for role, label, dash, symbol in (("fit", "fitted", "solid", "circle"),
                                              ("holdout", "projected", "dash", "circle-open")):
                part = [r for r in g if r["role"] == role]
                if not part:
                    continue
                x = np.array([float(r["x"]) for r in part])
                mean = np.array([float(r["fitted"]) for r in part])
                low = np.array([np.nan if r["low"] is None else float(r["low"]) for r in part])
                high = np.array([np.nan if r["high"] is None else float(r["high"])
                                 for r in part])
                fig.add_traces(band_traces(x, mean, low, high, f"{name}: {label}", colour, "",
                                           dash=dash))
                fig.add_trace(go.Scatter(
                    x=x, y=[r["observed"] for r in part], mode="markers",
                    name=f"{name}: observed ({'fit' if role == 'fit' else 'held out'})",
                    marker={"color": colour, "symbol": symbol, "size": 7},
                    legendgroup=f"{name}: {label}"))
        layout(fig, f"{target.capitalize()}: observed vs fitted vs projected (95% band)",
               subtitle=f"calibration {cal.name}; {y_label}", x=x_label, y=y_label)
        charts.append(Chart(f"calibration_{cal.name}_{target}",
                            f"Calibration {cal.name}: {target}", fig,
                            "Dots: observed data; solid line: the model fitted to the rows used "
                            "for fitting; dashed line: its projection over held-out rows "
                            "(open dots), with 95% bands."))
    if cal.parameters is not None and cal.parameters.num_rows:
        p = cal.parameters.to_pylist()

        def estimate(r: dict[str, Any]) -> str:
            shown = format_number(r["value"])
            return str(r["value_text"]) if shown == DASH and r.get("value_text") else shown

        # the Monte Carlo standard error beside each interval, when the fit measured it
        mc = any(isinstance(r.get("mc_se"), float) and math.isfinite(r["mc_se"]) for r in p)
        headers = ["parameter", "estimate", "95% CI low", "95% CI high"]
        values = [[r["parameter"] for r in p], [estimate(r) for r in p],
                  [format_number(r.get("low")) for r in p],
                  [format_number(r.get("high")) for r in p]]
        if mc:
            headers.append("MC s.e.")
            values.append([format_number(r.get("mc_se"), 3) for r in p])
        fig = go.Figure(go.Table(
            columnwidth=[4] + [1] * (len(headers) - 1),   # dotted paths are long: keep whole
            header={"values": headers, "align": "left"},
            cells={"values": values, "align": "left"}))
        layout(fig, f"Calibration {cal.name}: fitted parameters (95% CI)",
               height=max(240, 120 + 28 * len(p)))
        charts.append(Chart(f"calibration_{cal.name}_parameters",
                            f"Calibration {cal.name}: parameters", fig,
                            _noise_note(cal) if mc else ""))
    return charts


def _noise_note(cal: Calibration) -> str:
    """The population scale, where it came from, and what the Monte Carlo error says."""
    summary = cal.summary or {}
    mc = summary.get("monte_carlo") or {}
    parts = [f"MC s.e.: Monte Carlo standard error of the mean of the fit and its refits on "
             f"{mc.get('seed_sets', 'other')} other seed sets"]
    if "population_scale" in summary:
        parts.append(f"population scale {format_number(summary['population_scale'])} "
                     f"({summary.get('population_scale_source', 'block')}): "
                     f"{summary.get('population_scale_reason', '')}".rstrip(": "))
    parts += [str(n) for n in mc.get("notes", [])]
    return ". ".join(parts) + "."


def _categorical(fig: go.Figure, g: list[dict[str, Any]], xs: list[str], name: str,
                 colour: str) -> None:
    prefix = f"{name}: " if name else ""
    fig.add_trace(go.Bar(x=xs, y=[r["observed"] for r in g], name=f"{prefix}observed",
                         marker={"color": rgba(colour, 0.55),
                                 "pattern": {"shape": ["" if r["role"] == "fit" else "/"
                                                       for r in g]}}))
    fig.add_trace(go.Scatter(
        x=xs, y=[r["fitted"] for r in g], mode="markers",
        name=f"{prefix}fitted (hatched bars: held out, projected)",
        marker={"color": colour, "size": 10, "symbol": "diamond"},
        error_y={"type": "data", "visible": True,
                 "array": [(r["high"] - r["fitted"]) if r["high"] is not None else 0
                           for r in g],
                 "arrayminus": [(r["fitted"] - r["low"]) if r["low"] is not None else 0
                                for r in g]}))


SENSITIVITY_BARS = {"sobol": (("s1", "s1_conf", "first-order S1"), ("st", "st_conf", "total ST")),
                    "morris": (("mu_star", "mu_star_conf", "μ*"), ("sigma", None, "σ"))}


def sensitivity_charts(analysis: Sensitivity) -> list[Chart]:
    """One chart per KPI: each parameter's indices with their 95% intervals."""
    rows = analysis.indices.to_pylist()
    charts = []
    for kpi in dict.fromkeys(str(r["kpi"]) for r in rows):
        mine = [r for r in rows if r["kpi"] == kpi]
        first = SENSITIVITY_BARS[analysis.method][0][0]
        mine.sort(key=lambda r: float(r[first]))
        fig = go.Figure()
        for i, (col, conf, label) in enumerate(SENSITIVITY_BARS[analysis.method]):
            errors = [float(r[conf]) for r in mine] if conf else None
            fig.add_trace(go.Bar(
                x=[float(r[col]) for r in mine], y=[str(r["parameter"]) for r in mine],
                orientation="h", name=label, marker={"color": PALETTE[i]},
                error_x={"type": "data", "array": errors, "visible": errors is not None},
                hovertemplate=f"%{{y}}: {label} %{{x:.3f}}<extra></extra>"))
        fig.update_layout(barmode="group")
        what = ("Sobol indices (share of the KPI's variance)" if analysis.method == "sobol"
                else "Morris elementary effects")
        layout(fig, f"Sensitivity of {kpi}: {what}, 95% CI", x="index",
               height=max(320, 80 + 50 * len(mine)))
        note = ("S1: the share of the KPI's variance each parameter explains alone; ST: with "
                "its interactions. Bars are SALib's 95% bootstrap intervals."
                if analysis.method == "sobol" else
                "μ*: the mean absolute elementary effect (how much the parameter moves the "
                "KPI); σ: its spread (interactions, non-linearity).")
        charts.append(Chart(f"sensitivity_{analysis.method}_{kpi}",
                            f"Sensitivity ({analysis.method}): {kpi}", fig, note))
    return charts


def discovery_charts(check: DiscoveryCheck) -> list[Chart]:
    """The log a draft was discovered from against the draft's own runs: each stage's
    occupancy and the initial cohort's survival, observed (dotted) over the simulated
    mean and one run's 95% band."""
    t = check.table
    curve = t.column("curve").to_pylist()
    day, obs, mean = _num(t, "day"), _num(t, "observed"), _num(t, "simulated")
    low, high = _num(t, "low"), _num(t, "high")
    inside = np.asarray(t.column("inside").to_pylist(), dtype=bool)
    charts = []
    for key, title, names, unit, scale in (
            ("occupancy", "Occupancy: the log against its draft", None, "", 1.0),
            ("survival", "Survival of the initial cohort: the log against its draft",
             ["survival"], "%", 100.0)):
        stages = [c for c in dict.fromkeys(curve) if c != "survival"] if names is None else names
        fig = go.Figure()
        hits = []
        for i, name in enumerate(stages):
            rows = np.array([c == name for c in curve])
            if not rows.any():
                continue
            colour = PALETTE[i % len(PALETTE)]
            fig.add_traces(band_traces(day[rows], mean[rows], low[rows], high[rows],
                                       f"{name}: draft", colour, unit, scale))
            fig.add_trace(go.Scatter(x=day[rows], y=obs[rows] * scale, name=f"{name}: log",
                                     mode="lines", legendgroup=f"{name}: draft",
                                     line={"color": colour, "width": 1.5, "dash": "dot"}))
            hits += list(inside[rows])
        if not hits:
            continue
        layout(fig, f"{title} ({check.name})",
               subtitle=f"log dotted; draft: mean of {plural(check.replicates, 'run')} and one "
                        "run's 95% band", x="day",
               y="customers" if names is None else "still customers (%)")
        if names is not None:
            fig.update_yaxes(ticksuffix="%", range=[0, 100])
        share = sum(hits) / len(hits)
        charts.append(Chart(f"discovery_{key}_{check.name}", title.split(":")[0], fig,
                            f"The log lies inside the draft's band at {100 * share:.1f}% of "
                            f"{plural(len(hits), 'point')}."))
    return charts


def attribution_charts(attribution: Attribution) -> list[Chart]:
    """Per touchpoint, in acquired customers: the true removal effect and Shapley value
    (95% CIs) beside the Markov, last-touch and first-touch credits; and the removal
    effects on each attributed KPI."""
    rows = attribution.side_by_side.to_pylist()
    rows.sort(key=lambda r: float(r["removal_effect"]) if r["removal_effect"] == r[
        "removal_effect"] else -math.inf)
    names = [str(r["touchpoint"]) for r in rows]
    fig = go.Figure()
    bars = [("removal_effect", "removal_low", "removal_high", "removal effect (truth)"),
            ("shapley", "shapley_low", "shapley_high", "Shapley value (truth)"),
            ("markov", None, None, "Markov (paths)"), ("last_touch", None, None, "last touch"),
            ("first_touch", None, None, "first touch")]
    for i, (col, low, high, label) in enumerate(bars):
        x = [float(r[col]) if r[col] is not None else math.nan for r in rows]
        if all(math.isnan(v) for v in x):
            continue
        error = None
        if low is not None and high is not None:
            error = {"type": "data", "symmetric": False, "visible": True,
                     "array": [float(r[high]) - v for r, v in zip(rows, x, strict=True)],
                     "arrayminus": [v - float(r[low]) for r, v in zip(rows, x, strict=True)]}
        fig.add_trace(go.Bar(x=x, y=names, orientation="h", name=label,
                             marker={"color": PALETTE[i % len(PALETTE)]}, error_x=error,
                             hovertemplate=f"%{{y}}: {label} %{{x:,.1f}}<extra></extra>"))
    fig.update_layout(barmode="group")
    summary = attribution.summary
    how = summary.get("shapley") or "not computed"
    reps = plural(summary.get("replicates", 0), "replicate")
    layout(fig, "Acquired customers per touchpoint: truth beside the path methods",
           subtitle=f"attribution {attribution.name}; {reps} per run, Shapley {how}",
           x="acquired customers (full population)",
           height=max(360, 80 + 60 * len(rows)))
    charts = [Chart(f"attribution_{attribution.name}", f"Attribution {attribution.name}", fig,
                    "Removal effect: acquired customers with everything on minus without the "
                    "touchpoint (runs on common random numbers, 95% CI). Shapley: its average "
                    "marginal effect over all orders. Markov, last and first touch credit "
                    "conversions along the simulated paths: a touchpoint that meets customers "
                    "who would have converted anyway gets credit there but little effect.")]
    removal = [r for r in attribution.removal.to_pylist() if r["segment"] is None]
    kpis = list(dict.fromkeys(str(r["kpi"]) for r in removal))
    if removal:
        names = list(dict.fromkeys(str(r["name"]) for r in removal))
        by = {(r["name"], r["kpi"]): r for r in removal}

        def cell(name: str, kpi: str) -> str:
            r = by.get((name, kpi))
            if r is None:
                return DASH
            return (f"{format_number(r['effect'])} ({format_number(r['ci_low'])} … "
                    f"{format_number(r['ci_high'])})")

        table = go.Figure(go.Table(
            header={"values": ["touchpoint / intervention", *kpis, "cost"], "align": "left"},
            cells={"values": [names, *[[cell(n, k) for n in names] for k in kpis],
                              [format_number(by[(n, kpis[0])]["cost"]) for n in names]],
                   "align": "left"}))
        layout(table, "Removal effects per KPI (95% CI)", height=max(300, 60 + 30 * len(names)))
        charts.append(Chart(f"attribution_{attribution.name}_removal",
                            f"Attribution {attribution.name}: removal effects", table,
                            "Each KPI with everything on minus with the touchpoint or "
                            "intervention switched off, for the full population."))
    return charts
