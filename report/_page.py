"""The report page: one self-contained HTML file (plotly.js inlined), and PNG slides."""

from __future__ import annotations

import contextlib
import html
import math
import os
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from report._charts import Chart, layout
from report._compare import Delta
from report._data import ReportError, RunData
from sim import KPI_DESCRIPTIONS, __version__, kpi_kinds, kpi_names
from sim.display import format_interval, format_kpi, kpi_unit, plural
from sim.metrics import summarise
from sim.stats import FEW_REPLICATES, too_few

__all__ = ["kpi_rows", "render_page", "write_pngs"]

CONFIG = {"displaylogo": False, "responsive": True,
          "toImageButtonOptions": {"format": "png", "scale": 2}}

LOWER_IS_BETTER = {"cost", "churned", "median_days_to_convert", "mean_wait_days",
                   "abandonment"}
"""KPIs whose decrease is an improvement (the others: an increase)."""

CSS = """
body { font-family: Arial, Helvetica, sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 0 24px 48px; color: #222; }
header { border-bottom: 3px solid #4C78A8; margin-bottom: 16px; }
h1 { margin: 24px 0 4px; font-size: 26px; }
h2 { margin: 36px 0 4px; font-size: 20px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.meta, .note { color: #555; font-size: 14px; }
nav { font-size: 14px; line-height: 1.8; }
nav a { margin-right: 14px; color: #4C78A8; text-decoration: none; white-space: nowrap; }
table.kpis { border-collapse: collapse; font-size: 14px; margin-top: 8px; }
table.kpis th, table.kpis td { border-bottom: 1px solid #e4e4e4; padding: 5px 12px;
                               text-align: right; }
table.kpis th:first-child, table.kpis td:first-child,
table.kpis td.what { text-align: left; }
table.kpis td.what { color: #666; max-width: 420px; }
td.better { color: #2F6B2A; font-weight: bold; } td.worse { color: #9E2A2B; font-weight: bold; }
pre { background: #f6f6f6; padding: 12px; font-size: 12px; overflow-x: auto; }
.figure { margin-top: 8px; }
"""


def shown_kpis(run: RunData) -> list[str]:
    """KPIs of the run's scenario (built-in, per-queue, custom) that its kpis table has
    (older datasets lack newer ones)."""
    have = set(run.tables["kpis"].column_names)
    return [k for k in kpi_names(run.scenario) if k in have]


def _description(run: RunData, name: str) -> str:
    """What a KPI counts: the catalogue's words, the custom KPI's description (or its
    expression), or the pooled queue KPI's words for one touchpoint."""
    custom = run.scenario.kpis.get(name)
    if custom is not None:
        return custom.description or custom.expr
    base, _, touchpoint = name.partition(":")
    if touchpoint:
        return f"{KPI_DESCRIPTIONS.get(base, base)}; touchpoint {touchpoint} alone"
    return KPI_DESCRIPTIONS.get(name, "")


def kpi_rows(run: RunData) -> list[dict[str, float | str]]:
    """The KPI summary the page shows: mean and 95% CI of each KPI over replicates."""
    names = shown_kpis(run)
    rows = run.tables["kpis"].select(names).to_pylist()
    bounds = {k: run.bounds.get(k, (-math.inf, math.inf)) for k in names}
    summary = summarise(rows, 0.95, bounds)
    return [{"kpi": k, **{f: summary[k][f] for f in ("mean", "ci_low", "ci_high", "n", "few")}}
            for k in names]


def _num_cell(value: float, name: str, cls: str, currency: str,
              kinds: dict[str, str] | None = None) -> str:
    """A KPI value as `journey run` prints it (:func:`sim.display.format_kpi`), and
    at full precision in ``data-value``."""
    data = "nan" if math.isnan(value) else repr(float(value))
    shown = html.escape(format_kpi(name, value, currency, kinds=kinds))
    return f'<td class="{cls}" data-value="{data}">{shown}</td>'


def _kpi_table(run: RunData) -> str:
    cur = run.scenario.economics.currency
    out = ['<table class="kpis" id="kpi-table"><thead><tr><th>KPI</th><th>mean</th>'
           '<th>95% CI low</th><th>95% CI high</th><th>unit</th><th>what it counts</th>'
           '</tr></thead><tbody>']
    kinds = kpi_kinds(run.scenario)
    for row in kpi_rows(run):
        name = str(row["kpi"])
        out.append(f'<tr data-kpi="{html.escape(name)}"><td>{html.escape(name)}</td>'
                   f'{_num_cell(float(row["mean"]), name, "mean", cur, kinds)}'
                   f'{_num_cell(float(row["ci_low"]), name, "ci_low", cur, kinds)}'
                   f'{_num_cell(float(row["ci_high"]), name, "ci_high", cur, kinds)}'
                   f'<td>{html.escape(kpi_unit(name, cur, kinds))}</td>'
                   f'<td class="what">{html.escape(_description(run, name))}</td>'
                   f'</tr>')
    out.append("</tbody></table>")
    if run.replicates < 2:
        out.append('<p class="note">One replicate: confidence intervals need at least two '
                   '(journey run --replicates).</p>')
    elif too_few(run.replicates):
        out.append(f'<p class="note" id="few-replicates">Intervals over {run.replicates} '
                   f'replicates are wide and say little: run {FEW_REPLICATES} or more '
                   f'(journey run --replicates) for intervals that mean much.</p>')
    out.append('<p class="note">Intervals stay inside each KPI\'s range: shares on the logit '
               'scale, counts and money on the log scale (Student-t over replicates, mapped '
               'back).</p>')
    return "".join(out)


def _delta_table(deltas: Sequence[Delta], currency: str) -> str:
    out = ['<table class="kpis" id="delta-table"><thead><tr><th>KPI</th><th>alternative</th>'
           '<th>baseline</th><th>alternative</th><th>delta</th><th>95% CI of the delta</th>'
           '<th>unit</th><th>interval</th></tr></thead><tbody>']
    for d in deltas:
        sig = ""  # coloured when the interval excludes zero: green better, red worse
        if math.isfinite(d.low) and (d.low > 0 or d.high < 0):
            better = (d.low > 0) != (d.kpi in LOWER_IS_BETTER)
            sig = "better" if better else "worse"
        ci = format_interval(d.kpi, d.low, d.high, currency, delta=True)
        base, value = format_kpi(d.kpi, d.base, currency), format_kpi(d.kpi, d.value, currency)
        delta = format_kpi(d.kpi, d.delta, currency, delta=True)
        out.append(f'<tr data-kpi="{d.kpi}"><td>{d.kpi}</td><td>{html.escape(d.alternative)}'
                   f'</td><td>{html.escape(base)}</td><td>{html.escape(value)}</td>'
                   f'<td class="delta {sig}" data-value="{d.delta!r}">{html.escape(delta)}'
                   f'</td><td class="{sig}">{html.escape(ci)}</td>'
                   f'<td>{html.escape(kpi_unit(d.kpi, currency))}</td>'
                   f'<td>{"paired (same seeds)" if d.paired else "Welch"}</td></tr>')
    out.append("</tbody></table><p class=\"note\">Green: better than the baseline, red: worse, "
               "where the 95% interval of the difference excludes zero.</p>")
    return "".join(out)


def safe_id(text: str) -> str:
    """An HTML id / file name made of letters, digits, ``_`` and ``-``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text)


def _figure(chart: Chart) -> str:
    body = pio.to_html(chart.figure, include_plotlyjs=False, full_html=False,
                       div_id=f"fig-{safe_id(chart.key)}", config=CONFIG,
                       default_width="100%", default_height=f"{chart.figure.layout.height}px")
    note = f'<p class="note">{html.escape(chart.note)}</p>' if chart.note else ""
    return (f'<section class="chart" id="{safe_id(chart.key)}" data-chart="{chart.key}">'
            f"<h2>{html.escape(chart.title)}</h2>{note}<div class=\"figure\">{body}</div>"
            f"</section>")


def render_page(run: RunData, sections: Sequence[tuple[str, Sequence[Chart]]],
                deltas: Sequence[Delta] = (), compared: Sequence[RunData] = (),
                absent: Sequence[tuple[str, str]] = ()) -> str:
    """The whole report as one HTML document with plotly.js inlined (opens offline)."""
    scen = run.scenario
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    seeds = ", ".join(str(s) for s in run.seeds[:6]) + (" …" if len(run.seeds) > 6 else "")
    scale = (f"population scale {run.population_scale:g} (KPIs, money and the charts' counts "
             f"are for the scenario's full population)" if run.population_scale != 1
             else "population scale 1")
    meta = (f"Dataset {html.escape(run.root)}; run {html.escape(run.run_id)}; variant "
            f"{html.escape(run.variant)}; "
            f"{plural(run.replicates, 'replicate')}, base seed {run.base_seed} (replicate seeds "
            f"{seeds}); engine {html.escape(run.engine)}; {scale}; "
            f"{scen.steps} steps of {scen.time.step_days:g} days "
            f"({scen.time.horizon_days:g} days); money in {html.escape(scen.economics.currency)}"
            f"; written by journey-engine {html.escape(run.version)}.")
    nav = ['<a href="#kpis">KPIs</a>']
    body = [f'<section id="kpis"><h2>KPI summary (mean over replicates, 95% CI)</h2>'
            f"{_kpi_table(run)}</section>"]
    if deltas:
        nav.append('<a href="#compare">Comparison</a>')
        names = ", ".join(html.escape(f"{r.label} ({r.root})") for r in compared)
        body.append(f'<section id="compare"><h2>Comparison: baseline {html.escape(run.label)} '
                    f"against {names}</h2>{_delta_table(deltas, scen.economics.currency)}"
                    f"</section>")
    for heading, charts in sections:
        if not charts:
            continue
        anchor = safe_id(charts[0].key)
        nav.append(f'<a href="#{anchor}">{html.escape(heading)}</a>')
        body.extend(_figure(c) for c in charts)
    desc = f'<p class="meta">{html.escape(scen.description)}</p>' if scen.description else ""
    if absent:
        missing = "; ".join(f"{html.escape(h)}: {html.escape(why)}" for h, why in absent)
        body.insert(1, f'<p class="note" id="absent">Not shown — {missing}.</p>')
    yaml_text = html.escape(scen.to_yaml())
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<meta name=\"generator\" content=\"journey-engine {html.escape(__version__)}\">"
        f"<title>Journey report: {html.escape(run.label)}</title><style>{CSS}</style>"
        f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>"
        f"<header><h1>Journey report: {html.escape(run.label)}</h1>{desc}"
        f"<p class=\"meta\">{meta}</p><p class=\"meta\">Generated {when}.</p>"
        f"<nav>{''.join(nav)}</nav></header>"
        + "".join(body)
        + f"<section id=\"scenario\"><h2>Scenario</h2><details><summary>The scenario as run "
          f"(canonical YAML, hash {html.escape(scen.content_hash[:12])}…)</summary>"
          f"<pre>{yaml_text}</pre></details></section></body></html>\n")


def kpi_figure(run: RunData) -> go.Figure:
    """The KPI summary as a table figure, for a slide."""
    rows = kpi_rows(run)
    cur = run.scenario.economics.currency
    names = [str(r["kpi"]) for r in rows]
    values = [names,
              [format_kpi(n, float(r["mean"]), cur) for n, r in zip(names, rows, strict=True)],
              [format_interval(n, float(r["ci_low"]), float(r["ci_high"]), cur)
               for n, r in zip(names, rows, strict=True)],
              [kpi_unit(n, cur) for n in names]]
    fig = go.Figure(go.Table(header={"values": ["KPI", "mean", "95% CI", "unit"],
                                     "align": "left", "fill_color": "#4C78A8",
                                     "font": {"color": "white"}},
                             cells={"values": values, "align": "left", "height": 26}))
    scale = "" if run.population_scale == 1 else (
        f", simulated at population scale {run.population_scale:g} (full-population figures)")
    few = " — too few replicates for tight intervals" if too_few(run.replicates) else ""
    return layout(fig, f"{run.label}: KPIs over {plural(run.replicates, 'replicate')} "
                       f"(mean, 95% CI)"
                       f"{scale}{few}", height=720)


def write_pngs(charts: Sequence[Chart], folder: Path, width: int = 1280,
               height: int = 720) -> list[Path]:
    """Export the slide charts as PNG with kaleido (it drives an installed Chrome/Chromium).

    Raises:
        ReportError: no Chrome or Chromium to render with, or the export failed.
    """
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise ReportError("PNG export needs kaleido: pip install 'journey-engine[report]'"
                          ) from None
    folder.mkdir(parents=True, exist_ok=True)
    slides = [c for c in charts if c.slide]
    finals = [folder / f"{safe_id(c.key)}.png" for c in slides]
    tmps = [folder / f".{p.name}.{uuid.uuid4().hex}.tmp" for p in finals]
    figs = []
    for c in slides:
        fig = go.Figure(c.figure)
        fig.layout.updatemenus = ()
        figs.append(fig)
    heights = [max(height, int(f.layout.height or height)) for f in figs]
    try:
        pio.write_images(figs, tmps, format="png", width=width, height=heights, scale=1)
    except Exception as exc:  # kaleido/choreographer raise their own families
        for tmp in tmps:
            with contextlib.suppress(OSError):
                tmp.unlink()
        name = type(exc).__name__
        if "ChromeNotFound" in name or "chrome" in str(exc).lower():
            raise ReportError("PNG export needs Chrome or Chromium on this machine (Debian: "
                              "apt-get install chromium; or BROWSER_PATH=/path/to/chrome); "
                              f"kaleido said: {str(exc).splitlines()[0] if str(exc) else name}"
                              ) from None
        raise ReportError(f"PNG export failed: {name}: {str(exc).splitlines()[0:1]}") from None
    for tmp, final in zip(tmps, finals, strict=True):
        os.replace(tmp, final)
    return finals
