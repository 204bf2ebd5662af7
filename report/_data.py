"""Reading what a report shows: one run of a results dataset, and what lies beside it.

A results folder can hold several runs (scenarios, variants), each listed by
``sim.results.list_runs``. :func:`load_run` picks one by any of its keys (run
id, scenario name, variant, base seed, engine, population scale) and refuses
to guess when more than one matches, listing them as ``journey runs`` does. Optimisation studies
(``DIR/optimise/<study>/``) and calibrations (``DIR/calibrate/<name>/``)
are read when present, as is the event engine's ``queues`` table.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from sim import Scenario, SimError, load_scenario
from sim.metrics import kpi_bounds
from sim.model import compile_scenario
from sim.results import (
    ATTRIBUTION_FILES,
    CALIBRATION_FILES,
    CORE_TABLES,
    STUDY_FILES,
    RunInfo,
    RunKey,
    attribution_folders,
    calibration_folders,
    discovery_checks,
    list_runs,
    open_dataset,
    sensitivity_path,
    study_folders,
    table_path,
    variant_descriptions,
)
from sim.stats import Bounds

__all__ = [
    "Attribution",
    "Calibration",
    "DiscoveryCheck",
    "ReportError",
    "RunData",
    "Sensitivity",
    "Study",
    "load_attributions",
    "load_calibrations",
    "load_discovery_checks",
    "load_run",
    "load_sensitivities",
    "load_studies",
]

log = logging.getLogger(__name__)

REQUIRED = CORE_TABLES
"""Tables every run writes besides ``kpis``."""

OPTIONAL = ("queues",)
"""Tables shown when present (the event engine's queues)."""


class ReportError(SimError):
    """A dataset the report cannot read: not a dataset, ambiguous, or incomplete."""


@dataclass(frozen=True)
class RunData:
    """The tables of one run (all its replicates) and what they were made from.

    Attributes:
        root: the dataset folder.
        scenario: the scenario as stored in the files' metadata.
        variant: the run's variant label.
        base_seed: the run's base seed; replicate seeds are in ``seeds``.
        seeds: replicate seeds, in replicate order.
        engine, version, population_scale, run_id: from the files' metadata.
            Counts in the tables are simulated agents; the report divides them by
            ``population_scale`` to show the scenario's full population.
        tables: ``kpis``, ``occupancy``, ``flows``, ``retention``, ``ledger``
            and, when written, ``queues``.
    """

    root: str
    scenario: Scenario
    variant: str
    base_seed: int
    seeds: tuple[int, ...]
    engine: str
    version: str
    population_scale: float
    tables: dict[str, pa.Table] = field(repr=False)
    run_id: str = ""
    bounds: dict[str, Bounds] = field(default_factory=dict, repr=False)
    """Each KPI's range (:func:`sim.metrics.kpi_bounds`), which intervals respect."""
    values: str = ""
    """A sweep variant's values (``touchpoints.email.reach.use=0.1, interventions=recall``)."""

    @property
    def replicates(self) -> int:
        """Number of replicates."""
        return len(self.seeds)

    @property
    def label(self) -> str:
        """A short name: scenario, and variant when it is not ``base`` (by its values when
        a sweep made it)."""
        name = self.scenario.name
        if self.variant == "base":
            return name
        return f"{name} / {self.variant}" + (f" ({self.values})" if self.values else "")

    def table(self, name: str) -> pa.Table | None:
        """A table of the run, None when the run did not write it."""
        return self.tables.get(name)


def _fail_read(path: str, exc: Exception) -> ReportError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ReportError(f"cannot read {path}: {first}")


def _runs(root: str) -> list[RunInfo]:
    """The complete runs of a results folder (at least one finished replicate)."""
    if not os.path.isdir(root):
        raise ReportError(f"{root} is not a results dataset: no such folder")
    if not os.path.isdir(os.path.join(root, "kpis")):
        raise ReportError(f"{root} is not a results dataset: it has no kpis table "
                          f"(expected {os.path.join(root, 'kpis', 'scenario=…')})")
    try:
        runs = [r for r in list_runs(root) if r.replicates]
    except (OSError, pa.ArrowException) as exc:
        raise _fail_read(os.path.join(root, "kpis"), exc) from None
    if not runs:
        raise ReportError(f"{root} is not a results dataset: its kpis table holds no runs")
    return runs


def _listing(runs: list[RunInfo]) -> str:
    """The runs one per line, as ``journey runs`` lists them."""
    return "".join(f"\n  {r.describe()}" for r in runs)


SELECTORS = "--run, --scenario, --variant, --seed, --engine or --population-scale"
"""The options of ``journey report`` that choose a run."""


def load_run(root: str | os.PathLike[str], *, scenario: str | None = None,
             variant: str | None = None, seed: int | None = None,
             seeds: list[int] | None = None, run_id: str | None = None,
             engine: str | None = None, population_scale: float | None = None) -> RunData:
    """Read one run of a results dataset.

    A folder written by ``journey run`` holds one run per (scenario, variant);
    any of the run's keys narrows the choice when it holds several.

    Args:
        root: the dataset folder ``journey run --out`` wrote.
        scenario: scenario name.
        variant: variant label.
        seed: base seed.
        seeds: replicate seeds to keep (what one call of ``sim.run`` wrote).
        run_id: the run id, or a prefix of it (``journey runs`` lists them).
        engine: ``fast`` or ``des``.
        population_scale: the scale the run was simulated at.

    Returns:
        The run's tables, restricted to its replicates.

    Raises:
        ReportError: not a dataset, no run or several runs match, a table is
            missing or unreadable.

    Example:
        >>> run = load_run("results", scenario="dental_clinic")  # doctest: +SKIP
        >>> run.tables["kpis"].num_rows  # doctest: +SKIP
    """
    root = os.fspath(root)
    runs = _runs(root)
    wanted = [r for r in runs
              if (scenario is None or r.scenario == scenario)
              and (variant is None or r.variant == variant)
              and (seed is None or r.base_seed == seed)
              and (run_id is None or r.run_id.startswith(run_id))
              and (engine is None or r.engine == engine)
              and (population_scale is None
                   or math.isclose(r.population_scale, population_scale))]
    if not wanted:
        raise ReportError(f"no run in {root} matches the selection; it holds:{_listing(runs)}")
    if len(wanted) > 1:
        raise ReportError(f"{root} holds several runs; choose one with {SELECTORS}:"
                          f"{_listing(wanted)}")
    chosen = wanted[0]
    name, var = chosen.scenario, chosen.variant
    expr = ((ds.field("scenario") == name) & (ds.field("variant") == var)
            & (ds.field("run_id") == chosen.run_id))
    try:
        kpis = open_dataset(root, "kpis").to_table(filter=expr)
    except (OSError, pa.ArrowException) as exc:
        raise _fail_read(os.path.join(root, "kpis"), exc) from None
    if seeds is not None:
        kpis = kpis.filter(pc.is_in(kpis.column("seed"), pa.array(seeds, pa.uint64())))
    kpis = _in_replicate_order(kpis)
    if kpis.num_rows == 0:
        raise ReportError(f"no replicate of {chosen.describe()} has the seeds asked for")
    reps = kpis.column("replicate").to_pylist()
    run_seeds = [int(x) for x in kpis.column("seed").to_pylist()]
    first = table_path(root, "kpis", RunKey(name, var, reps[0], run_seeds[0], chosen.run_id))
    try:
        raw_meta = pq.read_schema(first).metadata or {}
    except (OSError, pa.ArrowException) as exc:
        raise _fail_read(first, exc) from None
    meta = {k.decode(): v.decode() for k, v in raw_meta.items() if k.startswith(b"journey.")}
    try:
        scen = load_scenario(meta["journey.scenario_yaml"])
    except (SimError, KeyError) as exc:
        raise ReportError(f"{root}: the scenario stored with run {chosen.run_id} does not load: "
                          f"{str(exc).splitlines()[0]}") from None
    expr = expr & ds.field("replicate").isin(pa.array(reps, pa.int32()))
    tables: dict[str, pa.Table] = {"kpis": kpis}
    for table in (*REQUIRED, *OPTIONAL):
        folder = os.path.join(root, table)
        if not os.path.isdir(folder):
            if table in OPTIONAL:
                continue
            raise ReportError(f"{root} is an incomplete dataset: the {table} table is missing")
        try:
            read = open_dataset(root, table).to_table(filter=expr)
        except (OSError, pa.ArrowException) as exc:
            raise _fail_read(folder, exc) from None
        if table in REQUIRED and read.num_rows == 0 and table != "flows":
            raise ReportError(f"{root} is an incomplete dataset: the {table} table has no rows "
                              f"for {name} variant {var}")
        tables[table] = _in_replicate_order(read)
    scale = chosen.population_scale
    return RunData(root=root, scenario=scen, variant=var, base_seed=chosen.base_seed or 0,
                   seeds=tuple(run_seeds), engine=chosen.engine, version=chosen.version,
                   population_scale=scale, tables=tables, run_id=chosen.run_id,
                   bounds=kpi_bounds(compile_scenario(scen, scale)),
                   values=variant_descriptions(root, name).get(var, ""))


def _in_replicate_order(table: pa.Table) -> pa.Table:
    """Rows sorted by replicate (stable, so each table keeps its own order within one)."""
    if table.num_rows == 0 or "replicate" not in table.column_names:
        return table
    order = pc.sort_indices(table, sort_keys=[("replicate", "ascending")])
    return table.take(order)


@dataclass(frozen=True)
class Study:
    """What ``journey optimise`` wrote for one study (``DIR/optimise/<name>/``)."""

    name: str
    trials: pa.Table
    importances: dict[str, float]
    summary: dict[str, Any]
    pareto: pa.Table | None


def load_studies(root: str | os.PathLike[str]) -> list[Study]:
    """Every optimisation study under ``root/optimise`` (none when the folder is absent)."""
    studies = []
    for folder in study_folders(root):
        try:
            trials = pq.read_table(folder / STUDY_FILES.trials)
            imp_file, sum_file = folder / STUDY_FILES.importances, folder / STUDY_FILES.summary
            importances = json.loads(imp_file.read_text()) if imp_file.is_file() else {}
            summary = json.loads(sum_file.read_text()) if sum_file.is_file() else {}
            pareto_file = folder / STUDY_FILES.pareto
            pareto = pq.read_table(pareto_file) if pareto_file.is_file() else None
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise _fail_read(str(folder), exc) from None
        studies.append(Study(folder.name, trials, {str(k): float(v) for k, v in
                                                   importances.items()}, summary, pareto))
    return studies


@dataclass(frozen=True)
class Calibration:
    """What ``journey calibrate`` wrote for one fit (``DIR/calibrate/<name>/``)."""

    name: str
    fit: pa.Table
    parameters: pa.Table | None
    summary: dict[str, Any] | None = None
    """``summary.json`` (the population scale and its source, the Monte Carlo error)."""


FIT_COLUMNS = ("target", "segment", "stage", "x", "observed", "fitted", "low", "high", "role")


def load_calibrations(root: str | os.PathLike[str]) -> list[Calibration]:
    """Every calibration under ``root/calibrate`` (none when the folder is absent)."""
    found = []
    for folder in calibration_folders(root):
        try:
            fit = pq.read_table(folder / CALIBRATION_FILES.fit)
            par_file = folder / CALIBRATION_FILES.parameters
            params = pq.read_table(par_file) if par_file.is_file() else None
            sum_file = folder / CALIBRATION_FILES.summary
            summary = json.loads(sum_file.read_text()) if sum_file.is_file() else None
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise _fail_read(str(folder), exc) from None
        missing = [c for c in FIT_COLUMNS if c not in fit.column_names]
        if missing:
            raise ReportError(f"{folder / CALIBRATION_FILES.fit} lacks the column(s) "
                              f"{', '.join(missing)}")
        found.append(Calibration(folder.name, fit, params,
                                 summary if isinstance(summary, dict) else None))
    return found


SIDE_COLUMNS = ("touchpoint", "removal_effect", "removal_low", "removal_high", "shapley",
                "shapley_low", "shapley_high", "markov", "last_touch", "first_touch")
"""Columns of an attribution's side-by-side table the report reads."""


@dataclass(frozen=True)
class Attribution:
    """What ``journey attribute`` wrote for one scenario (``DIR/attribute/<name>/``)."""

    name: str
    side_by_side: pa.Table
    removal: pa.Table
    summary: dict[str, Any]


def load_attributions(root: str | os.PathLike[str], scenario: str) -> list[Attribution]:
    """Every attribution of ``scenario`` under ``root/attribute`` (none when absent)."""
    found = []
    for folder in attribution_folders(root):
        summary_file = folder / ATTRIBUTION_FILES.summary
        side_file = folder / ATTRIBUTION_FILES.side_by_side
        if not summary_file.is_file() or not side_file.is_file():
            continue
        try:
            summary = json.loads(summary_file.read_text(encoding="utf-8"))
            if summary.get("scenario") != scenario:
                continue
            side = pq.read_table(side_file)
            removal = pq.read_table(folder / ATTRIBUTION_FILES.removal)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise _fail_read(str(folder), exc) from None
        missing = [c for c in SIDE_COLUMNS if c not in side.column_names]
        if missing:
            raise ReportError(f"{side_file} lacks the column(s) {', '.join(missing)}")
        found.append(Attribution(folder.name, side, removal, summary))
    return found


@dataclass(frozen=True)
class DiscoveryCheck:
    """What ``journey discover --check`` wrote beside a draft (``DIR/discover/<name>``)."""

    name: str
    table: pa.Table
    replicates: int


CHECK_COLUMNS = ("curve", "step", "day", "observed", "simulated", "low", "high", "inside")


def load_discovery_checks(root: str | os.PathLike[str], scenario: str) -> list[DiscoveryCheck]:
    """The checks of the drafts named ``scenario`` under ``root/discover`` (none when absent)."""
    found = []
    for path in discovery_checks(root):
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            raise _fail_read(str(path), exc) from None
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        if meta.get("journey.scenario") != scenario:
            continue
        missing = [c for c in CHECK_COLUMNS if c not in table.column_names]
        if missing:
            raise ReportError(f"{path} lacks the column(s) {', '.join(missing)}")
        name = path.name.split(".")[0]
        found.append(DiscoveryCheck(name, table, int(meta.get("journey.replicates", "0"))))
    return found


@dataclass(frozen=True)
class Sensitivity:
    """What ``journey sensitivity`` wrote for one scenario and method."""

    method: str
    indices: pa.Table


def load_sensitivities(root: str | os.PathLike[str], scenario: str) -> list[Sensitivity]:
    """Every sensitivity analysis of ``scenario`` in ``root`` (none when absent)."""
    found = []
    for method in ("sobol", "morris"):
        path = Path(root) / sensitivity_path(scenario, method)
        if not path.is_file():
            continue
        try:
            found.append(Sensitivity(method, pq.read_table(path)))
        except (OSError, pa.ArrowException) as exc:
            raise _fail_read(str(path), exc) from None
    return found
