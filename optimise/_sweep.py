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
import itertools
import json
import logging
import math
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import numba
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

import sim
from sim import Scenario, ScenarioError, SimError
from sim.metrics import kpi_bounds, summarise
from sim.model import compile_scenario
from sim.results import (
    Replaced,
    RunKey,
    claim_variants,
    is_complete,
    open_dataset,
    variants_path,
    write_dataset_table,
)
from sim.scenario import parse_assignment, parse_value, problems_from_validation, read_yaml

__all__ = ["SweepFile", "SweepResult", "Variant", "design", "parse_vary", "read_design", "sweep"]

log = logging.getLogger(__name__)

def _owned(variants: Sequence[Variant]) -> re.Pattern[str]:
    """The variant ids a sweep owns: its design's family (``v0000``…, or a sensitivity
    design's ``s00000``…), so a smaller rerun removes the variants it dropped; ids
    outside a family (a ``journey run --variant`` label) are owned only by name."""
    prefixes = {re.sub(r"\d+$", "", v.id) for v in variants}
    if len(prefixes) == 1 and all(re.fullmatch(r"[a-z]+\d+", v.id) for v in variants):
        return re.compile(rf"{re.escape(prefixes.pop())}\d+")
    return re.compile("|".join(re.escape(v.id) for v in variants))


INTERVENTIONS = "interventions"
"""The design key whose values are sets of interventions to enable (``a+b``, ``none``)."""
_TABLES = ("occupancy", "flows", "retention", "ledger")


@dataclass(frozen=True)
class Variant:
    """One point of a sweep design: an id and the values it sets."""

    id: str
    values: dict[str, Any]

    def describe(self) -> str:
        """The variant's values as a design writes them: ``path=1.5, interventions=a+b``."""
        def text(value: Any) -> str:
            if isinstance(value, list):
                return "+".join(value) or "none"
            return json.dumps(value) if isinstance(value, bool) or value is None else str(value)

        return ", ".join(f"{k}={text(v)}" for k, v in self.values.items())

    def scenario(self, base: Scenario) -> Scenario:
        """``base`` with this variant's interventions and paths applied.

        Raises:
            ScenarioError: the variant breaks a rule; each problem names the
                variant and its values (``variant v0003 (…=1.5): path: message``).
        """
        where = f"variant {self.id} ({self.describe()})"
        values = dict(self.values)
        overrides: dict[str, Any] = {}
        if INTERVENTIONS in values:
            chosen = values.pop(INTERVENTIONS)
            on = set(chosen)
            overrides.update({f"interventions.{n}.enabled": n in on for n in base.interventions})
            unknown = sorted(on - set(base.interventions))
            if unknown:
                raise ScenarioError.single(
                    where, f"unknown intervention {unknown[0]!r} (known: "
                           f"{', '.join(base.interventions) or 'none'})", path=INTERVENTIONS)
        overrides.update(values)
        try:
            return base.apply(overrides=overrides)
        except ScenarioError as exc:
            raise ScenarioError([replace(p, source=where) for p in exc.problems]) from None


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


def parse_vary(spec: str) -> tuple[str, list[Any]]:
    """``PATH=V1,V2,…`` -> (path, values); ``interventions=a+b,none`` -> sets of names.

    Each value is read like ``journey run --set`` reads one
    (:func:`sim.scenario.parse_value`: a YAML 1.2 scalar).
    """
    path, rest = parse_assignment(spec, flag="--vary", form="PATH=V1,V2,…",
                                  example="touchpoints.email.reach.use=0.1,0.2")
    items = [v.strip() for v in rest.split(",")]
    if any(not v for v in items):
        raise SimError(f"--vary {spec}: an empty value between commas")
    if path == INTERVENTIONS:
        return path, [[] if v == "none" else [n.strip() for n in v.split("+")] for v in items]
    return path, [parse_value(v, flag="--vary", spec=spec) for v in items]


def design(vary: Mapping[str, Sequence[Any]], *, zip_: bool = False) -> list[Variant]:
    """The variants of a grid (every combination) or of zipped lists (position by position).

    Variant ids are ``v0000``, ``v0001``… in design order, so the same design
    gives the same ids.
    """
    if not vary:
        raise SimError("a sweep needs at least one --vary PATH=V1,V2,…")
    keys = list(vary)
    lists = [list(vary[k]) for k in keys]
    if zip_:
        sizes = {len(v) for v in lists}
        if len(sizes) != 1:
            lengths = ", ".join(f"{k}: {len(v)}" for k, v in zip(keys, lists, strict=True))
            raise SimError(f"--zip needs lists of one length; got {lengths}")
        rows: Iterator[tuple[Any, ...]] = zip(*lists, strict=True)
    else:
        rows = itertools.product(*lists)
    return [Variant(f"v{i:04d}", dict(zip(keys, row, strict=True))) for i, row in enumerate(rows)]


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
        names = list(_TABLES)
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
    if todo:
        _submit_all(scenarios, todo, base_seed, out_s, population_scale, engine, workers,
                    scheduler, skipped, total, progress)
    summary = _summary(out_s, scenario.name, scenarios, runs, replicates)
    return SweepResult(out=out_s, variants=list(variants), replicates=replicates,
                       summary=summary, ran=len(todo), skipped=skipped, paths=paths,
                       replaced=replaced)


def _submit_all(scenarios: Mapping[str, Scenario], todo: Sequence[tuple[Variant, int]],
                base_seed: int, out: str, population_scale: float, engine: str,
                workers: int | None, scheduler: str | None, skipped: int, total: int,
                progress: Callable[[int, int], None] | None) -> None:
    client, cluster, threads = _client(workers, scheduler)
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


def _summary(out: str, scenario: str, scenarios: Mapping[str, Scenario],
             runs: Mapping[str, str], replicates: int) -> pa.Table:
    """KPI mean and 95% CI (inside the KPI's range) per variant, read back from the dataset."""
    import pyarrow.dataset as ds

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


class SweepFile(BaseModel):
    """A sweep file: the design ``journey sweep --design FILE`` runs.

    ``vary`` maps dotted scenario paths (or ``interventions``) to the values
    a variant takes; ``zip: true`` pairs the lists position by position
    instead of taking every combination.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    vary: dict[str, Annotated[list[bool | int | float | str | list[str] | None],
                              Field(min_length=1)]] = Field(min_length=1)
    zip: bool = False

    @field_validator("vary")
    @classmethod
    def _paths(cls, vary: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if any(not key.strip() for key in vary):
            raise ValueError("a path must not be empty")
        return vary


def read_design(path: str | os.PathLike[str]) -> tuple[dict[str, list[Any]], bool]:
    """Read a sweep file (see :class:`SweepFile`); every problem names its line.

    Raises:
        ScenarioError: unreadable, not YAML, or breaking the sweep file's schema.
    """
    p = Path(path)
    source = str(p)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ScenarioError.single(source, f"cannot read the sweep file: "
                                           f"{exc.strerror or exc}") from None
    located = read_yaml(raw, source)
    if not isinstance(located.data, dict):
        raise ScenarioError.single(source, "a sweep file is a mapping: vary: {PATH: [V1, V2, "
                                           "…]} and optional zip: true", line=1, column=1)
    try:
        spec = SweepFile.model_validate(located.data)
    except ValidationError as exc:
        raise ScenarioError(problems_from_validation(exc, located, source, SweepFile)) from None
    vary: dict[str, list[Any]] = {}
    for key, values in spec.vary.items():
        if key == INTERVENTIONS:
            values = [[] if v in ("none", None) else
                      ([v] if isinstance(v, str) else list(v)) for v in values]  # type: ignore
        vary[key] = list(values)
    return vary, spec.zip


def mean_kpi(summary: pa.Table, kpi: str, ids: Sequence[str]) -> np.ndarray:
    """The mean of one KPI for each variant id, in order (NaN where undefined)."""
    lookup = {(r["variant"], r["kpi"]): r["mean"] for r in summary.to_pylist()}
    return np.array([lookup.get((i, kpi), math.nan) for i in ids], float)
