"""Batch sweeps: many variants × replicates of a scenario on Dask, into one dataset.

A task is one (variant, replicate): a pure function of the scenario, the
variant's values and the replicate number, whose seed is
``sim.derive_seed(seed, replicate)`` — the seed a plain ``journey run`` gives
that replicate, so every variant shares its random numbers with the others
(common random numbers) and a sweep equals the serial runs bit for bit. Each
task writes its own Parquet files into the dataset (atomically, through
``sim.run(out=…)``) and returns only its KPI row; the client never holds the
tables. A task whose files are already stored for the same scenario text is
not submitted again, so a rerun of an interrupted sweep finishes it; a lost
worker's tasks are retried on the others by Dask.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

import sim
from optimise._design import INTERVENTIONS, Variant
from sim import Scenario, SimError
from sim.metrics import kpi_bounds, summarise
from sim.model import compile_scenario
from sim.results import (
    CORE_TABLES,
    Replaced,
    RunKey,
    claim_variants,
    is_complete,
    open_dataset,
    variants_path,
    write_dataset_table,
)

__all__ = ["SweepResult", "mean_kpi", "sweep"]

log = logging.getLogger(__name__)


def _owned(variants: Sequence[Variant]) -> re.Pattern[str]:
    """The variant ids a sweep owns: its design's family (``v0000``…, or a sensitivity
    design's ``s00000``…), so a smaller rerun removes the variants it dropped; ids
    outside a family (a ``journey run --variant`` label) are owned only by name."""
    prefixes = {re.sub(r"\d+$", "", v.id) for v in variants}
    if len(prefixes) == 1 and all(re.fullmatch(r"[a-z]+\d+", v.id) for v in variants):
        return re.compile(rf"{re.escape(prefixes.pop())}\d+")
    return re.compile("|".join(re.escape(v.id) for v in variants))



@dataclass
class SweepResult:
    """What :func:`sweep` left in the dataset."""

    out: str
    variants: list[Variant]
    replicates: int
    summary: pa.Table
    """Per variant and KPI: mean, 95% CI and n over replicates."""
    ran: int
    skipped: int
    paths: list[str] = field(default_factory=list)
    replaced: list[Replaced] = field(default_factory=list)
    """What the sweep removed from the dataset: runs of an earlier design or scenario."""
    connect_s: float = 0.0
    """Seconds it took to start the local cluster (or reach the scheduler); 0 when every
    task was already stored."""


@dataclass(frozen=True)
class _Task:
    scenario: Scenario
    variant: str
    replicate: int
    seed: int
    out: str
    population_scale: float
    threads: int | None
    engine: str = "fast"


def _run_task(task: _Task) -> dict[str, Any]:
    """One (variant, replicate): simulate, write its files, return its KPI row."""
    result = sim.run(task.scenario, seed=task.seed, replicates=1, first_replicate=task.replicate,
                     variant=task.variant, out=task.out, population_scale=task.population_scale,
                     threads=task.threads, engine=task.engine, resume=True, exclusive=False)
    row = result.kpis.to_pylist()[0]
    row["agent_steps"] = int(row.get("agents", 0)) * task.scenario.steps
    return row


def _variants_table(variants: Sequence[Variant], scenario: Scenario) -> pa.Table:
    keys = list(dict.fromkeys(k for v in variants for k in v.values))
    cols: dict[str, Any] = {"scenario": [scenario.name] * len(variants),
                            "variant": [v.id for v in variants]}
    for k in keys:
        vals = [v.values.get(k) for v in variants]
        if k == INTERVENTIONS:
            cols[k] = [None if x is None else ("+".join(x) or "none") for x in vals]
        elif all(x is None or isinstance(x, bool) for x in vals):
            cols[k] = pa.array(vals, pa.bool_())
        elif all(x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))
                 for x in vals):
            cols[k] = pa.array([None if x is None else float(x) for x in vals], pa.float64())
        else:
            cols[k] = [None if x is None else str(x) for x in vals]
    return pa.table(cols)


def _client(workers: int | None, scheduler: str | None) -> tuple[Any, Any, int | None]:
    """A Dask client (and the local cluster it owns) and numba threads per task."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise SimError("sweeps run on Dask: pip install 'journey-engine[distributed]'") from None
    if scheduler is not None:
        try:
            return Client(scheduler, timeout="20s"), None, 1
        except (OSError, TimeoutError) as exc:
            raise SimError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    cores = int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
    n = workers or max(1, min(cores, os.cpu_count() or 1))
    # the workers log at most what this process lets Dask log, and never below ERROR
    quiet = max(logging.ERROR, logging.getLogger("distributed").getEffectiveLevel())
    with _sigint_held():
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=quiet)
    return Client(cluster), cluster, max(1, cores // n)


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Ignore SIGINT while the local cluster starts its worker processes.

    They inherit the ignored signal (a blocked one they would not), so the
    terminal's Ctrl-C never reaches them: this process alone handles it and
    shuts them down, instead of every worker printing its own traceback. The
    price: a Ctrl-C in the second or two the cluster takes to start is lost.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def sweep(scenario: Scenario | str | os.PathLike[str], variants: Sequence[Variant], *,
          replicates: int = 1, out: str | os.PathLike[str] = "results", seed: int | None = None,
          population_scale: float = 1.0, engine: str = "fast", workers: int | None = None,
          scheduler: str | None = None,
          progress: Callable[[int, int], None] | None = None) -> SweepResult:
    """Run every variant × replicate on Dask into one dataset.

    Args:
        scenario: the base scenario (or its file).
        variants: the design (see :func:`design`).
        replicates: replicates of each variant, numbered 0..R-1 with the seeds of
            ``journey run``.
        out: dataset folder or pyarrow filesystem URI.
        seed: base seed (default: the scenario's).
        population_scale: as in :func:`sim.run`.
        engine: ``fast`` or ``des`` (capacity-limited touchpoints).
        workers: worker processes of the local cluster (default: one per core);
            numba threads per worker are cores // workers.
        scheduler: address of an existing Dask scheduler instead of a local cluster.
        progress: called with (tasks done, tasks in all).

    Returns:
        The per-variant summary and what ran.

    Raises:
        SimError: a bad design, Dask missing, an unreachable scheduler.
    """
    if not isinstance(scenario, Scenario):
        scenario = sim.load_scenario(scenario)
    if not isinstance(replicates, int) or replicates < 1:
        raise SimError(f"replicates must be a whole number >= 1, not {replicates!r}")
    if workers is not None and scheduler is not None:
        raise SimError("give --workers (a local cluster) or --scheduler (an existing one), "
                       "not both")
    if engine not in sim.ENGINES:
        raise SimError(f"unknown engine {engine!r}: this version runs {', '.join(sim.ENGINES)}")
    if workers is not None and workers < 1:
        raise SimError(f"workers must be a whole number >= 1, not {workers}")
    base_seed = scenario.seed if seed is None else int(seed)
    out_s = os.fspath(out)
    # every variant is validated here, before any task runs
    scenarios = {v.id: v.scenario(scenario) for v in variants}
    identities = {v.id: sim.run_identity(scenarios[v.id], engine=engine,
                                         population_scale=population_scale, base_seed=base_seed)
                  for v in variants}
    runs = {vid: rid for vid, (rid, _) in identities.items()}
    expect = {vid: identity for vid, (_, identity) in identities.items()}
    # the dataset holds this design only: earlier designs' variants and runs go
    replaced = claim_variants(out_s, scenario.name, _owned(variants), runs,
                              replicates=replicates, expect=expect)
    todo: list[tuple[Variant, int]] = []
    skipped = 0
    for v in variants:
        names = list(CORE_TABLES)
        if engine == "des" and any(tp.capacity for tp in scenarios[v.id].touchpoints.values()):
            names.append("queues")
        for r in range(replicates):
            key = RunKey(scenario.name, v.id, r, sim.derive_seed(base_seed, r), runs[v.id])
            if is_complete(out_s, key, names):
                skipped += 1
            else:
                todo.append((v, r))
    total = len(variants) * replicates
    if progress is not None:
        progress(skipped, total)
    paths = [write_dataset_table(out_s, variants_path(scenario.name),
                                _variants_table(variants, scenario).drop_columns(["scenario"]))]
    connect_s = _submit_all(scenarios, todo, base_seed, out_s, population_scale, engine,
                            workers, scheduler, skipped, total, progress) if todo else 0.0
    summary = _summary(out_s, scenario.name, scenarios, runs, replicates)
    return SweepResult(out=out_s, variants=list(variants), replicates=replicates,
                       summary=summary, ran=len(todo), skipped=skipped, paths=paths,
                       replaced=replaced, connect_s=connect_s)


def _submit_all(scenarios: Mapping[str, Scenario], todo: Sequence[tuple[Variant, int]],
                base_seed: int, out: str, population_scale: float, engine: str,
                workers: int | None, scheduler: str | None, skipped: int, total: int,
                progress: Callable[[int, int], None] | None) -> float:
    """Run the tasks on Dask; returns the seconds the cluster took to start."""
    started = time.perf_counter()
    client, cluster, threads = _client(workers, scheduler)
    connect_s = time.perf_counter() - started
    from distributed import as_completed

    try:
        futures = [client.submit(_run_task, _Task(scenarios[v.id], v.id, r, base_seed, out,
                                                  population_scale, threads, engine),
                                 key=f"journey-{v.id}-r{r}-{scenarios[v.id].content_hash[:12]}",
                                 pure=False)
                   for v, r in todo]
        done = skipped
        for future in as_completed(futures):
            try:
                future.result()
            except SimError:
                raise
            except Exception as exc:
                raise SimError(f"a sweep task failed: {type(exc).__name__}: {exc}") from exc
            future.release()
            done += 1
            if progress is not None:
                progress(done, total)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return connect_s


def _summary(out: str, scenario: str, scenarios: Mapping[str, Scenario],
             runs: Mapping[str, str], replicates: int) -> pa.Table:
    """KPI mean and 95% CI (inside the KPI's range) per variant, read back from the dataset."""
    table = open_dataset(out, "kpis").to_table(
        filter=(ds.field("scenario") == scenario) & ds.field("run_id").isin(list(runs.values()))
        & (ds.field("replicate") < replicates))
    rows = table.to_pylist()
    cols: dict[str, list[Any]] = {"variant": [], "kpi": [], "mean": [], "ci_low": [],
                                  "ci_high": [], "n": [], "few": []}
    for vid, variant in scenarios.items():
        mine = [r for r in rows if r["variant"] == vid and r["run_id"] == runs[vid]]
        bounds = kpi_bounds(compile_scenario(variant))
        for kpi, s in summarise(mine, 0.95, bounds).items():
            cols["variant"].append(vid)
            cols["kpi"].append(kpi)
            for col in ("mean", "ci_low", "ci_high", "n", "few"):
                cols[col].append(s[col])
    return pa.table(cols)


def mean_kpi(summary: pa.Table, kpi: str, ids: Sequence[str]) -> np.ndarray:
    """The mean of one KPI for each variant id, in order (NaN where undefined)."""
    lookup = {(r["variant"], r["kpi"]): r["mean"] for r in summary.to_pylist()}
    return np.array([lookup.get((i, kpi), math.nan) for i in ids], float)
