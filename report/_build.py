"""From a dataset folder to the report file: which charts, in which order."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from report._charts import (
    Chart,
    by_month,
    funnel,
    money_over_time,
    occupancy,
    retention,
    sankey,
    spend_by_item,
)
from report._compare import compare_charts, kpi_deltas
from report._data import (
    ReportError,
    RunData,
    load_attributions,
    load_calibrations,
    load_discovery_checks,
    load_run,
    load_sensitivities,
    load_studies,
)
from report._extras import (
    attribution_charts,
    calibration_charts,
    discovery_charts,
    queue_charts,
    sensitivity_charts,
    study_charts,
)
from report._page import kpi_figure, render_page, write_pngs
from sim.results import write_file_atomic

__all__ = ["Report", "default_path", "write_report"]

log = logging.getLogger(__name__)


WHY_ABSENT = {
    "Flows": "no agent entered or moved during the run",
    "Funnel": "the journey has fewer than two prospect and customer stages",
    "Occupancy": "the run has no steps",
    "Retention": "fewer than 20 customers were acquired during the run (customers placed in "
                 "a customer stage at the start are not acquisitions)",
    "Revenue and cost": "the run has no money accounts",
    "Cost by touchpoint": "the scenario has no touchpoint or intervention costs",
}
"""Why a chart of the journey is missing, said on the page."""


@dataclass(frozen=True)
class Report:
    """What :func:`write_report` wrote.

    Attributes:
        path: the HTML file.
        charts: keys of the charts on the page, in page order.
        pngs: PNG files written (with ``png``).
        run: the run the report shows.
    """

    path: Path
    charts: list[str]
    run: RunData = field(repr=False)
    pngs: list[Path] = field(default_factory=list)


def default_path(run: RunData) -> Path:
    """``DIR/report-<scenario>.html`` (``-<variant>`` added unless it is ``base``)."""
    suffix = "" if run.variant == "base" else f"-{run.variant}"
    return Path(run.root) / f"report-{run.scenario.name}{suffix}.html"


def write_report(dataset: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
                 compare: Sequence[str | os.PathLike[str]] = (),
                 compare_variants: Sequence[str] = (),
                 png: str | os.PathLike[str] | None = None, scenario: str | None = None,
                 variant: str | None = None, seed: int | None = None,
                 seeds: Sequence[int] | None = None, run_id: str | None = None,
                 engine: str | None = None, population_scale: float | None = None) -> Report:
    """Write the HTML report of one run of a results dataset.

    Args:
        dataset: the folder ``journey run --out`` wrote.
        out: the HTML file (default :func:`default_path`).
        compare: folders of alternatives, each shown beside this run (the baseline);
            where a folder holds several runs, the one of the same scenario is taken.
        compare_variants: variants of the same scenario in ``dataset`` to show beside it.
        png: a folder to export the main charts to as PNG (needs Chrome or Chromium).
        scenario, variant, seed, run_id, engine, population_scale: choose the run
            when the folder holds several (``journey runs`` lists them).
        seeds: keep only these replicate seeds (what one ``sim.run`` call wrote).

    Returns:
        The file written and the charts on it.

    Raises:
        ReportError: the folder is not a dataset, or a run cannot be chosen or read.

    Example:
        >>> import report
        >>> report.write_report("results", "report.html")  # doctest: +SKIP
    """
    run = load_run(dataset, scenario=scenario, variant=variant, seed=seed,
                   seeds=list(seeds) if seeds is not None else None, run_id=run_id,
                   engine=engine, population_scale=population_scale)
    alternatives = []
    for other in compare:
        name = run.scenario.name
        alternatives.append(load_run(other, scenario=name if _has(other, name) else None))
    for other_variant in compare_variants:
        alternatives.append(load_run(dataset, scenario=run.scenario.name, variant=other_variant))
    deltas = kpi_deltas(run, alternatives) if alternatives else []
    sections: list[tuple[str, list[Chart]]] = []
    if alternatives:
        sections.append(("Comparison charts", compare_charts(run, alternatives, deltas)))
    absent: list[tuple[str, str]] = []
    for heading, build in (("Flows", sankey), ("Funnel", funnel), ("Occupancy", occupancy),
                           ("Retention", retention), ("Revenue and cost", money_over_time),
                           ("Cost by touchpoint", spend_by_item)):
        chart = build(run)
        sections.append((heading, [chart] if chart is not None else []))
        if chart is None:
            absent.append((heading, WHY_ABSENT[heading]))
    month = by_month(run)
    if month is not None:
        sections.append(("By month", [month]))
    sections.append(("Queues", queue_charts(run)))
    studies = [c for s in load_studies(run.root) for c in study_charts(s)]
    sections.append(("Optimisation", studies))
    calibrations = [c for cal in load_calibrations(run.root) for c in calibration_charts(cal)]
    sections.append(("Calibration", calibrations))
    checks = [c for ch in load_discovery_checks(run.root, run.scenario.name)
              for c in discovery_charts(ch)]
    sections.append(("Discovery", checks))
    analyses = [c for a in load_sensitivities(run.root, run.scenario.name)
                for c in sensitivity_charts(a)]
    sections.append(("Sensitivity", analyses))
    attributions = [c for a in load_attributions(run.root, run.scenario.name)
                    for c in attribution_charts(a)]
    sections.append(("Attribution", attributions))
    page = render_page(run, sections, deltas, alternatives, absent)
    path = Path(out) if out is not None else default_path(run)
    if path.is_dir():
        raise ReportError(f"{path} is a folder: --out names the HTML file to write")
    write_file_atomic(path, page.encode("utf-8"))
    charts = [c for _, cs in sections for c in cs]
    pngs = []
    if png is not None:
        kpis = Chart("kpis", "KPI summary", kpi_figure(run))
        pngs = write_pngs([kpis, *charts], Path(png))
    return Report(path=path, charts=[c.key for c in charts], run=run, pngs=pngs)


def _has(root: str | os.PathLike[str], scenario: str) -> bool:
    """Whether ``root`` has a kpis partition for ``scenario``."""
    return (Path(root) / "kpis" / f"scenario={scenario}").is_dir()
