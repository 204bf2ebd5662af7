"""The public run API: load → compile → simulate replicates → tables (→ Parquet)."""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numba
import numpy as np
import pyarrow as pa

from sim._arrow import column, labelled, table
from sim._errors import SimError, unknown_name
from sim._version import __version__
from sim.engines import fast
from sim.engines._driver import EVENT_KINDS, PARALLEL_MIN_AGENTS
from sim.engines._kernels import RNG_SCHEME, mix64
from sim.engines.raw import RawRun
from sim.metrics import (
    kpi_bounds,
    kpis,
    ledger,
    queue_table,
    retention_curve,
    segment_kpis,
    summarise,
)
from sim.model import CompiledModel, compile_scenario, switch_off
from sim.results import (
    CORE_TABLES,
    Replaced,
    RunKey,
    claim,
    is_complete,
    make_run_id,
    read_file,
    run_metadata,
    table_path,
    with_keys,
    write_run_table,
)
from sim.scenario import Scenario, dates, is_variant_label, load_scenario
from sim.stats import Bounds

__all__ = ["ENGINES", "RunCounts", "RunResult", "derive_seed", "replicate_threads", "run",
           "run_identity", "simulate"]

log = logging.getLogger(__name__)

ENGINES = ("fast", "des")
"""Engines this version can run: ``fast`` (numba kernels) and ``des`` (SimPy events,
capacity-limited touchpoints)."""


def _simulate(engine: str) -> Callable[..., RawRun]:
    """An engine's ``simulate``; the event engine (SimPy) is imported only when used."""
    if engine == "des":
        from sim.engines import des

        return des.simulate
    return fast.simulate


T = TypeVar("T")


def derive_seed(seed: int, replicate: int) -> int:
    """Seed of replicate ``replicate`` under base ``seed`` (a splitmix64 hash of both)."""
    z = np.uint64(seed) ^ np.uint64(mix64(np.uint64(replicate) + np.uint64(0x632BE59BD9B4E019)))
    return int(mix64(z)) & 0x7FFF_FFFF_FFFF_FFFF


@dataclass
class RunResult:
    """Tables of a run over all its replicates (DESIGN.md, "Outputs").

    Every table carries the run keys ``scenario``, ``variant``, ``replicate``,
    ``run_id`` and ``seed``. ``events`` is None unless requested. Counts in the
    tables are simulated agents (``population_scale`` times the scenario's);
    KPIs and money are expressed for the scenario's full population.
    """

    scenario: Scenario
    seed: int
    seeds: list[int]
    engine: str
    occupancy: pa.Table
    flows: pa.Table
    kpis: pa.Table
    retention: pa.Table
    ledger: pa.Table
    events: pa.Table | None = None
    paths: list[str] = field(default_factory=list)
    queues: pa.Table | None = None
    run_id: str = ""
    population_scale: float = 1.0
    variant: str = "base"
    bounds: dict[str, Bounds] = field(default_factory=dict)
    """Each KPI's range, which its interval respects (:func:`sim.metrics.kpi_bounds`)."""
    replaced: list[Replaced] = field(default_factory=list)
    """What writing this run removed from its folder key (another run's replicates)."""

    def summary(self, level: float = 0.95) -> pa.Table:
        """Each KPI's mean over replicates with a confidence interval inside its range.

        Columns ``kpi``, ``mean``, ``ci_low``, ``ci_high``, ``sd``, ``n`` and
        ``few`` (too few replicates for the interval to mean much).
        """
        rows = self.kpis.to_pylist()
        summary = summarise(rows, level, self.bounds)
        names = list(summary)
        return table({
            "kpi": names,
            **{col: [summary[k][col] for k in names]
               for col in ("mean", "ci_low", "ci_high", "sd", "n", "few")},
        })


def _inferred(labels: Sequence[str], codes: np.ndarray) -> pa.Array:
    """``labels[codes]`` typed as ``pa.array`` types an object array: the null type when empty."""
    return labelled(labels, codes) if len(codes) else pa.nulls(0)


def _tables(raw: RawRun, events: bool) -> dict[str, pa.Table]:
    model = raw.model
    stages, segments = list(model.stages), list(model.segments)
    sd = model.arrays.step_days
    T1, G, S = raw.occupancy.shape
    t, g, s = np.meshgrid(np.arange(T1), np.arange(G), np.arange(S), indexing="ij")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_sat = np.where(raw.occupancy > 0, raw.sat_sum / np.maximum(raw.occupancy, 1), np.nan)
    occupancy = table({
        "step": t.ravel().astype(np.int32), "day": t.ravel() * sd,
        "segment": _inferred(segments, g.ravel()), "stage": _inferred(stages, s.ravel()),
        "count": raw.occupancy.ravel(), "mean_satisfaction": mean_sat.ravel(),
    })
    parts: list[dict[str, Any]] = []
    nz = np.nonzero(raw.flows)
    kinds = ["transition", "arrival", "referral"]
    # "from": a stage's code, -1 for none (an arrival or a referral comes from nowhere)
    parts.append({"step": nz[0], "segment": nz[1], "from": nz[2], "to": nz[3],
                  "kind": 0, "count": raw.flows[nz]})
    for kind, arr in ((1, raw.arrivals), (2, raw.referred)):
        nz = np.nonzero(arr)
        parts.append({"step": nz[0], "segment": nz[1], "from": np.full(nz[0].size, -1),
                      "to": nz[2], "kind": kind, "count": arr[nz]})
    flows = table({
        "step": np.concatenate([p["step"] for p in parts]).astype(np.int32),
        "day": np.concatenate([p["step"] for p in parts]) * sd,
        "segment": _inferred(segments, np.concatenate([p["segment"] for p in parts])),
        "from_stage": labelled([*stages, None], np.concatenate([p["from"] for p in parts])),
        "to_stage": _inferred(stages, np.concatenate([p["to"] for p in parts])),
        "kind": _inferred(kinds, np.concatenate([np.full(p["step"].size, p["kind"])
                                                for p in parts])),
        "count": np.concatenate([p["count"] for p in parts]).astype(np.int64),
    })
    row = kpis(raw)
    kpi = table({name: [value] for name, value in row.items()})
    kpi = kpi.append_column("agents", column([raw.agents], pa.int64()))
    curve = retention_curve(raw)
    retention = table({k: v for k, v in curve.items()})
    money = ledger(raw)
    money_t = table({"step": money["step"].astype(np.int32), "day": money["step"] * sd,
                     "item": money["item"], "kind": money["kind"],
                     "exposures": money["exposures"], "amount": money["amount"]})
    out = {"occupancy": occupancy, "flows": flows, "kpis": kpi, "retention": retention,
           "ledger": money_t}
    if events and raw.events is not None:
        e = raw.events
        frm = e["from_stage"]
        out["events"] = table({
            "step": e["step"].astype(np.int32), "day": e["step"] * sd,
            "agent": e["agent"].astype(np.int64), "segment": _inferred(segments, e["segment"]),
            "from_stage": labelled([*stages, None], np.where(frm >= 0, frm, -1)),
            "to_stage": _inferred(stages, e["to_stage"]),
            "kind": labelled(EVENT_KINDS, e["kind"]),
            "touchpoint": labelled([*model.touchpoints, None], e["touchpoint"]),
        })
    queues = queue_table(raw)
    if queues is not None:
        queues["day"] = queues["step"] * sd
        order = ["step", "day", "touchpoint", "capacity", "arrivals", "served",
                 "served_within_target", "abandoned",
                 "withdrawn", "queue_length", "in_service", "mean_wait_days", "p90_wait_days",
                 "utilisation", "utilisation_open"]
        out["queues"] = table({
            k: column(queues[k], pa.int32() if k == "step" else None) for k in order})
    if model.scenario.time.start_date is not None:
        # occupancy: the state at the end of step t, the start of day t * step_days;
        # the other tables: what happened during step t, on the days from (t - 1) *
        # step_days: the date of its first day (the initial population's on day 0)
        for name, tab in out.items():
            if "day" in tab.column_names:
                days = tab.column("day").to_numpy(zero_copy_only=False)
                if name != "occupancy":
                    days = np.maximum(days - sd, 0.0)
                out[name] = tab.add_column(tab.column_names.index("day") + 1, "date",
                                           column(dates(model.scenario.time, days),
                                                  pa.date32()))
    return out


def run_identity(scenario: Scenario, *, engine: str, population_scale: float,
                 base_seed: int, exposures: bool = False) -> tuple[str, dict[str, str]]:
    """The run id of a run and the metadata it is made from.

    Returns:
        (run id, {scenario_hash, engine, population_scale, base_seed, rng, and
        ``events: exposures`` for a run with exposure events}) as written into the
        run's files (``journey.<name>``).
    """
    return _identity(scenario.content_hash, engine=engine, population_scale=population_scale,
                     base_seed=base_seed, exposures=exposures)


def _identity(scenario_hash: str, *, engine: str, population_scale: float, base_seed: int,
              exposures: bool) -> tuple[str, dict[str, str]]:
    """:func:`run_identity` of the scenario whose content hash is ``scenario_hash``."""
    identity = {"scenario_hash": scenario_hash, "engine": engine,
                "population_scale": repr(float(population_scale)),
                "base_seed": str(int(base_seed)), "rng": RNG_SCHEME}
    if exposures:
        identity["events"] = "exposures"
    return make_run_id(**identity), identity


def _with_run_columns(table: pa.Table, key: RunKey) -> pa.Table:
    """Add the partition keys that the files keep in their paths."""
    rows = np.zeros(table.num_rows, dtype=np.int64)
    table = table.add_column(0, "scenario", _inferred([key.scenario], rows))
    table = table.add_column(1, "variant", labelled([key.variant], rows))
    return table.add_column(2, "replicate", column(np.full(table.num_rows, key.replicate,
                                                           np.int32)))


def _check_args(scenario: Scenario, replicates: int, population_scale: float, engine: str,
                threads: int | None) -> None:
    if engine not in ENGINES:
        raise SimError(f"unknown engine {engine!r}: this version runs {', '.join(ENGINES)}")
    if not isinstance(replicates, int) or replicates < 1:
        raise SimError(f"replicates must be a whole number >= 1, not {replicates!r}")
    if not (isinstance(population_scale, (int, float)) and math.isfinite(population_scale)
            and population_scale > 0):
        raise SimError(f"population_scale must be a finite number > 0, not {population_scale!r}")
    cores = int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
    if threads is not None and not 1 <= threads <= cores:
        raise SimError(f"threads must lie in 1..{cores}, not {threads}")
    if engine == "des":
        return
    enabled = [n for n, iv in scenario.interventions.items() if iv.enabled]
    for variant in (scenario, scenario.materialise(enabled)):
        limited = [n for n, tp in variant.touchpoints.items() if tp.capacity is not None]
        if limited:
            raise SimError(f"touchpoint {limited[0]!r} has a capacity: the fast engine does not "
                           f"model queues; capacity-limited touchpoints need the event engine "
                           f"(--engine des)")


def _base_seed(scenario: Scenario, seed: int | None, first_replicate: int) -> int:
    """The run's base seed, once ``first_replicate`` and ``seed`` are checked."""
    if not isinstance(first_replicate, int) or first_replicate < 0:
        raise SimError(f"first_replicate must be a whole number >= 0, not {first_replicate!r}")
    base_seed = scenario.seed if seed is None else int(seed)
    if not 0 <= base_seed < 2**63:
        raise SimError(f"seed must lie in 0..2**63-1, not {base_seed}")
    return base_seed


@contextmanager
def _numba_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` numba threads (all when None), then restore the caller's."""
    previous_threads = numba.get_num_threads()
    if threads is not None:
        numba.set_num_threads(threads)
    try:
        yield
    finally:
        numba.set_num_threads(previous_threads)


class _Cancelled(Exception):
    """Raised inside a replicate when another one failed or the run was interrupted."""


def _side_by_side(replicates: int) -> int:
    """How many replicates run at once: one per numba thread (each on a serial kernel)."""
    return min(replicates, numba.get_num_threads())


def replicate_threads(scenario: Scenario | str | os.PathLike[str], *,
                      population_scale: float = 1.0, threads: int | None = None) -> int:
    """How many numba threads one replicate of a scenario keeps busy when it runs alone.

    A replicate runs the parallel kernel on every thread once its population reaches
    :data:`~sim.engines._driver.PARALLEL_MIN_AGENTS` (the initial population and the
    expected arrivals; referrals come on top), else the serial kernel on the calling
    thread. Callers that run replicates in stages (an optimisation trial's pruning)
    use it to see whether a stage would leave threads idle.

    Args:
        scenario: a :class:`Scenario`, or a path / YAML text to load.
        population_scale: as in :func:`run`.
        threads: numba threads (default: the caller's current setting).

    Returns:
        1 for a small population, else the thread count.

    Example:
        >>> import sim
        >>> sim.replicate_threads("scenarios/dental_clinic.yaml")  # doctest: +SKIP
        1
    """
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    model = compile_scenario(scenario, population_scale)
    threads = numba.get_num_threads() if threads is None else threads
    return threads if _expected_agents(model) >= PARALLEL_MIN_AGENTS else 1


def _expected_agents(model: CompiledModel) -> float:
    """The initial population plus the expected arrivals over the horizon."""
    initial = sum(count for _, _, count in model.placements)
    rates = model.arrival_rate[model.regime_of_step].sum(axis=1)  # per step
    return initial + float((rates * model.arrival_mult).sum())


def _each_replicate(one: Callable[[int], T], replicates: int, stop: threading.Event) -> list[T]:
    """``one(r)`` for r = 0 .. replicates-1, side by side when there are threads to spare.

    Serial kernels release the GIL, so replicates run side by side on the cores. When
    one fails or the caller is interrupted, ``stop`` is set so the others end at their
    next step.
    """
    workers = _side_by_side(replicates)
    if workers == 1:
        return [one(r) for r in range(replicates)]
    futures = [_lanes(workers).submit(one, r) for r in range(replicates)]
    try:
        return [f.result() for f in futures]
    except BaseException:
        stop.set()
        for f in futures:
            f.cancel()
        wait(futures)
        raise


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _lanes(workers: int) -> ThreadPoolExecutor:
    """The process's pool of ``workers`` replicate threads, started once and kept: a
    calibration or an optimisation runs thousands of short multi-replicate simulations,
    and starting and joining their threads each time cost a millisecond or two apiece."""
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = ThreadPoolExecutor(max_workers=workers,
                                                        thread_name_prefix="replicate")
        return pool


def run(scenario: Scenario | str | os.PathLike[str], *, seed: int | None = None,
        replicates: int = 1, population_scale: float = 1.0, engine: str = "fast",
        variant: str = "base", events: bool = False, out: str | os.PathLike[str] | None = None,
        threads: int | None = None, resume: bool = False, first_replicate: int = 0,
        exclusive: bool = True, exposures: bool = False,
        progress: Callable[[int, int], None] | None = None) -> RunResult:
    """Simulate a scenario.

    Args:
        scenario: a :class:`Scenario`, or a path / YAML text to load.
        seed: base seed (default: the scenario's); replicate r runs on
            :func:`derive_seed` (seed, r).
        replicates: independent runs, summarised with confidence intervals.
        population_scale: how many agents stand for one of the scenario's (a speed
            knob: KPIs and money keep their expectation, expressed for the full
            population; see :mod:`sim.metrics`).
        engine: ``"fast"`` (numba kernels) or ``"des"`` (SimPy: the same results on
            a scenario without capacity limits, and queues at capacity-limited
            touchpoints; slower).
        variant: a label stored with every row (``base`` by default).
        events: also return (and write) one row per agent transition and entry.
            The event engine with capacity-limited touchpoints also returns and
            writes the ``queues`` table.
        exposures: also one event row per touchpoint exposure (``kind`` ``exposure``,
            the touchpoint, the stage the agent was in); implies ``events``. Such a
            run is another run (run id) than one without.
        out: a dataset folder or pyarrow filesystem URI to write Parquet to.
        threads: numba threads (default: all cores); results do not depend on it.
            With several replicates they run side by side, one per thread.
        first_replicate: number of the first replicate: ``first_replicate=3,
            replicates=1`` runs exactly replicate 3 of a larger run (same seed).
        resume: with ``out``, reuse replicates already written by the same run
            (same run id: scenario text, engine, scale, base seed) instead of
            running them again.
        exclusive: with ``out``, the run owns its (scenario, variant) partition:
            before its first file is written, every other run's files there (and
            this run's replicates outside this call's) are removed, and
            ``RunResult.replaced`` says what. ``False`` removes other runs' files
            only (a sweep task writing one replicate beside its siblings).
        progress: called with (steps done, steps in all) as the run advances.

    Returns:
        The run's tables, concatenated over replicates.

    Raises:
        SimError: bad arguments, or a scenario the engine cannot run.

    Example:
        >>> import sim
        >>> result = sim.run("scenarios/dental_clinic.yaml", replicates=2)  # doctest: +SKIP
        >>> result.summary().to_pandas()  # doctest: +SKIP
    """
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    _check_args(scenario, replicates, population_scale, engine, threads)
    if not is_variant_label(variant):
        raise SimError(f"variant {variant!r} is not a valid label: use letters, digits, _, . "
                       f"and -, starting with a letter or digit (it names a folder)")
    base_seed = _base_seed(scenario, seed, first_replicate)
    with _numba_threads(threads):
        return _run(scenario, base_seed, replicates, population_scale, engine, variant,
                    events or exposures, out, resume, progress, first_replicate, exclusive,
                    exposures)


def _run(scenario: Scenario, base_seed: int, replicates: int, population_scale: float,
         engine: str, variant: str, events: bool, out: str | os.PathLike[str] | None,
         resume: bool, progress: Callable[[int, int], None] | None,
         first_replicate: int = 0, exclusive: bool = True, exposures: bool = False
         ) -> RunResult:
    model = compile_scenario(scenario, population_scale)
    yaml_text = scenario.to_yaml()
    digest = hashlib.sha256(yaml_text.encode("utf-8")).hexdigest()  # = scenario.content_hash
    run_id, expect = _identity(digest, engine=engine, population_scale=population_scale,
                               base_seed=base_seed, exposures=exposures)
    index = [first_replicate + r for r in range(replicates)]
    seeds = [derive_seed(base_seed, i) for i in index]
    names = [*CORE_TABLES, *(["events"] if events else [])]
    queued = engine == "des" and bool(model.queues)
    if queued:
        names.append("queues")
    done = [0] * replicates
    lock = threading.Lock()
    stop = threading.Event()
    workers = _side_by_side(replicates)
    replaced: list[Replaced] = []
    claimed = threading.Event()

    def own_partition() -> None:
        """Before the run's first file: remove what other runs left under its key."""
        with lock:
            if out is None or claimed.is_set():
                return
            replaced.extend(claim(out, scenario.name, variant, run_id, expect=expect,
                                  keep=set(index) if exclusive else None, tidy=exclusive))
            claimed.set()

    def step_done(r: int, t: int) -> None:
        if stop.is_set():
            raise _Cancelled
        if progress is not None:
            with lock:
                done[r] = t
                progress(sum(done), model.steps * replicates)

    def one(r: int) -> tuple[dict[str, pa.Table], list[str]]:
        rseed = seeds[r]
        key = RunKey(scenario.name, variant, index[r], rseed, run_id)
        if out is not None and resume and is_complete(out, key, names):
            log.info("replicate %d already written; reusing it", r)
            step_done(r, model.steps)
            stored = {n: table_path(out, n, key) for n in [*names, "kpis"]}
            return ({n: read_file(out, f) for n, f in stored.items()}, list(stored.values()))
        raw = _simulate(engine)(model, rseed, events=events, exposures=exposures,
                                parallel=workers == 1, progress=functools.partial(step_done, r))
        meta = run_metadata(scenario_yaml=yaml_text, scenario_hash=digest, seed=rseed,
                            base_seed=base_seed, replicate=index[r], engine=engine,
                            rng=RNG_SCHEME, version=__version__,
                            population_scale=population_scale, run_id=run_id,
                            events=expect.get("events", ""))
        tables = {n: with_keys(tab, key, meta) for n, tab in _tables(raw, events).items()}
        files = []
        if out is not None:
            own_partition()
            # kpis last: its presence marks a complete replicate
            files = [write_run_table(out, n, tables[n], key) for n in [*names, "kpis"]]
        return tables, files

    results = _each_replicate(one, replicates, stop)
    own_partition()      # also when every replicate was resumed
    collected: dict[str, list[pa.Table]] = {}
    paths: list[str] = []
    for r, (tables, files) in enumerate(results):
        key = RunKey(scenario.name, variant, index[r], seeds[r], run_id)
        paths.extend(files)
        for name, tab in tables.items():
            collected.setdefault(name, []).append(_with_run_columns(tab, key))

    def cat(name: str) -> pa.Table:
        return pa.concat_tables(collected[name], promote_options="default")

    return RunResult(
        scenario=scenario, seed=base_seed, seeds=seeds, engine=engine,
        occupancy=cat("occupancy"), flows=cat("flows"), kpis=cat("kpis"),
        retention=cat("retention"), ledger=cat("ledger"),
        events=cat("events") if events else None, paths=paths,
        queues=cat("queues") if queued else None, run_id=run_id,
        population_scale=float(population_scale), variant=variant, bounds=kpi_bounds(model),
        replaced=replaced,
    )


@dataclass
class RunCounts:
    """The engine's dense counts of a run's replicates, before any table is built.

    What :func:`simulate` returns: the numbers :func:`run` turns into tables, as
    arrays indexed by replicate, for callers that only read them (an optimisation
    trial, a calibration's evaluation). Counts are simulated agents
    (``population_scale`` times the scenario's); KPIs and money are expressed for the
    scenario's full population, as in :class:`RunResult`.

    Shapes: R replicates, T1 = steps + 1 (index 0 is the initial state), G segments,
    S stages, L = steps + 1 lags.
    """

    scenario: Scenario
    model: CompiledModel
    seed: int
    seeds: list[int]
    engine: str
    raw: list[RawRun] = field(repr=False)
    """Each replicate's raw counts, as the engine returned them."""

    @functools.cached_property
    def kpis(self) -> dict[str, np.ndarray]:
        """Every KPI of the scenario (:func:`sim.kpi_names`: the built-in ones, the
        per-queue ones, the custom ones) and ``agents``: float64[R] each (NaN where
        undefined), the columns of :attr:`RunResult.kpis`."""
        rows = [{**kpis(raw), "agents": float(raw.agents)} for raw in self.raw]
        return {name: np.array([row[name] for row in rows], dtype=float) for name in rows[0]}

    @functools.cached_property
    def segment_kpis(self) -> dict[str, dict[str, np.ndarray]]:
        """The KPIs of :data:`sim.metrics.SEGMENT_KPIS` by segment: segment -> KPI ->
        float64[R] (:func:`sim.metrics.segment_kpis`)."""
        rows = [segment_kpis(raw) for raw in self.raw]
        return {g: {name: np.array([row[g][name] for row in rows], dtype=float)
                    for name in rows[0][g]} for g in rows[0]}

    @property
    def occupancy(self) -> np.ndarray:
        """Agents in each segment and stage at the end of each step: int64[R, T1, G, S]."""
        return np.stack([raw.occupancy for raw in self.raw])

    @property
    def entries(self) -> np.ndarray:
        """Agents entering each stage in each step (moves, arrivals, referrals):
        int64[R, T1, G, S]."""
        return np.stack([raw.flows.sum(axis=2) + raw.arrivals + raw.referred
                         for raw in self.raw])

    @property
    def retention(self) -> tuple[np.ndarray, np.ndarray]:
        """Acquired customers eligible at each lag and those still customers there:
        (eligible, retained), int64[R, L] each (the ``retention`` table's columns)."""
        curves = [retention_curve(raw) for raw in self.raw]
        return (np.stack([c["eligible"] for c in curves]),
                np.stack([c["retained"] for c in curves]))

    @property
    def bounds(self) -> dict[str, Bounds]:
        """Each KPI's range (:func:`sim.metrics.kpi_bounds`)."""
        return kpi_bounds(self.model)


def simulate(scenario: Scenario | str | os.PathLike[str], *, seed: int | None = None,
             replicates: int = 1, population_scale: float = 1.0, engine: str = "fast",
             threads: int | None = None, first_replicate: int = 0,
             off: Sequence[str] = ()) -> RunCounts:
    """Simulate a scenario and keep its dense counts: :func:`run` without tables or files.

    The same replicates, seeds and numbers as :func:`run` with the same arguments; for
    loops that run many simulations and read a few numbers of each (optimisation
    trials, calibration evaluations), where building tables would cost more than
    reading the counts.

    Args:
        scenario: a :class:`Scenario`, or a path / YAML text to load.
        seed: base seed (default: the scenario's); replicate r runs on
            :func:`derive_seed` (seed, r).
        replicates: independent runs.
        population_scale: as in :func:`run`.
        engine: ``"fast"`` or ``"des"``.
        threads: numba threads (default: all cores); results do not depend on it.
        first_replicate: number of the first replicate, as in :func:`run`.
        off: touchpoints switched off (:func:`sim.model.switch_off`): nobody is
            exposed to them and their costs are gone, every other random draw is as
            in the run without ``off`` (common random numbers): the counterfactual
            runs of attribution.

    Returns:
        The counts and KPIs of each replicate.

    Raises:
        SimError: bad arguments, or a scenario the engine cannot run.

    Example:
        >>> import sim
        >>> counts = sim.simulate("scenarios/dental_clinic.yaml", replicates=2)  # doctest: +SKIP
        >>> counts.kpis["retention_365"].mean()  # doctest: +SKIP
    """
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    _check_args(scenario, replicates, population_scale, engine, threads)
    base_seed = _base_seed(scenario, seed, first_replicate)
    seeds = [derive_seed(base_seed, first_replicate + r) for r in range(replicates)]
    unknown = [name for name in off if name not in scenario.touchpoints]
    if unknown:
        raise SimError(unknown_name("touchpoint", unknown[0], list(scenario.touchpoints)))
    with _numba_threads(threads):
        model = switch_off(compile_scenario(scenario, population_scale), list(off))
        stop = threading.Event()
        parallel = _side_by_side(replicates) == 1

        def checked(_step: int) -> None:
            if stop.is_set():
                raise _Cancelled

        def one(r: int) -> RawRun:
            return _simulate(engine)(model, seeds[r], events=False, parallel=parallel,
                                     progress=checked)

        raw = _each_replicate(one, replicates, stop)
    return RunCounts(scenario=scenario, model=model, seed=base_seed, seeds=seeds,
                     engine=engine, raw=raw)
