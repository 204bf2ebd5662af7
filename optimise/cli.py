"""`journey optimise`, added to the `journey` command through the entry-point group."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sim.cli import console, err_console, guarded

__all__ = ["register"]


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
            err_console.print("interrupted: finished trials are stored; rerun with the same "
                              "study name to continue", markup=False)
            raise typer.Exit(130) from None
    table = Table(title=f"{result.objective} ({result.direction}), re-evaluated on "
                        f"{result.baseline.replicates} fresh replicates", title_justify="left")
    for col in ("design", result.objective, "95% CI", "uplift vs baseline (95% CI)", "cost",
                "feasible"):
        table.add_column(col, justify="left" if col == "design" else "right")
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


def register(app: typer.Typer) -> None:
    """Add `optimise` to the `journey` command."""
    app.command("optimise")(guarded(optimise_command))
