"""`journey sweep` and `journey sensitivity`: variants run on Dask, then printed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from optimise._cli_common import on_dask, scale_note
from optimise._design import INTERVENTIONS, Variant, design, parse_vary, read_design
from sim import Scenario, SimError, kpi_kinds, kpi_names, load_scenario
from sim.cli import (
    COUNT,
    ENGINE,
    KPI,
    SCALE,
    SEED,
    FormatOption,
    Output,
    check,
    check_kpis,
    err_console,
    few_replicates,
    on_interrupt,
)
from sim.display import (
    Table,
    format_kpi,
    format_number,
    format_pm,
    format_value,
    kpi_unit,
    plural,
)
from sim.stats import too_few

__all__ = ["sensitivity_command", "sweep_command"]


def sweep_command(
    file: Annotated[Path, typer.Argument(help="Scenario file.", show_default=False)],
    vary: Annotated[list[str] | None, typer.Option(
        help="PATH=V1,V2,… (repeat for a grid); interventions=a+b,none sets which "
             "interventions are on.")] = None,
    design_file: Annotated[Path | None, typer.Option(
        "--design", help="Sweep file: vary: {PATH: [V1, V2, …]} and optional zip: true.")
                           ] = None,
    zip_: Annotated[bool, typer.Option("--zip", help="Pair the lists position by position "
                                                     "instead of a grid.")] = False,
    replicates: Annotated[int, typer.Option(help="Replicates per variant.", callback=COUNT)
                          ] = 1,
    out: Annotated[str, typer.Option(help="Dataset folder or pyarrow filesystem URI.")
                   ] = "results",
    seed: Annotated[int | None, typer.Option(help="Base seed (default: the scenario's).",
                                             callback=SEED)] = None,
    population_scale: Annotated[float, typer.Option(help="Scale the population (> 0).",
                                                    callback=SCALE)] = 1.0,
    engine: Annotated[str, typer.Option(help="fast, or des for capacity-limited "
                                             "touchpoints.", callback=ENGINE)] = "fast",
    workers: Annotated[int | None, typer.Option(help="Worker processes of a local Dask "
                                                     "cluster (default: one per core).",
                                                callback=COUNT)] = None,
    scheduler: Annotated[str | None, typer.Option(help="Address of an existing Dask "
                                                       "scheduler.")] = None,
    kpi: Annotated[list[str] | None, typer.Option(help="KPIs to show (default: conversion, "
                                                       "retention_365, revenue, cost; csv and "
                                                       "json: every KPI).", callback=KPI)
                   ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    fmt: FormatOption = "table",
) -> None:
    """Run variants × replicates on Dask into one dataset; KPI means ± 95% CI per variant."""
    from optimise import sweep

    scenario = load_scenario(file)
    check_kpis(scenario, kpi)
    variants = _variants(vary, design_file, zip_)
    on_interrupt(f"finished tasks are stored in {out}")
    result = on_dask(quiet, f"{scenario.name}: {plural(len(variants), 'variant')}",
                     lambda progress: sweep(
                         scenario, variants, replicates=replicates, out=out, seed=seed,
                         population_scale=population_scale, engine=engine, workers=workers,
                         scheduler=scheduler, progress=progress))
    output = Output(fmt, main="summary")
    output.fact("scenario", scenario.name)
    output.fact("variants", [{"variant": v.id, **v.values} for v in variants])
    for replaced in result.replaced:
        err_console.print(str(replaced), markup=False)
    output.table(_summary_table(result, scenario, kpi, population_scale))
    if too_few(replicates):
        output.say(few_replicates(replicates))
    stored = "was" if result.skipped == 1 else "were"
    output.say(f"{plural(result.ran, 'task')} ran, {result.skipped} {stored} already stored; "
               f"dataset: {result.out} (variants: {result.paths[0]})")
    output.fact("paths", result.paths)
    output.finish()


def _variants(vary: list[str] | None, design_file: Path | None, zip_: bool
              ) -> list[Variant]:
    """The design of ``--vary`` flags or of a sweep file (``--design``)."""
    if design_file is not None:
        if vary:
            raise SimError("give --vary or --design, not both")
        grid, zipped = read_design(design_file)
        return design(grid, zip_=zip_ or zipped)
    grid = {}
    for spec in vary or []:
        path, values = parse_vary(spec)
        if path in grid:
            raise SimError(f"--vary {spec}: {path} is given twice")
        grid[path] = values
    return design(grid, zip_=zip_)


def _summary_table(result: Any, scenario: Scenario, kpi: list[str] | None,
                   population_scale: float) -> Table:
    """KPI mean ± 95% CI per variant: the ``kpi`` shown (or four), every KPI as records."""
    money = scenario.economics.currency
    kinds = kpi_kinds(scenario)
    variants = result.variants
    shown = kpi or ["conversion", "retention_365", "revenue", "cost"]
    keys = list(dict.fromkeys(k for v in variants for k in v.values))
    table = Table("summary", f"KPI mean ± 95% CI over {plural(result.replicates, 'replicate')}"
                             f"{scale_note(population_scale)}", ["variant", *keys, *shown])
    rows = {(r["variant"], r["kpi"]): r for r in result.summary.to_pylist()}
    records = []
    for v in variants:
        point = {k: v.values.get(k) for k in keys}
        cells = [v.id, *(format_value(value) for value in point.values())]
        for name in shown:
            r = rows.get((v.id, name))
            cells.append("–" if r is None else format_pm(name, r["mean"], r["ci_low"],
                                                          r["ci_high"], money, kinds))
        plain = {k: ("+".join(x) or "none") if k == INTERVENTIONS and isinstance(x, list)
                 else x for k, x in point.items()}
        for name in kpi or kpi_names(scenario):
            r = rows.get((v.id, name))
            if r is not None:
                records.append({"variant": v.id, **plain, "kpi": name,
                                "unit": kpi_unit(name, money, kinds), "mean": r["mean"],
                                "ci_low": r["ci_low"], "ci_high": r["ci_high"], "n": r["n"]})
        table.cells.append(cells)
    table.records = records
    return table


def sensitivity_command(
    file: Annotated[Path, typer.Argument(help="Scenario file.", show_default=False)],
    param: Annotated[list[str], typer.Option(help="PATH=LOW:HIGH, sampled uniformly; "
                                                  "repeat for each parameter.")],
    method: Annotated[str, typer.Option(help="sobol (first-order and total indices) or "
                                             "morris (mu*, sigma).",
                                        callback=check(choices=("sobol", "morris")))
                      ] = "sobol",
    samples: Annotated[int, typer.Option(help="N of the design (a power of two for "
                                              "Sobol).", callback=check(low=2, whole=True))
                       ] = 64,
    kpi: Annotated[list[str] | None, typer.Option(help="KPIs to analyse (default: the "
                                                       "optimise objective, else conversion "
                                                       "and retention_365).", callback=KPI)
                   ] = None,
    replicates: Annotated[int, typer.Option(help="Replicates per design point.",
                                            callback=COUNT)] = 1,
    out: Annotated[str, typer.Option(help="Dataset folder or URI.")] = "results",
    seed: Annotated[int | None, typer.Option(help="Design and simulation seed.",
                                             callback=SEED)] = None,
    population_scale: Annotated[float, typer.Option(help="Scale the population (> 0).",
                                                    callback=SCALE)] = 1.0,
    workers: Annotated[int | None, typer.Option(help="Local Dask workers.", callback=COUNT)
                       ] = None,
    scheduler: Annotated[str | None, typer.Option(help="Existing Dask scheduler.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    fmt: FormatOption = "table",
) -> None:
    """Global sensitivity of KPIs to parameter ranges (SALib designs run as a sweep)."""
    from optimise import parse_range, sensitivity

    scenario = load_scenario(file)
    check_kpis(scenario, kpi)
    ranges: dict[str, tuple[float, float]] = {}
    for spec in param:
        path, low, high = parse_range(spec)
        if path in ranges:
            raise SimError(f"--param {spec}: {path} is given twice")
        ranges[path] = (low, high)
    on_interrupt(f"finished design points are stored in {out}")
    result = on_dask(quiet, f"{scenario.name}: {method} design", lambda progress: sensitivity(
        scenario, ranges, method=method, samples=samples, kpis=kpi, replicates=replicates,
        out=out, seed=seed, population_scale=population_scale, workers=workers,
        scheduler=scheduler, progress=progress))
    money = scenario.economics.currency
    stats = [c for c in result.indices.column_names
             if c not in ("kpi", "parameter", "method") and not c.endswith("_conf")]
    table = Table("indices", f"{method} indices (± half-width of the 95% CI)",
                  ["kpi", "parameter", *stats], align=["left", "left", *["right"] * len(stats)])
    for row in result.indices.to_pylist():
        cells = [row["kpi"], row["parameter"]]
        for col in stats:
            value, conf = row[col], row.get(f"{col}_conf")
            if method == "sobol":   # indices: shares of the variance, no unit
                cells.append(format_number(value, 3) + (
                    "" if conf is None else f" ± {format_number(conf, 2)}"))
            else:                   # elementary effects: in the KPI's unit
                cells.append(format_kpi(row["kpi"], value, money) if conf is None else
                             format_pm(row["kpi"], value, value - conf, value + conf, money))
        table.add(cells, row)
    output = Output(fmt, main="indices")
    output.fact("scenario", scenario.name)
    output.fact("method", method)
    output.table(table)
    output.say(f"{plural(len(result.sweep.variants), 'design point')} × "
               f"{plural(replicates, 'replicate')}; wrote {result.path}")
    output.fact("paths", [result.path])
    output.finish()

