"""`journey report`, and the writer behind `journey run --report`.

Both are added through the ``journey.commands`` entry point (``register``),
so ``sim`` never imports this package. plotly is imported only when a
report is written: a missing ``report`` extra gives a one-line message.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sim import SimError
from sim.cli import RUN_HOOKS, SEED, add_command, console, on_interrupt
from sim.display import plural

if TYPE_CHECKING:
    from report._build import Report

__all__ = ["register", "report_after_run"]

MISSING = ("the report needs plotly and kaleido, which are not installed: "
           "pip install 'journey-engine[report]'")


def _write(dataset: str, out: Path | None, **kwargs: object) -> Report:
    try:
        from report import write_report
    except ImportError as exc:
        raise SimError(f"{MISSING} ({exc})") from None
    return write_report(dataset, out, **kwargs)  # type: ignore[arg-type]


def report_command(
    dataset: Annotated[Path, typer.Argument(help="Results folder (journey run --out).",
                                            show_default=False)],
    out: Annotated[Path | None, typer.Option(help="HTML file to write (default: "
                                                  "DIR/report-<scenario>.html).")] = None,
    compare: Annotated[list[Path] | None, typer.Option(
        help="Results folder of an alternative, shown beside DIR as the baseline; repeat "
             "for several.")] = None,
    compare_variant: Annotated[list[str] | None, typer.Option(
        help="A variant of the same scenario in DIR, shown beside the reported one; repeat "
             "for several.")] = None,
    png: Annotated[Path | None, typer.Option(help="Also export the main charts as PNG into "
                                                  "this folder (needs Chromium).")] = None,
    scenario: Annotated[str | None, typer.Option(help="Scenario to report when DIR holds "
                                                      "several.")] = None,
    variant: Annotated[str | None, typer.Option(help="Variant to report when DIR holds "
                                                     "several.")] = None,
    seed: Annotated[int | None, typer.Option(help="Base seed of the run to report.",
                                             callback=SEED)] = None,
    run: Annotated[str | None, typer.Option("--run", help="Run id (or its first characters) "
                                                          "as journey runs lists it.")] = None,
    engine: Annotated[str | None, typer.Option(help="Engine of the run to report.")] = None,
    population_scale: Annotated[float | None, typer.Option(
        help="Population scale of the run to report.")] = None,
) -> None:
    """Write one self-contained HTML report (opens offline) of one run of a results folder.

    When the folder holds several runs, choose one with --run, --scenario, --variant,
    --seed, --engine or --population-scale (journey runs DIR lists them).
    """
    on_interrupt("no report was written (the results are untouched)")
    written = _write(str(dataset), out, compare=[str(c) for c in compare or []],
                     compare_variants=list(compare_variant or []), png=png,
                     scenario=scenario, variant=variant, seed=seed, run_id=run,
                     engine=engine, population_scale=population_scale)
    console.print(f"wrote {written.path} ({plural(len(written.charts), 'chart')}: "
                  f"{', '.join(written.charts)})", markup=False)
    for path in written.pngs:
        console.print(f"wrote {path}", markup=False)


def report_after_run(out: str, scenario: str, variant: str, seeds: list[int]) -> str:
    """Write the report of the run ``journey run`` just finished; returns its path."""
    written = _write(out, None, scenario=scenario, variant=variant, seeds=seeds)
    return str(written.path)


def register(app: typer.Typer) -> None:
    """Add `report` to the `journey` command and let `journey run --report` call it
    (again: no change)."""
    add_command(app, "report", report_command)
    if importlib.util.find_spec("plotly") is not None:
        RUN_HOOKS["report"] = report_after_run
