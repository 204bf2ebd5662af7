"""`journey optimise` and `journey calibrate`: a study searched or fitted, then printed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn

from optimise._cli_common import (
    quiet_libraries,
    say_written,
    scale_note,
    title,
    with_settings,
)
from sim.cli import (
    COUNT,
    ENGINE,
    SCALE,
    SEED,
    FormatOption,
    InterventionOption,
    Output,
    SetOption,
    check,
    err_console,
    on_interrupt,
    progress_bar,
)
from sim.display import (
    Table,
    format_interval,
    format_kpi,
    format_number,
    format_share,
    format_value,
    kpi_unit,
    plural,
)
from sim.results import CALIBRATIONS
from sim.scenario import BASE_VARIANT, kpi_kinds

if TYPE_CHECKING:
    from sim import Scenario

__all__ = ["calibrate_command", "optimise_command"]

MC_SEEDS = check(rule=lambda v: None if v == 0 or v >= 2 else "must be 0 (none) or a whole "
                                                              "number >= 2")
"""``--mc-seeds``: 0, or at least two seed sets (a standard deviation needs two)."""
TIME_BUDGET = check(rule=lambda v: None if math.isfinite(v) and v > 0 else
                    "must be a number of seconds > 0")
"""``--time-budget``: seconds > 0."""


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

    scenario, label = with_settings(file, set_, intervention)
    if intervention:
        err_console.print("note: the baseline switches every intervention off, --intervention "
                          "ones included", markup=False)
    name = study or (None if label == BASE_VARIANT else f"{scenario.name}-{label}")
    on_interrupt(f"finished trials are stored in the study {name or scenario.name}")
    quiet_libraries()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("trials  {task.fields[status]}"), TimeElapsedColumn())
    with progress_bar(*columns, quiet=quiet) as bar:
        task = bar.add_task(title(scenario, label), total=None, status="")

        def advance(done: int, total: int, best: float | None, status: str) -> None:
            bar.update(task, completed=done, total=total, status=status)

        result = optimise(scenario, trials=trials, replicates=replicates, study_name=name,
                          storage=storage, out=out, seed=seed, top_k=top_k,
                          population_scale=population_scale, workers=workers,
                          heartbeat=heartbeat, progress=advance, engine=engine)
    _print_optimisation(result, scenario, label, Output(fmt, main="designs"), population_scale)



def _print_optimisation(result: Any, scenario: Scenario, label: str, output: Output,
                        population_scale: float = 1.0) -> None:
    money = scenario.economics.currency
    kinds = kpi_kinds(scenario)
    kpi = result.objective
    second = result.pareto is not None and scenario.optimise is not None and \
        scenario.optimise.second_objective is not None
    kpi2 = scenario.optimise.second_objective.kpi if second else None  # type: ignore[union-attr]
    headers = ["design", kpi, "95% CI", "uplift vs baseline (95% CI)", "cost", "feasible"]
    if kpi2 is not None and kpi2 not in (kpi, "cost"):
        headers.insert(3, kpi2)
    designs = Table("designs", f"{title(scenario, label)}: {kpi} ({result.direction}), "
                               f"re-evaluated on "
                               f"{plural(result.baseline.replicates, 'fresh replicate')}"
                               f"{scale_note(population_scale)}",
                    headers)
    for ev in [result.baseline, *result.candidates]:
        gain = format_interval(kpi, ev.uplift_ci[0], ev.uplift_ci[1], money, delta=True,
                               kinds=kinds)
        uplift = "–" if ev is result.baseline else (
            f"{format_kpi(kpi, ev.uplift, money, delta=True, kinds=kinds)} ({gain})")
        cells = [ev.label, format_kpi(kpi, ev.objective, money, kinds=kinds),
                 format_interval(kpi, ev.objective_ci[0], ev.objective_ci[1], money,
                                 kinds=kinds), uplift,
                 format_kpi("cost", ev.cost, money), "yes" if ev.feasible else "no"]
        if len(headers) == 7:
            cells.insert(3, format_kpi(str(kpi2), ev.second, money, kinds=kinds))
        designs.add(cells, {
            "design": ev.label, "params": ev.params, "objective": kpi,
            "unit": kpi_unit(kpi, money, kinds),
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
    say_written(output, result.paths, result.journal)
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
                                                                "the scenario's population "
                                                                "(default: the block's, else "
                                                                "chosen from the data).",
                                                           callback=SCALE)] = None,
    mc_seeds: Annotated[int, typer.Option(help="Other seed sets the fit is refitted on for "
                                               "its Monte Carlo standard errors (0: none).",
                                          callback=MC_SEEDS)] = 8,
    time_budget: Annotated[float, typer.Option(help="Seconds of simulation the automatically "
                                                    "chosen population scale may spend.",
                                               callback=TIME_BUDGET)] = 300.0,
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
    """Fit the scenario's calibrate: parameters to observed data, with intervals and
    Monte Carlo errors."""
    from optimise import calibrate

    if set_ or intervention:
        scenario, label = with_settings(file, set_, intervention)
        target: Any = scenario
        data: Any = observed or _observed_of(file, scenario)
    else:
        target, label, data = file, BASE_VARIANT, observed or None
    on_interrupt(f"finished trials and evaluations are stored under {out / CALIBRATIONS}")
    quiet_libraries()
    names = {"search": "global search", "refine": "local refinement",
             "intervals": "profile intervals", "monte carlo": "Monte Carlo refits"}
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
                           storage=storage, out=out, mc_seeds=mc_seeds,
                           time_budget=time_budget, progress=advance)
    _print_calibration(result, label, Output(fmt, main="parameters"))


def _print_calibration(result: Any, label: str, output: Output) -> None:
    title = "fitted parameters (95% profile-likelihood intervals)"
    if label != BASE_VARIANT:
        title += f", variant {label}"
    mc = result.monte_carlo
    headers = ["parameter", "value", "95% interval"] + (["MC s.e."] if mc is not None else [])
    table = Table("parameters", title, headers)
    for p in result.parameters:
        interval = "–" if p.low != p.low else (
            ("≤ " if p.at_bound[0] else "") + format_number(p.low) + " … "
            + ("≥ " if p.at_bound[1] else "") + format_number(p.high))
        table.add([p.path, format_value(p.value), interval]
                  + ([format_number(p.mc_se, 3)] if mc is not None else []),
                  {"parameter": p.path, "value": p.value, "low": p.low, "high": p.high,
                   "low_at_bound": p.at_bound[0], "high_at_bound": p.at_bound[1],
                   "mc_se": p.mc_se})
    output.fact("study", result.study_name)
    output.say(f"population scale {result.population_scale:g} "
               f"({result.population_scale_source}): {result.population_scale_reason}")
    output.fact("population_scale", result.population_scale)
    output.fact("population_scale_source", result.population_scale_source)
    output.fact("population_scale_reason", result.population_scale_reason)
    output.table(table)
    if mc is not None:
        output.say(f"MC s.e.: Monte Carlo standard error of the mean of the fit and its refits on "
                   f"{mc.seeds} other seed sets")
        for note in mc.notes:
            output.say(note)
        output.fact("monte_carlo", {"seed_sets": mc.seeds, "se": mc.se,
                                    "holdout_se": mc.holdout_se, "notes": mc.notes,
                                    "population_scale_needed": mc.scale_needed})
    rows = result.fit.to_pylist()
    show_segment = any(r["segment"] for r in rows)
    show_stage = any(r["stage"] for r in rows)
    headers = ["target", *(["segment"] if show_segment else []),
               *(["stage"] if show_stage else []), "period/step", "observed", "model", "band",
               "role", *(["MC s.e."] if mc is not None else [])]
    fit = Table("fit", "observed, fitted and projected (95% band at the observed scale)",
                headers, align=["left" if h in ("target", "segment", "stage", "role")
                                else "right" for h in headers])
    for r in rows:
        fit.add([r["target"], *([r["segment"] or "all"] if show_segment else []),
                 *([r["stage"] or ""] if show_stage else []), format_number(r["x"]),
                 format_number(r["observed"]), format_number(r["fitted"]),
                 f"{format_number(r['low'])} … {format_number(r['high'])}",
                 "fitted" if r["role"] == "fit" else "projected",
                 *([format_number(r["mc_se"], 3)] if mc is not None else [])], r)
    output.table(fit)
    gof = result.gof
    output.say(f"goodness of fit: Pearson chi-square {format_number(gof['chi2'], 3)} on "
               f"{plural(gof['df'], 'degree')} of freedom, p = {format_number(gof['p_value'], 3)}"
               f"; loss {format_number(result.loss, 6)} after "
               f"{plural(result.evaluations, 'evaluation')}")
    for key, figure in result.holdout.items():
        share = key.endswith("_inside_band")
        shown = format_share(figure) if share else format_number(figure)
        se = mc.holdout_se.get(key) if mc is not None else None
        if se is not None:
            shown += f" (MC s.e. {format_share(se) if share else format_number(se, 3)})"
        output.say(f"hold-out {key.replace('_', ' ')}: {shown}")
    say_written(output, result.paths, result.journal)
    output.fact("gof", gof)
    output.fact("loss", result.loss)
    output.fact("evaluations", result.evaluations)
    output.fact("holdout", result.holdout)
    output.finish()

