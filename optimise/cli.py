"""`journey optimise`, `calibrate`, `sweep` and `sensitivity`, added to the `journey`
command through the entry-point group."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn

from sim.cli import (
    COUNT,
    ENGINE,
    KPI,
    SCALE,
    SEED,
    FormatOption,
    InterventionOption,
    Output,
    SetOption,
    add_command,
    apply_settings,
    check,
    err_console,
    few_replicates,
    on_interrupt,
    progress_bar,
    third_party_level,
)
from sim.display import (
    Table,
    format_interval,
    format_kpi,
    format_number,
    format_pm,
    format_share,
    format_value,
    kpi_unit,
    plural,
)
from sim.scenario import BASE_VARIANT
from sim.stats import too_few

if TYPE_CHECKING:
    from sim import Scenario

__all__ = ["register"]

T = TypeVar("T")


def _quiet_libraries() -> None:
    """Keep Optuna's trial lines and Dask's INFO lines off the terminal unless
    ``--verbose`` or ``--debug`` asked for them.

    Both configure their loggers when imported, so this imports them first and
    then sets the level; Optuna's worker processes take the same verbosity.
    """
    level = third_party_level()
    import optuna

    optuna.logging.set_verbosity(level)
    try:
        import distributed  # noqa: F401  (applies Dask's logging configuration)
    except ImportError:
        return                      # sweep() says which extra to install
    logging.getLogger("distributed").setLevel(level)


def _with_settings(file: Path, sets: list[str] | None, interventions: list[str] | None
                   ) -> tuple[Scenario, str]:
    from sim import load_scenario

    return apply_settings(load_scenario(file), sets, interventions)


def _title(scenario: Scenario, label: str) -> str:
    return scenario.name if label == BASE_VARIANT else f"{scenario.name}, variant {label}"


# ----------------------------------------------------------------- optimise


def optimise_command(
    file: Annotated[Path, typer.Argument(help="Scenario file with an optimise: block.",
                                         show_default=False)],
    set_: SetOption = None,
    intervention: InterventionOption = None,
    trials: Annotated[int | None, typer.Option(help="Trials to complete (default: the "
                                                    "scenario's).", callback=COUNT)] = None,
    replicates: Annotated[int | None, typer.Option(help="Replicates per trial (default: "
                                                        "the scenario's).", callback=COUNT)
                          ] = None,
    study: Annotated[str | None, typer.Option(help="Study name; the same name resumes "
                                                   "(default: the scenario's name, with the "
                                                   "variant's when --set or --intervention "
                                                   "is given).")] = None,
    storage: Annotated[str | None, typer.Option(help="Journal file or RDB URL (default: a "
                                                     "journal file under --out).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results"),
    seed: Annotated[int, typer.Option(help="Sampler and simulation seed.", callback=SEED)
                    ] = 0,
    top_k: Annotated[int, typer.Option(help="Best trials to re-evaluate on fresh seeds.",
                                       callback=COUNT)] = 3,
    population_scale: Annotated[float, typer.Option(help="Scale the population (> 0).",
                                                    callback=SCALE)] = 1.0,
    workers: Annotated[int, typer.Option(help="Worker processes on this machine; with a "
                                              "postgresql:// storage, workers on other "
                                              "machines may join the same study.",
                                         callback=COUNT)] = 1,
    heartbeat: Annotated[int | None, typer.Option(help="Seconds between an RDB worker's "
                                                       "heartbeats (default 10); a trial "
                                                       "silent twice as long is retried.",
                                                  callback=COUNT)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    engine: Annotated[str, typer.Option(help="Simulation engine of every trial: fast, or "
                                             "des for capacity-limited touchpoints.",
                                        callback=ENGINE)] = "fast",
    fmt: FormatOption = "table",
) -> None:
    """Search the scenario's interventions; re-evaluate the best beside the baseline."""
    from optimise import optimise

    scenario, label = _with_settings(file, set_, intervention)
    if intervention:
        err_console.print("note: the baseline switches every intervention off, --intervention "
                          "ones included", markup=False)
    name = study or (None if label == BASE_VARIANT else f"{scenario.name}-{label}")
    on_interrupt(f"finished trials are stored in the study {name or scenario.name}")
    _quiet_libraries()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("trials  {task.fields[status]}"), TimeElapsedColumn())
    with progress_bar(*columns, quiet=quiet) as bar:
        task = bar.add_task(_title(scenario, label), total=None, status="")

        def advance(done: int, total: int, best: float | None, status: str) -> None:
            bar.update(task, completed=done, total=total, status=status)

        result = optimise(scenario, trials=trials, replicates=replicates, study_name=name,
                          storage=storage, out=out, seed=seed, top_k=top_k,
                          population_scale=population_scale, workers=workers,
                          heartbeat=heartbeat, progress=advance, engine=engine)
    _print_optimisation(result, scenario, label, Output(fmt, main="designs"), population_scale)


def _scale_note(population_scale: float) -> str:
    """What the header says of a run at another scale than the scenario's population."""
    return "" if population_scale == 1 else (
        f", population scale {population_scale:g} (KPIs, costs and budgets for the full "
        f"population)")


def _print_optimisation(result: Any, scenario: Scenario, label: str, output: Output,
                        population_scale: float = 1.0) -> None:
    money = scenario.economics.currency
    kpi = result.objective
    second = result.pareto is not None and scenario.optimise is not None and \
        scenario.optimise.second_objective is not None
    kpi2 = scenario.optimise.second_objective.kpi if second else None  # type: ignore[union-attr]
    headers = ["design", kpi, "95% CI", "uplift vs baseline (95% CI)", "cost", "feasible"]
    if kpi2 is not None and kpi2 not in (kpi, "cost"):
        headers.insert(3, kpi2)
    designs = Table("designs", f"{_title(scenario, label)}: {kpi} ({result.direction}), "
                               f"re-evaluated on "
                               f"{plural(result.baseline.replicates, 'fresh replicate')}"
                               f"{_scale_note(population_scale)}",
                    headers)
    for ev in [result.baseline, *result.candidates]:
        uplift = "–" if ev is result.baseline else (
            f"{format_kpi(kpi, ev.uplift, money, delta=True)} "
            f"({format_interval(kpi, ev.uplift_ci[0], ev.uplift_ci[1], money, delta=True)})")
        cells = [ev.label, format_kpi(kpi, ev.objective, money),
                 format_interval(kpi, ev.objective_ci[0], ev.objective_ci[1], money), uplift,
                 format_kpi("cost", ev.cost, money), "yes" if ev.feasible else "no"]
        if len(headers) == 7:
            cells.insert(3, format_kpi(str(kpi2), ev.second, money))
        designs.add(cells, {
            "design": ev.label, "params": ev.params, "objective": kpi, "unit": kpi_unit(kpi, money),
            "value": ev.objective, "ci_low": ev.objective_ci[0], "ci_high": ev.objective_ci[1],
            "uplift": None if ev is result.baseline else ev.uplift,
            "uplift_ci_low": None if ev is result.baseline else ev.uplift_ci[0],
            "uplift_ci_high": None if ev is result.baseline else ev.uplift_ci[1],
            "cost": ev.cost, "cost_ci_low": ev.cost_ci[0], "cost_ci_high": ev.cost_ci[1],
            **({"second": kpi2, "second_value": ev.second, "second_ci_low": ev.second_ci[0],
                "second_ci_high": ev.second_ci[1]} if kpi2 is not None else {}),
            "feasible": ev.feasible, "replicates": ev.replicates})
    output.fact("study", result.study_name)
    output.fact("variant", label)
    output.table(designs)
    if result.pareto is not None:
        _print_front(result.pareto, output, money)
    if result.best is None:
        output.say("no re-evaluated design meets the constraints")
        output.fact("best", None)
    else:
        low, high = result.best.uplift_ci
        verdict = ("beats the baseline by a CI-separated margin" if
                   (low > 0 if result.direction == "maximize" else high < 0)
                   else "does not separate from the baseline: the difference is within noise")
        output.say(f"best: {result.best.label}; it {verdict}")
        for key, value in result.best.params.items():
            output.say(f"  {key} = {format_value(value)}")
        output.fact("best", {"design": result.best.label, "params": result.best.params})
    pruned = sum(1 for row in result.trials.to_pylist() if row["state"] == "PRUNED"
                 and row["error"] is None)
    output.say(f"pruning stopped {plural(pruned, 'trial')} early and saved "
               f"{format_share(result.pruning_saving)} of the trial replicates "
               f"({format_number(result.replicates_run)} of "
               f"{format_number(result.replicates_full)} simulated)")
    for path in result.paths:
        output.say(f"wrote {path}")
    output.fact("paths", result.paths)
    output.finish()


def _print_front(pareto: Any, output: Output, money: str) -> None:
    names = [c for c in pareto.column_names
             if c not in ("trial", "params", "feasible") and not c.endswith(("_ci_low",
                                                                             "_ci_high"))]
    first, other = names[0], names[1]
    shown_other = other[:-2] if other.endswith("_2") and other[:-2] == first else other
    front = Table("pareto", "Pareto front (re-evaluated)",
                  ["trial", first, "95% CI", shown_other, "feasible"])
    for row in pareto.to_pylist():
        front.add([str(row["trial"]), format_kpi(first, row[first], money),
                   format_interval(first, row[f"{first}_ci_low"], row[f"{first}_ci_high"],
                                   money),
                   format_kpi(shown_other, row[other], money),
                   "yes" if row["feasible"] else "no"],
                  {**row, "params": json.loads(row["params"])})
    output.table(front)


# ---------------------------------------------------------------- calibrate


def _observed_of(file: Path, scenario: Scenario) -> dict[str, Path] | None:
    """The block's observed files, resolved against the scenario file's folder (a
    scenario changed by --set no longer knows where it came from)."""
    block = scenario.calibrate
    if block is None:
        return None
    found = {}
    for kind in ("survival", "funnel", "occupancy"):
        target = getattr(block.observed, kind)
        if target is not None and target.file is not None:
            found[kind] = file.resolve().parent / target.file
    return found or None


def calibrate_command(
    file: Annotated[Path, typer.Argument(help="Scenario file with a calibrate: block.",
                                         show_default=False)],
    set_: SetOption = None,
    intervention: InterventionOption = None,
    observed: Annotated[list[Path] | None, typer.Option(
        help="Observed file (CSV or Parquet; survival, funnel or occupancy, told apart by "
             "its columns); repeat for several. Default: the files the block names.")] = None,
    fit_periods: Annotated[int | None, typer.Option(help="Fit periods 1..K only; project "
                                                         "the rest.", callback=COUNT)] = None,
    trials: Annotated[int | None, typer.Option(help="Optuna trials of the global search "
                                                    "(default: the block's).",
                                               callback=COUNT)] = None,
    replicates: Annotated[int | None, typer.Option(help="Replicates per evaluation, on "
                                                        "common random numbers.",
                                                   callback=COUNT)] = None,
    population_scale: Annotated[float | None, typer.Option(help="Simulate this many times "
                                                                "the scenario's population.",
                                                           callback=SCALE)] = None,
    intervals: Annotated[str | None, typer.Option(help="profile (95% profile-likelihood "
                                                       "intervals) or none.",
                                                  callback=check(choices=("profile", "none")))
                         ] = None,
    seed: Annotated[int, typer.Option(help="Simulation and sampler seed.", callback=SEED)
                    ] = 0,
    study: Annotated[str | None, typer.Option(help="Study name (default: derived from the "
                                                   "scenario, data and settings; the same "
                                                   "name resumes).")] = None,
    storage: Annotated[str | None, typer.Option(help="Journal file or RDB URL (default: a "
                                                     "journal file under --out).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results"),
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    fmt: FormatOption = "table",
) -> None:
    """Fit the scenario's calibrate: parameters to observed data, with intervals."""
    from optimise import calibrate

    if set_ or intervention:
        scenario, label = _with_settings(file, set_, intervention)
        target: Any = scenario
        data: Any = observed or _observed_of(file, scenario)
    else:
        target, label, data = file, BASE_VARIANT, observed or None
    on_interrupt(f"finished trials and evaluations are stored under {out}/calibrate")
    _quiet_libraries()
    names = {"search": "global search", "refine": "local refinement",
             "intervals": "profile intervals"}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("evaluations"), TimeElapsedColumn())
    with progress_bar(*columns, quiet=quiet) as bar:
        tasks: dict[str, TaskID] = {}

        def advance(phase: str, done: int, total: int | None) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(names.get(phase, phase), total=total)
            bar.update(tasks[phase], completed=done, total=total)

        result = calibrate(target, data, fit_periods=fit_periods, trials=trials,
                           replicates=replicates, population_scale=population_scale,
                           intervals=intervals, seed=seed, study_name=study,
                           storage=storage, out=out, progress=advance)
    _print_calibration(result, label, Output(fmt, main="parameters"))


def _print_calibration(result: Any, label: str, output: Output) -> None:
    title = "fitted parameters (95% profile-likelihood intervals)"
    if label != BASE_VARIANT:
        title += f", variant {label}"
    table = Table("parameters", title, ["parameter", "value", "95% interval"])
    for p in result.parameters:
        interval = "–" if p.low != p.low else (
            ("≤ " if p.at_bound[0] else "") + format_number(p.low) + " … "
            + ("≥ " if p.at_bound[1] else "") + format_number(p.high))
        table.add([p.path, format_value(p.value), interval],
                  {"parameter": p.path, "value": p.value, "low": p.low, "high": p.high,
                   "low_at_bound": p.at_bound[0], "high_at_bound": p.at_bound[1]})
    output.fact("study", result.study_name)
    output.table(table)
    rows = result.fit.to_pylist()
    show_segment = any(r["segment"] for r in rows)
    show_stage = any(r["stage"] for r in rows)
    headers = ["target", *(["segment"] if show_segment else []),
               *(["stage"] if show_stage else []), "period/step", "observed", "model", "band",
               "role"]
    fit = Table("fit", "observed, fitted and projected (95% band at the observed scale)",
                headers, align=["left" if h in ("target", "segment", "stage", "role")
                                else "right" for h in headers])
    for r in rows:
        fit.add([r["target"], *([r["segment"] or "all"] if show_segment else []),
                 *([r["stage"] or ""] if show_stage else []), format_number(r["x"]),
                 format_number(r["observed"]), format_number(r["fitted"]),
                 f"{format_number(r['low'])} … {format_number(r['high'])}",
                 "fitted" if r["role"] == "fit" else "projected"], r)
    output.table(fit)
    gof = result.gof
    output.say(f"goodness of fit: Pearson chi-square {format_number(gof['chi2'], 3)} on "
               f"{plural(gof['df'], 'degree')} of freedom, p = {format_number(gof['p_value'], 3)}"
               f"; loss {format_number(result.loss, 6)} after "
               f"{plural(result.evaluations, 'evaluation')}")
    for key, figure in result.holdout.items():
        shown = format_share(figure) if key.endswith("_inside_band") else format_number(figure)
        output.say(f"hold-out {key.replace('_', ' ')}: {shown}")
    for path in result.paths:
        output.say(f"wrote {path}")
    output.fact("gof", gof)
    output.fact("loss", result.loss)
    output.fact("evaluations", result.evaluations)
    output.fact("holdout", result.holdout)
    output.fact("paths", result.paths)
    output.finish()


# ------------------------------------------------------- sweep, sensitivity


def _on_dask(quiet: bool, label: str, work: Callable[[Callable[[int, int], None]], T]) -> T:
    """Run a sweep-like ``work(progress)`` under a progress bar over its tasks."""
    _quiet_libraries()
    with progress_bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("tasks"), TimeElapsedColumn(), quiet=quiet) as bar:
        task = bar.add_task(label, total=None)
        return work(lambda done, total: bar.update(task, completed=done, total=total))


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
    from optimise import INTERVENTIONS, design, parse_vary, read_design, sweep
    from sim import KPI_NAMES, SimError, load_scenario

    scenario = load_scenario(file)
    if design_file is not None:
        if vary:
            raise SimError("give --vary or --design, not both")
        grid, zipped = read_design(design_file)
        zip_ = zip_ or zipped
    else:
        grid = {}
        for spec in vary or []:
            path, values = parse_vary(spec)
            if path in grid:
                raise SimError(f"--vary {spec}: {path} is given twice")
            grid[path] = values
    variants = design(grid, zip_=zip_)
    on_interrupt(f"finished tasks are stored in {out}")
    result = _on_dask(quiet, f"{scenario.name}: {plural(len(variants), 'variant')}",
                      lambda progress: sweep(
                          scenario, variants, replicates=replicates, out=out, seed=seed,
                          population_scale=population_scale, engine=engine, workers=workers,
                          scheduler=scheduler, progress=progress))
    money = scenario.economics.currency
    shown = kpi or ["conversion", "retention_365", "revenue", "cost"]
    keys = list(dict.fromkeys(k for v in variants for k in v.values))
    table = Table("summary", f"KPI mean ± 95% CI over {plural(replicates, 'replicate')}"
                             f"{_scale_note(population_scale)}", ["variant", *keys, *shown])
    rows = {(r["variant"], r["kpi"]): r for r in result.summary.to_pylist()}
    records = []
    for v in variants:
        point = {k: v.values.get(k) for k in keys}
        cells = [v.id, *(format_value(value) for value in point.values())]
        for name in shown:
            r = rows.get((v.id, name))
            cells.append("–" if r is None else format_pm(name, r["mean"], r["ci_low"],
                                                          r["ci_high"], money))
        plain = {k: ("+".join(x) or "none") if k == INTERVENTIONS and isinstance(x, list)
                 else x for k, x in point.items()}
        for name in kpi or KPI_NAMES:
            r = rows.get((v.id, name))
            if r is not None:
                records.append({"variant": v.id, **plain, "kpi": name,
                                "unit": kpi_unit(name, money), "mean": r["mean"],
                                "ci_low": r["ci_low"], "ci_high": r["ci_high"], "n": r["n"]})
        table.cells.append(cells)
    table.records = records
    output = Output(fmt, main="summary")
    output.fact("scenario", scenario.name)
    output.fact("variants", [{"variant": v.id, **v.values} for v in variants])
    for replaced in result.replaced:
        err_console.print(str(replaced), markup=False)
    output.table(table)
    if too_few(replicates):
        output.say(few_replicates(replicates))
    stored = "was" if result.skipped == 1 else "were"
    output.say(f"{plural(result.ran, 'task')} ran, {result.skipped} {stored} already stored; "
               f"dataset: {result.out} (variants: {result.paths[0]})")
    output.fact("paths", result.paths)
    output.finish()


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
    from sim import SimError, load_scenario

    scenario = load_scenario(file)
    ranges: dict[str, tuple[float, float]] = {}
    for spec in param:
        path, low, high = parse_range(spec)
        if path in ranges:
            raise SimError(f"--param {spec}: {path} is given twice")
        ranges[path] = (low, high)
    on_interrupt(f"finished design points are stored in {out}")
    result = _on_dask(quiet, f"{scenario.name}: {method} design", lambda progress: sensitivity(
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


def register(app: typer.Typer) -> None:
    """Add `optimise`, `calibrate`, `sweep` and `sensitivity` to the `journey` command
    (again: no change)."""
    add_command(app, "optimise", optimise_command)
    add_command(app, "calibrate", calibrate_command)
    add_command(app, "sweep", sweep_command)
    add_command(app, "sensitivity", sensitivity_command)
