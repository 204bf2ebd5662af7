"""`journey optimise`, added to the `journey` command through the entry-point group."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from sim.cli import console, err_console, guarded

__all__ = ["register"]

T = TypeVar("T")


def _interrupted(stored: str) -> NoReturn:
    """Ctrl-C: say what is kept and how to go on; exit 130 like an interrupted shell command."""
    err_console.print(f"interrupted: {stored}", markup=False)
    raise typer.Exit(130) from None


def _quiet_dask() -> None:
    """Keep Dask's scheduler and nanny INFO lines off the terminal (shown with --debug).

    Dask configures its own ``distributed`` logger (level INFO, a stderr handler)
    when it is imported, so this imports it first and then lowers the level.
    """
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return
    try:
        import distributed  # noqa: F401  (applies Dask's logging configuration)
    except ImportError:
        return                      # sweep() says which extra to install
    logging.getLogger("distributed").setLevel(logging.WARNING)


def _ci(low: float, high: float) -> str:
    return "–" if math.isnan(low) else f"{low:,.4g} … {high:,.4g}"


def optimise_command(
    file: Annotated[Path, typer.Argument(help="Scenario file with an optimise: block.",
                                         show_default=False)],
    trials: Annotated[int | None, typer.Option(help="Trials to complete (default: the "
                                                    "scenario's).", min=1)] = None,
    replicates: Annotated[int | None, typer.Option(help="Replicates per trial (default: "
                                                        "the scenario's).", min=1)] = None,
    study: Annotated[str | None, typer.Option(help="Study name; the same name resumes.")
                     ] = None,
    storage: Annotated[str | None, typer.Option(help="Journal file or RDB URL (default: a "
                                                     "journal file under --out).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results"),
    seed: Annotated[int, typer.Option(help="Sampler and simulation seed.", min=0)] = 0,
    top_k: Annotated[int, typer.Option(help="Best trials to re-evaluate on fresh seeds.",
                                       min=1)] = 3,
    population_scale: Annotated[float, typer.Option(help="Scale the population.")] = 1.0,
    workers: Annotated[int, typer.Option(help="Worker processes on this machine; with a "
                                              "postgresql:// storage, workers on other "
                                              "machines may join the same study.", min=1)] = 1,
    heartbeat: Annotated[int | None, typer.Option(help="Seconds between an RDB worker's "
                                                       "heartbeats (default 10); a trial "
                                                       "silent twice as long is retried.",
                                                  min=1)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    engine: Annotated[str, typer.Option(help="Simulation engine of every trial: fast, or "
                                             "des for capacity-limited touchpoints.")
                      ] = "fast",
) -> None:
    """Search the scenario's interventions; re-evaluate the best beside the baseline."""
    from optimise import optimise
    from sim import load_scenario

    scenario = load_scenario(file)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("trials  best {task.fields[best]}"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, disable=quiet, transient=True) as bar:
        task = bar.add_task(scenario.name, total=None, best="–")

        def advance(done: int, total: int, best: float | None) -> None:
            bar.update(task, completed=done, total=total,
                       best="–" if best is None else f"{best:.4g}")

        try:
            result = optimise(scenario, trials=trials, replicates=replicates, study_name=study,
                              storage=storage, out=out, seed=seed, top_k=top_k,
                              population_scale=population_scale, workers=workers,
                              heartbeat=heartbeat, progress=advance, engine=engine)
        except KeyboardInterrupt:
            bar.stop()
            _interrupted("finished trials are stored; rerun with the same study name to "
                         "continue")
    table = Table(title=f"{result.objective} ({result.direction}), re-evaluated on "
                        f"{result.baseline.replicates} fresh replicates", title_justify="left")
    for col in ("design", result.objective, "95% CI", "uplift vs baseline (95% CI)", "cost",
                "feasible"):
        table.add_column(col, justify="left" if col == "design" else "right", overflow="fold")
    for ev in [result.baseline, *result.candidates]:
        design = ev.label
        uplift = "–" if ev is result.baseline else \
            f"{ev.uplift:+.4g} ({_ci(*ev.uplift_ci)})"
        table.add_row(design, f"{ev.objective:.4g}", _ci(*ev.objective_ci), uplift,
                      f"{ev.cost:,.0f}", "yes" if ev.feasible else "no")
    console.print(table)
    if result.pareto is not None:
        front = Table(title="Pareto front (re-evaluated)", title_justify="left")
        for col in result.pareto.column_names:
            if col != "params":
                front.add_column(col, justify="right")
        for row in result.pareto.to_pylist():
            front.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v)
                            for k, v in row.items() if k != "params"])
        console.print(front)
    if result.best is None:
        console.print("no re-evaluated design meets the constraints", markup=False)
    else:
        low, high = result.best.uplift_ci
        verdict = ("beats the baseline by a CI-separated margin" if
                   (low > 0 if result.direction == "maximize" else high < 0)
                   else "does not separate from the baseline: the difference is within noise")
        console.print(f"best: {result.best.label}; it {verdict}", markup=False)
        for key, value in result.best.params.items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            console.print(f"  {key} = {shown}", markup=False)
    pruned = sum(1 for row in result.trials.to_pylist() if row["state"] == "PRUNED"
                 and row["error"] is None)
    console.print(f"pruning stopped {pruned} trial(s) early and saved "
                  f"{100 * result.pruning_saving:.0f}% of the trial replicates "
                  f"({result.replicates_run} of {result.replicates_full} simulated)",
                  markup=False)
    for path in result.paths:
        console.print(f"wrote {path}", markup=False)


def _num(value: float) -> str:
    return "–" if value != value else f"{value:,.4g}"


def calibrate_command(
    file: Annotated[Path, typer.Argument(help="Scenario file with a calibrate: block.",
                                         show_default=False)],
    observed: Annotated[list[Path] | None, typer.Option(
        help="Observed file (CSV or Parquet; survival, funnel or occupancy, told apart by "
             "its columns); repeat for several. Default: the files the block names.")] = None,
    fit_periods: Annotated[int | None, typer.Option(help="Fit periods 1..K only; project "
                                                         "the rest.", min=1)] = None,
    trials: Annotated[int | None, typer.Option(help="Optuna trials of the global search "
                                                    "(default: the block's).", min=1)] = None,
    replicates: Annotated[int | None, typer.Option(help="Replicates per evaluation, on "
                                                        "common random numbers.", min=1)
                          ] = None,
    population_scale: Annotated[float | None, typer.Option(help="Simulate this many times "
                                                                "the scenario's population.")
                                ] = None,
    intervals: Annotated[str | None, typer.Option(help="profile (95% profile-likelihood "
                                                       "intervals) or none.")] = None,
    seed: Annotated[int, typer.Option(help="Simulation and sampler seed.", min=0)] = 0,
    study: Annotated[str | None, typer.Option(help="Study name (default: derived from the "
                                                   "scenario, data and settings; the same "
                                                   "name resumes).")] = None,
    storage: Annotated[str | None, typer.Option(help="Journal file or RDB URL (default: a "
                                                     "journal file under --out).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results"),
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Fit the scenario's calibrate: parameters to observed data, with intervals."""
    from optimise import calibrate

    names = {"search": "global search", "refine": "local refinement",
             "intervals": "profile intervals"}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("evaluations"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, disable=quiet, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def advance(phase: str, done: int, total: int | None) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(names.get(phase, phase), total=total)
            bar.update(tasks[phase], completed=done, total=total)

        try:
            result = calibrate(file, observed or None, fit_periods=fit_periods, trials=trials,
                               replicates=replicates, population_scale=population_scale,
                               intervals=intervals, seed=seed, study_name=study,
                               storage=storage, out=out, progress=advance)
        except KeyboardInterrupt:
            bar.stop()
            _interrupted("finished trials and evaluations are stored; rerun the same command "
                         "to continue")
    table = Table(title="fitted parameters (95% profile-likelihood intervals)",
                  title_justify="left")
    for col in ("parameter", "value", "95% interval"):
        table.add_column(col, justify="left" if col == "parameter" else "right",
                         overflow="fold")
    for p in result.parameters:
        value = _num(p.value) if isinstance(p.value, float) else str(p.value)
        interval = "–" if p.low != p.low else (
            ("≤ " if p.at_bound[0] else "") + _num(p.low) + " … "
            + ("≥ " if p.at_bound[1] else "") + _num(p.high))
        table.add_row(p.path, value, interval)
    console.print(table)
    fit = Table(title="observed, fitted and projected (95% band at the observed scale)",
                title_justify="left")
    rows = result.fit.to_pylist()
    show_segment = any(r["segment"] for r in rows)
    show_stage = any(r["stage"] for r in rows)
    for col in ("target", *(["segment"] if show_segment else []),
                *(["stage"] if show_stage else []), "period/step", "observed", "model",
                "band", "role"):
        fit.add_column(col, justify="left" if col in ("target", "segment", "stage", "role")
                       else "right")
    for r in rows:
        fit.add_row(r["target"], *([r["segment"] or "all"] if show_segment else []),
                    *([r["stage"] or ""] if show_stage else []),
                    "" if r["x"] is None else f"{r['x']:g}", _num(r["observed"]),
                    _num(r["fitted"]), f"{_num(r['low'])} … {_num(r['high'])}",
                    "fitted" if r["role"] == "fit" else "projected")
    console.print(fit)
    gof = result.gof
    console.print(f"goodness of fit: Pearson chi-square {gof['chi2']:.3g} on {gof['df']:.0f} "
                  f"degrees of freedom, p = {_num(gof['p_value'])}; loss {result.loss:.6g} "
                  f"after {result.evaluations} evaluations", markup=False)
    for key, figure in result.holdout.items():
        console.print(f"hold-out {key.replace('_', ' ')}: {figure:.4g}", markup=False)
    for path in result.paths:
        console.print(f"wrote {path}", markup=False)


def _on_dask(quiet: bool, label: str, work: Callable[[Callable[[int, int], None]], T]) -> T:
    """Run a sweep-like ``work(progress)`` under a progress bar over its tasks; Ctrl-C
    exits 130 saying that finished tasks are kept."""
    _quiet_dask()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("tasks"), TimeElapsedColumn(), console=err_console,
                  disable=quiet, transient=True) as bar:
        task = bar.add_task(label, total=None)
        try:
            return work(lambda done, total: bar.update(task, completed=done, total=total))
        except KeyboardInterrupt:
            bar.stop()
            _interrupted("finished tasks are stored; rerun the same command to continue")


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
    replicates: Annotated[int, typer.Option(help="Replicates per variant.", min=1)] = 1,
    out: Annotated[str, typer.Option(help="Dataset folder or pyarrow filesystem URI.")
                   ] = "results",
    seed: Annotated[int | None, typer.Option(help="Base seed (default: the scenario's).",
                                             min=0)] = None,
    population_scale: Annotated[float, typer.Option(help="Scale the population.")] = 1.0,
    engine: Annotated[str, typer.Option(help="fast, or des for capacity-limited "
                                             "touchpoints.")] = "fast",
    workers: Annotated[int | None, typer.Option(help="Worker processes of a local Dask "
                                                     "cluster (default: one per core).",
                                                min=1)] = None,
    scheduler: Annotated[str | None, typer.Option(help="Address of an existing Dask "
                                                       "scheduler.")] = None,
    kpi: Annotated[list[str] | None, typer.Option(help="KPIs to show (default: conversion, "
                                                       "retention_365, revenue, cost).")
                   ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Run variants × replicates on Dask into one dataset; KPI means ± 95% CI per variant."""
    from optimise._sweep import design, parse_vary, read_design, sweep
    from sim import SimError, load_scenario

    scenario = load_scenario(file)
    if design_file is not None:
        if vary:
            raise SimError("give --vary or --design, not both")
        grid, zipped = read_design(design_file)
        zip_ = zip_ or zipped
    else:
        grid = dict(parse_vary(v) for v in vary or [])
        if len(grid) != len(vary or []):
            raise SimError("a path is given twice in --vary")
    variants = design(grid, zip_=zip_)
    result = _on_dask(quiet, f"{scenario.name}: {len(variants)} variants", lambda progress: sweep(
        scenario, variants, replicates=replicates, out=out, seed=seed,
        population_scale=population_scale, engine=engine, workers=workers,
        scheduler=scheduler, progress=progress))
    shown = kpi or ["conversion", "retention_365", "revenue", "cost"]
    table = Table(title=f"KPI mean ± 95% CI over {replicates} replicate(s)",
                  title_justify="left")
    keys = list(dict.fromkeys(k for v in variants for k in v.values))
    for col in ("variant", *keys, *shown):
        # fold, not cut: dotted paths that share a prefix must stay distinguishable
        table.add_column(col, justify="left" if col == "variant" else "right", overflow="fold")
    rows = {(r["variant"], r["kpi"]): r for r in result.summary.to_pylist()}
    for v in variants:
        cells = []
        for k in keys:
            value = v.values.get(k)
            cells.append("+".join(value) or "none" if isinstance(value, list) else str(value))
        for name in shown:
            r = rows.get((v.id, name))
            if r is None or r["mean"] != r["mean"]:
                cells.append("–")
            elif r["ci_low"] != r["ci_low"]:
                cells.append(f"{r['mean']:.4g}")
            else:
                cells.append(f"{r['mean']:.4g} ± {(r['ci_high'] - r['ci_low']) / 2:.2g}")
        table.add_row(v.id, *cells)
    console.print(table)
    console.print(f"{result.ran} task(s) ran, {result.skipped} were already stored; dataset: "
                  f"{result.out} (variants: {result.paths[0]})", markup=False)


def sensitivity_command(
    file: Annotated[Path, typer.Argument(help="Scenario file.", show_default=False)],
    param: Annotated[list[str], typer.Option(help="PATH=LOW:HIGH, sampled uniformly; "
                                                  "repeat for each parameter.")],
    method: Annotated[str, typer.Option(help="sobol (first-order and total indices) or "
                                             "morris (mu*, sigma).")] = "sobol",
    samples: Annotated[int, typer.Option(help="N of the design (a power of two for "
                                              "Sobol).", min=2)] = 64,
    kpi: Annotated[list[str] | None, typer.Option(help="KPIs to analyse (default: the "
                                                       "optimise objective, else conversion "
                                                       "and retention_365).")] = None,
    replicates: Annotated[int, typer.Option(help="Replicates per design point.", min=1)
                          ] = 1,
    out: Annotated[str, typer.Option(help="Dataset folder or URI.")] = "results",
    seed: Annotated[int | None, typer.Option(help="Design and simulation seed.", min=0)
                    ] = None,
    population_scale: Annotated[float, typer.Option(help="Scale the population.")] = 1.0,
    workers: Annotated[int | None, typer.Option(help="Local Dask workers.", min=1)] = None,
    scheduler: Annotated[str | None, typer.Option(help="Existing Dask scheduler.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Global sensitivity of KPIs to parameter ranges (SALib designs run as a sweep)."""
    from optimise._sensitivity import parse_range, sensitivity
    from sim import SimError, load_scenario

    scenario = load_scenario(file)
    ranges: dict[str, tuple[float, float]] = {}
    for spec in param:
        path, low, high = parse_range(spec)
        if path in ranges:
            raise SimError(f"--param {path} is given twice")
        ranges[path] = (low, high)
    result = _on_dask(quiet, f"{scenario.name}: {method} design", lambda progress: sensitivity(
        scenario, ranges, method=method, samples=samples, kpis=kpi, replicates=replicates,
        out=out, seed=seed, population_scale=population_scale, workers=workers,
        scheduler=scheduler, progress=progress))
    cols = [c for c in result.indices.column_names if c not in ("method",)]
    table = Table(title=f"{method} indices (± half-width of the 95% CI)", title_justify="left")
    for col in cols:
        if not col.endswith("_conf"):
            table.add_column(col, justify="left" if col in ("kpi", "parameter") else "right",
                             overflow="fold")
    for row in result.indices.to_pylist():
        cells = [row["kpi"], row["parameter"]]
        for col in cols[2:]:
            if col.endswith("_conf"):
                continue
            conf = row.get(f"{col}_conf")
            cells.append(f"{row[col]:.3f}" + (f" ± {conf:.3f}" if conf is not None else ""))
        table.add_row(*cells)
    console.print(table)
    console.print(f"{len(result.sweep.variants)} design points × {replicates} replicate(s); "
                  f"wrote {result.path}", markup=False)


def register(app: typer.Typer) -> None:
    """Add `optimise`, `calibrate`, `sweep` and `sensitivity` to the `journey` command."""
    app.command("optimise")(guarded(optimise_command))
    app.command("calibrate")(guarded(calibrate_command))
    app.command("sweep")(guarded(sweep_command))
    app.command("sensitivity")(guarded(sensitivity_command))
