"""Reading what a report shows: one run of a results dataset, and what lies beside it.

A results folder can hold several runs (scenarios, variants, base seeds).
:func:`load_run` picks one by its scenario name, variant and base seed
(read from each file's schema metadata), and refuses to guess when the
folder holds more than one that matches. Optimisation studies
(``DIR/optimise/<study>/``) and calibrations (``DIR/calibrate/<name>/``)
are read when present, as is the event engine's ``queues`` table.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from sim import Scenario, SimError, load_scenario
from sim.results import open_dataset

__all__ = ["Calibration", "ReportError", "RunData", "Study", "load_calibrations", "load_run",
           "load_studies"]

log = logging.getLogger(__name__)

REQUIRED = ("occupancy", "flows", "retention", "ledger")
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
        engine, version, population_scale: from the files' metadata.
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

    @property
    def replicates(self) -> int:
        """Number of replicates."""
        return len(self.seeds)

    @property
    def label(self) -> str:
        """A short name: scenario, and variant when it is not ``base``."""
        name = self.scenario.name
        return name if self.variant == "base" else f"{name} / {self.variant}"

    def table(self, name: str) -> pa.Table | None:
        """A table of the run, None when the run did not write it."""
        return self.tables.get(name)


@dataclass(frozen=True)
class _Part:
    path: str
    scenario: str
    variant: str
    base_seed: int
    seed: int
    replicate: int
    digest: str
    meta: dict[str, str]


def _fail_read(path: str, exc: Exception) -> ReportError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ReportError(f"cannot read {path}: {first}")


def _kpi_parts(root: str) -> list[_Part]:
    if not os.path.isdir(root):
        raise ReportError(f"{root} is not a results dataset: no such folder")
    if not os.path.isdir(os.path.join(root, "kpis")):
        raise ReportError(f"{root} is not a results dataset: it has no kpis table "
                          f"(expected {os.path.join(root, 'kpis', 'scenario=…')})")
    try:
        dataset = open_dataset(root, "kpis")
        fragments = list(dataset.get_fragments())
    except (OSError, pa.ArrowException) as exc:
        raise _fail_read(os.path.join(root, "kpis"), exc) from None
    parts = []
    for frag in fragments:
        keys = ds.get_partition_keys(frag.partition_expression)
        try:
            read = pq.read_table(frag.path, columns=["seed"])   # keeps the file's metadata
            schema, cols = read.schema, read.to_pylist()
        except (OSError, pa.ArrowException, KeyError) as exc:
            raise _fail_read(frag.path, exc) from None
        meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()
                if k.startswith(b"journey.")}
        if (not cols or "journey.scenario_yaml" not in meta
                or not {"scenario", "variant"} <= keys.keys()):
            raise ReportError(f"{frag.path} is not a run's kpis file (no run keys or scenario "
                              f"metadata)")
        parts.append(_Part(frag.path, str(keys["scenario"]), str(keys["variant"]),
                           int(meta.get("journey.base_seed", cols[0]["seed"])),
                           int(cols[0]["seed"]), int(keys.get("replicate", 0)),
                           meta.get("journey.scenario_hash", ""), meta))
    if not parts:
        raise ReportError(f"{root} is not a results dataset: its kpis table holds no runs")
    return parts


def _describe(groups: dict[tuple[str, str, int, str], list[_Part]]) -> str:
    return "; ".join(f"{s} variant {v} seed {b} ({len(p)} replicate(s))"
                     for (s, v, b, _), p in sorted(groups.items()))


def load_run(root: str | os.PathLike[str], *, scenario: str | None = None,
             variant: str | None = None, seed: int | None = None,
             seeds: list[int] | None = None) -> RunData:
    """Read one run of a results dataset.

    Args:
        root: the dataset folder ``journey run --out`` wrote.
        scenario: scenario name, needed when the folder holds several.
        variant: variant label, needed when the scenario has several.
        seed: base seed, needed when the same scenario and variant ran with several.
        seeds: replicate seeds to keep (what one call of ``sim.run`` wrote).

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
    parts = _kpi_parts(root)
    wanted = [p for p in parts
              if (scenario is None or p.scenario == scenario)
              and (variant is None or p.variant == variant)
              and (seed is None or p.base_seed == seed)
              and (seeds is None or p.seed in seeds)]
    groups: dict[tuple[str, str, int, str], list[_Part]] = {}
    for p in wanted:
        groups.setdefault((p.scenario, p.variant, p.base_seed, p.digest), []).append(p)
    if not groups:
        have: dict[tuple[str, str, int, str], list[_Part]] = {}
        for p in parts:
            have.setdefault((p.scenario, p.variant, p.base_seed, p.digest), []).append(p)
        raise ReportError(f"no run in {root} matches the selection; it holds: {_describe(have)}")
    if len(groups) > 1:
        raise ReportError(f"{root} holds several runs; choose one with --scenario, --variant "
                          f"or --seed: {_describe(groups)}")
    (name, var, base, _), chosen = next(iter(groups.items()))
    chosen.sort(key=lambda p: p.replicate)
    if len({p.replicate for p in chosen}) != len(chosen):
        raise ReportError(f"{root}: run {name} variant {var} seed {base} has the same replicate "
                          f"twice")
    meta = chosen[0].meta
    try:
        scen = load_scenario(meta["journey.scenario_yaml"])
    except SimError as exc:
        raise ReportError(f"{chosen[0].path}: the stored scenario does not load: "
                          f"{str(exc).splitlines()[0]}") from None
    run_seeds = [p.seed for p in chosen]
    expr = ((ds.field("scenario") == name) & (ds.field("variant") == var)
            & ds.field("seed").isin(pa.array(run_seeds, pa.uint64())))
    tables: dict[str, pa.Table] = {}
    for table in ("kpis", *REQUIRED, *OPTIONAL):
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
        tables[table] = _in_replicate_order(read, run_seeds)
    return RunData(root=root, scenario=scen, variant=var, base_seed=base,
                   seeds=tuple(run_seeds), engine=meta.get("journey.engine", "?"),
                   version=meta.get("journey.version", "?"),
                   population_scale=float(meta.get("journey.population_scale", "1.0")),
                   tables=tables)


def _in_replicate_order(table: pa.Table, seeds: list[int]) -> pa.Table:
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
    base = Path(root) / "optimise"
    studies = []
    for folder in sorted(p for p in base.glob("*") if (p / "trials.parquet").is_file()):
        try:
            trials = pq.read_table(folder / "trials.parquet")
            imp_file, sum_file = folder / "importances.json", folder / "summary.json"
            importances = json.loads(imp_file.read_text()) if imp_file.is_file() else {}
            summary = json.loads(sum_file.read_text()) if sum_file.is_file() else {}
            pareto_file = folder / "pareto.parquet"
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


FIT_COLUMNS = ("target", "segment", "stage", "x", "observed", "fitted", "low", "high", "role")


def load_calibrations(root: str | os.PathLike[str]) -> list[Calibration]:
    """Every calibration under ``root/calibrate`` (none when the folder is absent)."""
    base = Path(root) / "calibrate"
    found = []
    for folder in sorted(p for p in base.glob("*") if (p / "fit.parquet").is_file()):
        try:
            fit = pq.read_table(folder / "fit.parquet")
            par_file = folder / "parameters.parquet"
            params = pq.read_table(par_file) if par_file.is_file() else None
        except (OSError, pa.ArrowException) as exc:
            raise _fail_read(str(folder), exc) from None
        missing = [c for c in FIT_COLUMNS if c not in fit.column_names]
        if missing:
            raise ReportError(f"{folder / 'fit.parquet'} lacks the column(s) "
                              f"{', '.join(missing)}")
        found.append(Calibration(folder.name, fit, params))
    return found
