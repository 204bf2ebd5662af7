"""The ``journey`` command.

Thin by design: parse arguments, show progress, call the public API, choose
the exit code. Higher layers add subcommands through the ``journey.commands``
entry-point group: each entry point names a callable ``register(app)`` that
adds commands to the typer app, so ``sim`` never imports upward.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from sim._errors import SimError
from sim.scenario import check_scenario_file, json_schema

__all__ = ["RUN_HOOKS", "app", "console", "err_console", "guarded", "main", "print_kpis"]

EXIT_INVALID = 2
"""Exit code for input the engine refuses (bad scenario, bad option value)."""

app = typer.Typer(
    name="journey",
    help="Simulate customer journeys and find the interventions that keep customers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console(soft_wrap=True, highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

_state = {"debug": False}

RUN_HOOKS: dict[str, Callable[[str, str, str, list[int]], str]] = {}
"""What higher layers do after `journey run`, registered by their ``register(app)``.

``RUN_HOOKS["report"](out, scenario, variant, seeds)`` writes the run's report
and returns its path (`journey run --report`; the ``report`` package adds it).
"""
F = TypeVar("F", bound=Callable[..., Any])


def guarded(fn: F) -> F:
    """Run a command so that the engine's errors print one line each and exit 2.

    With ``--debug`` the traceback is shown instead.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SimError as exc:
            if _state["debug"]:
                raise
            for line in str(exc).splitlines():
                err_console.print(line, markup=False)
            raise typer.Exit(EXIT_INVALID) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


@app.command()
@guarded
def validate(
    files: Annotated[list[Path], typer.Argument(help="Scenario files to check.",
                                                show_default=False)],
) -> None:
    """Check scenario files; print every problem as FILE:LINE:COL: field: message.

    Exits 0 when every file is valid (warnings allowed), 2 otherwise.
    """
    failed = 0
    for path in files:
        scenario, problems = check_scenario_file(path)
        for problem in problems:
            err_console.print(str(problem), markup=False)
        if scenario is None:
            failed += 1
            continue
        console.print(
            f"{path}: ok ({len(scenario.stages)} stages, {len(scenario.segments)} segments, "
            f"{len(scenario.touchpoints)} touchpoints, {len(scenario.interventions)} "
            f"interventions, {scenario.steps} steps)", markup=False, highlight=False)
    if failed:
        raise typer.Exit(EXIT_INVALID)


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:.3f}"


def print_kpis(summary: Any, title: str) -> None:
    """Print a KPI summary table (kpi, mean, 95% CI) on the console.

    A summary with a ``few`` column marks the intervals over too few replicates.
    """
    table = Table(title=title, title_justify="left")
    table.add_column("KPI")
    table.add_column("mean", justify="right")
    table.add_column("95% CI", justify="right")
    rows = summary.to_pylist()
    for row in rows:
        ci = "–" if row["ci_low"] != row["ci_low"] else \
            f"{_fmt(row['ci_low'])} … {_fmt(row['ci_high'])}"
        table.add_row(row["kpi"], _fmt(row["mean"]), ci)
    console.print(table)
    few = [row["n"] for row in rows if row.get("few")]
    if few:
        console.print(f"intervals over {max(few)} replicates are wide and say little; run 4 or "
                      f"more (--replicates) for intervals that mean much", markup=False)


@app.command()
@guarded
def run(
    file: Annotated[Path, typer.Argument(help="Scenario file.", show_default=False)],
    seed: Annotated[int | None, typer.Option(help="Base seed (default: the scenario's).",
                                             min=0)] = None,
    replicates: Annotated[int, typer.Option(help="Independent replicates.", min=1)] = 1,
    out: Annotated[str, typer.Option(help="Dataset folder or URI for the Parquet tables.")] = (
        "results"),
    events: Annotated[bool, typer.Option("--events", help="Also write one row per agent "
                                                           "transition.")] = False,
    threads: Annotated[int | None, typer.Option(help="numba threads (default: all cores).",
                                                min=1)] = None,
    population_scale: Annotated[float, typer.Option(help="Scale the population and arrivals.")
                                ] = 1.0,
    variant: Annotated[str, typer.Option(help="Label stored with every row.")] = "base",
    resume: Annotated[bool, typer.Option("--resume", help="Reuse replicates already written "
                                                           "for the same scenario and seed.")
                      ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    engine: Annotated[str, typer.Option(help="fast (numba kernels) or des (SimPy events: "
                                             "capacity-limited touchpoints, queues).")
                      ] = "fast",
    report: Annotated[bool, typer.Option("--report", help="Write the run's HTML report to "
                                                           "OUT/report-<scenario>.html.")
                      ] = False,
) -> None:
    """Simulate a scenario; print KPIs with 95% CIs; write Parquet tables to --out."""
    from sim.api import run as run_api
    from sim.scenario import load_scenario

    if report and "report" not in RUN_HOOKS:
        raise SimError("--report needs the report extra (plotly, kaleido): "
                       "pip install 'journey-engine[report]'")
    if report and "://" in out:
        raise SimError(f"--report needs a local --out folder, not {out}")
    scenario = load_scenario(file)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("steps"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, disable=quiet, transient=True) as bar:
        task = bar.add_task(f"{scenario.name}", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            result = run_api(scenario, seed=seed, replicates=replicates,
                             population_scale=population_scale, variant=variant,
                             events=events, out=out, threads=threads, resume=resume,
                             engine=engine, progress=advance)
        except KeyboardInterrupt:
            bar.stop()
            err_console.print(f"interrupted: replicates already finished are complete in {out}; "
                              f"nothing partial was left", markup=False)
            raise typer.Exit(130) from None
    scale = f", population scale {population_scale:g}" + (
        "" if population_scale == 1 else " (KPIs for the full population)")
    for replaced in result.replaced:
        err_console.print(str(replaced), markup=False)
    print_kpis(result.summary(), f"{scenario.name}: {replicates} replicate(s), seed "
                                 f"{result.seed}, {scenario.steps} steps of "
                                 f"{scenario.time.step_days:g} days, engine {engine}{scale}, "
                                 f"run {result.run_id}")
    console.print(f"wrote {len(result.paths)} files to {out}", markup=False)
    if report:
        path = RUN_HOOKS["report"](out, scenario.name, variant, result.seeds)
        console.print(f"wrote report {path}", markup=False)


@app.command()
@guarded
def runs(
    folder: Annotated[str, typer.Argument(help="Results folder or URI (journey run --out).",
                                          show_default=False)] = "results",
    output_format: Annotated[str, typer.Option("--format", help="table, csv or json.")
                             ] = "table",
) -> None:
    """List the runs a results folder holds, from its files.

    One line per run: scenario, variant, run id, engine, population scale, base
    seed, replicates, when written and which tables. journey report picks a run by
    any of these (--run, --scenario, --variant, --seed, --engine, --population-scale).
    """
    from sim.results import list_runs, runs_table

    if output_format not in ("table", "csv", "json"):
        raise SimError(f"--format {output_format}: choose table, csv or json")
    if "://" not in folder and not Path(folder).is_dir():
        raise SimError(f"{folder}: no such results folder")
    found = list_runs(folder)
    if output_format == "csv":
        import pyarrow.csv as pacsv

        sink = io.BytesIO()
        pacsv.write_csv(runs_table(found), sink)
        sys.stdout.write(sink.getvalue().decode("utf-8"))
        return
    if output_format == "json":
        rows = runs_table(found).to_pylist()
        for row in rows:
            row["written"] = row["written"].isoformat() if row["written"] else None
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    if not found:
        console.print(f"{folder} holds no runs", markup=False)
        return
    table = Table(title=f"runs in {folder}", title_justify="left")
    for col in ("scenario", "variant", "run", "engine", "scale", "base seed", "replicates",
                "written", "tables"):
        table.add_column(col, justify="right" if col in ("scale", "replicates") else "left")
    for r in found:
        reps = str(len(r.replicates)) + (f" (+{len(r.incomplete)} incomplete)"
                                         if r.incomplete else "")
        table.add_row(r.scenario, r.variant, r.run_id, r.engine, f"{r.population_scale:g}",
                      "?" if r.base_seed is None else str(r.base_seed), reps,
                      r.written.strftime("%Y-%m-%d %H:%M") if r.written else "?",
                      ", ".join(r.tables))
    console.print(table)


@app.command()
def schema() -> None:
    """Print the JSON Schema of scenario files (for editors)."""
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


def _load_plugins() -> None:
    for ep in entry_points(group="journey.commands"):
        register = ep.load()
        register(app)


_load_plugins()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="journey")
