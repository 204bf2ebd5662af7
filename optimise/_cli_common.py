"""What the commands of ``optimise`` share: quiet libraries, scenario settings, titles."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from sim import load_scenario
from sim.cli import Output, apply_settings, progress_bar, third_party_level
from sim.scenario import BASE_VARIANT

if TYPE_CHECKING:
    from sim import Scenario

__all__ = ["on_dask", "quiet_libraries", "say_written", "scale_note", "title", "with_settings"]

T = TypeVar("T")


def quiet_libraries() -> None:
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


def with_settings(file: Path, sets: list[str] | None, interventions: list[str] | None
                   ) -> tuple[Scenario, str]:
    return apply_settings(load_scenario(file), sets, interventions)


def title(scenario: Scenario, label: str) -> str:
    return scenario.name if label == BASE_VARIANT else f"{scenario.name}, variant {label}"


def scale_note(population_scale: float) -> str:
    """What the header says of a run at another scale than the scenario's population."""
    return "" if population_scale == 1 else (
        f", population scale {population_scale:g} (KPIs, costs and budgets for the full "
        f"population)")



def on_dask(quiet: bool, label: str, work: Callable[[Callable[[int, int], None]], T]) -> T:
    """Run a sweep-like ``work(progress)`` under a progress bar over its tasks."""
    quiet_libraries()
    with progress_bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("tasks"), TimeElapsedColumn(), quiet=quiet) as bar:
        task = bar.add_task(label, total=None)
        return work(lambda done, total: bar.update(task, completed=done, total=total))



def say_written(output: Output, paths: list[str], journal: str | None) -> None:
    """Say the files a study wrote, and where the study is: its journal file, which
    optuna-dashboard opens (nothing is said of an RDB storage: its URL may hold a
    password)."""
    for path in paths:
        output.say(f"wrote {path}")
    if journal is not None:
        output.say(f"the study is in {journal} (optuna-dashboard {journal} shows it)")
    output.fact("paths", paths)
    output.fact("journal", journal)
