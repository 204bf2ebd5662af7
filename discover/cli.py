"""`journey discover`, added to the `journey` command through the entry-point group
(``journey.commands``).

DuckDB and statsmodels are imported only when the command runs: a missing
``discover`` extra gives a one-line message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sim import SimError
from sim.cli import add_command, console, on_interrupt
from sim.display import format_share, plural

__all__ = ["register"]

MISSING = (
    "journey discover needs DuckDB and statsmodels, which are not installed: "
    "pip install 'journey-engine[discover]'"
)


def discover_command(
    log: Annotated[
        Path,
        typer.Argument(
            help="Event log: a Parquet or CSV file with customer_id, timestamp (or day), event "
            "and optionally segment and value; or the events folder of journey run "
            "--exposures (one replicate).",
            show_default=False,
        ),
    ],
    map_: Annotated[
        Path,
        typer.Option(
            "--map",
            help="Mapping file (YAML): stages and their kinds, touchpoints, event "
            "names, step_days.",
            show_default=False,
        ),
    ],
    step_days: Annotated[
        float | None,
        typer.Option(help="Step length in days (overrides the mapping's step_days).", min=1e-9),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Draft scenario to write (default: NAME.yaml of the mapping); the fit table "
            "goes beside it as FILE.fit.parquet."
        ),
    ] = None,
    check: Annotated[
        int,
        typer.Option(
            help="Run the draft this many replicates and compare its occupancy and the "
            "initial cohort's survival with the log's (FILE.check.parquet); 0: no check.",
            min=0,
        ),
    ] = 0,
    memory_limit: Annotated[
        str, typer.Option(help="DuckDB's memory limit (past it, it spills to a temporary folder).")
    ] = "2GB",
    satisfaction: Annotated[
        bool,
        typer.Option(
            help="Reconstruct satisfaction from the exposure history (--no-satisfaction: "
            "without it, faster on large logs)."
        ),
    ] = True,
) -> None:
    """Learn a draft scenario from an event log: exits, dwell, reach, lifts, segments,
    arrivals, each number with its 95% interval and sample size in a comment."""
    on_interrupt("nothing was written")
    try:
        import duckdb  # noqa: F401
        import statsmodels  # noqa: F401

        from discover import discover, load_mapping
    except ImportError as exc:
        raise SimError(f"{MISSING} ({exc})") from None
    mapping = load_mapping(map_, step_days=step_days)
    target = out if out is not None else Path(f"{mapping.name}.yaml")
    found = discover(str(log), mapping, out=target, memory_limit=memory_limit, check=check,
                     satisfaction=satisfaction)
    d = found.discovery
    exits = sum(len(v) for v in d.exits.values())
    console.print(
        f"read {d.log.events:,} events; estimated {plural(exits, 'exit')}, "
        f"{plural(len(d.find('lift')), 'lift')}, "
        f"{plural(len({e.touchpoint for e in d.find('reach')}), 'touchpoint')}",
        markup=False,
    )
    for w in found.warnings:
        console.print(f"warning: {w}", markup=False)
    if found.check is not None:
        rows = found.check.to_pydict()
        for what, label in (
            ("survival", "survival of the initial cohort"),
            (None, "occupancy of the stages"),
        ):
            hits = [
                ok
                for c, ok in zip(rows["curve"], rows["inside"], strict=True)
                if (c == "survival") == (what == "survival")
            ]
            if hits:
                console.print(
                    f"check: observed {label} inside the draft's 95% band of one run at "
                    f"{format_share(sum(hits) / len(hits))} of {plural(len(hits), 'point')}",
                    markup=False,
                )
    for path in found.paths:
        console.print(f"wrote {path}", markup=False)


def register(app: typer.Typer) -> None:
    """Add `discover` to the `journey` command (again: no change)."""
    add_command(app, "discover", discover_command)
