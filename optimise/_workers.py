"""Trials, storages and the workers that run them.

A *worker* is a loop that runs trials of one study until the study holds the
requested number of counted (complete or pruned) trials. One worker runs in
the calling process; ``workers=W`` starts W worker processes, and any number
of machines may run workers against one PostgreSQL study.

The trial cap is exact across workers: a worker starts a trial only while
counted + running trials stay below the cap, and a trial that two workers
started at once checks, before it simulates anything, how many counted or
running trials precede it by number (the storage numbers trials atomically);
the later one stops at once as a *surplus* trial (state FAIL, never retried).

A worker that dies mid-trial leaves a RUNNING trial. On an RDB storage its
heartbeat stops, and after the grace period any worker fails the trial and
queues its parameters once more (Optuna's heartbeat and
``RetryHeartbeatStaleTrialCallback``). The journal file has no heartbeats;
there each trial records the host and process id of its worker, and a worker
on the same host fails and requeues the trials of processes that no longer
exist. An interrupted worker (Ctrl-C) fails and requeues its own trial.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages.journal import JournalFileBackend

import sim
from sim import Scenario, SimError

__all__ = [
    "COUNTED",
    "FeasibleMedianPruner",
    "Surplus",
    "WorkerSpec",
    "feasible",
    "kpis",
    "make_objective",
    "open_storage",
    "run_trials",
    "sampler_for",
    "start_worker",
    "violations",
    "worker_main",
]

log = logging.getLogger(__name__)

COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
"""Trial states that count towards the requested number of trials."""

RUNNING = optuna.trial.TrialState.RUNNING
POLL_S = 0.5
"""How often a worker that waits for others' trials looks at the study again."""

HOST = socket.gethostname()


def _worker_id() -> str:
    return f"{HOST}:{os.getpid()}"


class Surplus(Exception):
    """A trial started by a worker after others had already filled the trial cap."""


_SURPLUS: set[int] = set()
"""Numbers of the surplus trials of this process (their end is not news)."""


class _QuietSurplus(logging.Filter):
    """Drop Optuna's warning and traceback for a surplus trial: it is expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(f"Trial {n} failed ") for n in _SURPLUS)


logging.getLogger("optuna.study._optimize").addFilter(_QuietSurplus())


with warnings.catch_warnings():
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    _RETRY = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)


# ------------------------------------------------------------------ storage


def open_storage(storage: str | None, out: Path, study_name: str,
                 heartbeat: int | None = None, workers: int = 1,
                 folder: str = "optimise") -> tuple[Any, str]:
    """The study's storage and a label for it.

    Args:
        storage: None (a journal file under ``out/<folder>/``), a journal file path,
            or an RDB URL (``postgresql://…``, ``sqlite:///…``).
        heartbeat: seconds between an RDB worker's heartbeats (default 10); a trial
            whose worker is silent for twice as long is failed and retried.
        workers: worker processes that will share it (SQLite serves only one).

    Raises:
        SimError: SQLite for parallel workers, a heartbeat asked of a journal file, a
            missing database driver, an unreachable or malformed storage.
    """
    if storage is None or "://" not in storage:
        if heartbeat is not None:
            raise SimError("heartbeats need an RDB storage (postgresql://…); with a journal "
                           "file, dead workers are found by their process id on this host")
        if storage is None:
            where = out / folder
            where.mkdir(parents=True, exist_ok=True)
            storage = str(where / f"{study_name}.journal")
        return optuna.storages.JournalStorage(JournalFileBackend(storage)), storage
    if workers > 1 and storage.startswith("sqlite"):
        raise SimError("SQLite cannot serve parallel workers: it locks the whole database "
                       "file on every write, so concurrent workers fail with 'database is "
                       "locked'; use the default journal file (one machine) or "
                       "--storage postgresql://… (many machines)")
    beat = 10 if heartbeat is None else heartbeat
    if beat < 1:
        raise SimError(f"heartbeat must be a whole number of seconds >= 1, not {beat}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                storage, heartbeat_interval=beat, grace_period=2 * beat,
                heartbeat_stale_trial_callback=_RETRY), storage
    except ModuleNotFoundError as exc:
        extra = " (pip install 'journey-engine[postgres]')" if "postgres" in storage else ""
        raise SimError(f"storage {storage!r} needs the database driver {exc.name!r}; "
                       f"install it{extra}") from None
    except Exception as exc:  # sqlalchemy's errors: bad URL, server unreachable
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SimError(f"cannot open storage {storage!r}: {first}") from None


# ------------------------------------------------------------------ one trial


def kpis(scenario: Scenario, seed: int, replicates: int, population_scale: float,
         first_replicate: int = 0, threads: int | None = None,
         engine: str = "fast") -> dict[str, np.ndarray]:
    """Every KPI (and the agent count) of each replicate, as float arrays."""
    result = sim.run(scenario, seed=seed, replicates=replicates,
                     population_scale=population_scale, first_replicate=first_replicate,
                     threads=threads, engine=engine)
    return {name: np.asarray(result.kpis.column(name).to_numpy(zero_copy_only=False),
                             dtype=float) for name in (*sim.KPI_NAMES, "agents")}


def violations(scenario: Scenario, values: dict[str, np.ndarray]) -> dict[str, float]:
    """Constraint values by name (<= 0 is feasible), from the scenario's constraints."""
    opt = scenario.optimise
    assert opt is not None
    c = opt.constraints
    cost = float(np.mean(values["cost"]))
    out = {}
    if c.budget_total is not None:
        out["budget_total"] = cost - c.budget_total
    if c.budget_per_day is not None:
        out["budget_per_day"] = cost / scenario.time.horizon_days - c.budget_per_day
    if c.max_cost_per_acquired is not None:
        acquired = values["acquired"]
        per = np.where(acquired > 0, values["cost"] / np.maximum(acquired, 1), np.inf)
        out["max_cost_per_acquired"] = float(np.mean(per)) - c.max_cost_per_acquired
    return out


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial met every constraint (a trial without constraints does)."""
    return all(v <= 0 for v in trial.user_attrs.get("constraints", {}).values())


class FeasibleMedianPruner(optuna.pruners.BasePruner):
    """Stop a trial whose running mean is worse than the median, at the same step, of
    the completed *feasible* trials.

    Optuna's median rule compares with every trial; under a budget the infeasible
    designs (more spend, better KPI) would raise the median and prune the feasible
    designs at the budget's edge, where the optimum lies.
    """

    def __init__(self, n_startup_trials: int = 5) -> None:
        self.n_startup_trials = n_startup_trials

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        peers = [t.intermediate_values[step] for t in study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if step in t.intermediate_values and feasible(t)]
        if len(peers) < self.n_startup_trials:
            return False
        median = float(np.median(peers))
        value = trial.intermediate_values[step]
        if study.direction == optuna.study.StudyDirection.MAXIMIZE:
            return value < median
        return value > median


def _suggest(trial: optuna.Trial, spec: Any) -> Any:
    if spec.choices is not None:
        return trial.suggest_categorical(spec.path, spec.choices)
    if spec.type == "int":
        return trial.suggest_int(spec.path, int(spec.low), int(spec.high))
    return trial.suggest_float(spec.path, spec.low, spec.high, log=spec.type == "log")


def _ahead(study: optuna.Study, number: int) -> int:
    """Counted or running trials numbered below ``number`` (surplus ones excluded)."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.number < number and (t.state in COUNTED or t.state == RUNNING)
               and not t.user_attrs.get("surplus"))


def make_objective(scenario: Scenario, n_trials: int, replicates: int, seed: int,
                   population_scale: float, threads: int | None = None, engine: str = "fast"
                   ) -> Callable[[optuna.Trial], float | tuple[float, float]]:
    """The objective of a study: apply the trial's parameters, simulate, report.

    Every trial runs on the same seeds (common random numbers). With one objective
    it runs half the replicates, reports their mean to the pruner, and only if not
    pruned runs the rest. Constraints go to Optuna's constraints mechanism.
    """
    opt = scenario.optimise
    assert opt is not None
    kpi = opt.objective.kpi
    second = opt.second_objective

    def objective(trial: optuna.Trial) -> float | tuple[float, float]:
        trial.set_user_attr("worker", _worker_id())
        if _ahead(trial.study, trial.number) >= n_trials:
            _SURPLUS.add(trial.number)
            trial.set_user_attr("surplus", True)
            trial.set_user_attr("error", "surplus: other workers had filled the trial cap")
            raise Surplus(f"trial {trial.number}: the study already has {n_trials} trials")
        params = {spec.path: _suggest(trial, spec) for spec in opt.search}
        try:
            variant = scenario.apply(overrides=params)
        except sim.ScenarioError as exc:
            trial.set_user_attr("error", str(exc))
            raise optuna.TrialPruned(f"invalid combination: {exc}") from None
        # two fidelities: the first half of the replicates, then (if not pruned) the rest
        half = max(1, replicates // 2) if second is None else replicates  # one objective
        values = kpis(variant, seed, half, population_scale, threads=threads, engine=engine)
        trial.set_user_attr("replicates_run", half)
        if half < replicates:
            running = values[kpi]
            trial.report(float(np.nanmean(running)) if not np.isnan(running).all()
                         else math.nan, step=half)
            if trial.should_prune():
                raise optuna.TrialPruned(f"running mean after {half} of {replicates} "
                                         f"replicates is below the feasible median")
            rest = kpis(variant, seed, replicates - half, population_scale,
                        first_replicate=half, threads=threads, engine=engine)
            values = {k: np.concatenate([values[k], rest[k]]) for k in values}
            trial.set_user_attr("replicates_run", replicates)
        mean = float(np.nanmean(values[kpi])) if not np.isnan(values[kpi]).all() else math.nan
        trial.set_user_attr("cost", float(np.mean(values["cost"])))
        found = violations(scenario, values)
        trial.set_user_attr("constraints", found)
        for key, value in found.items():
            trial.set_constraint(key, value)  # Optuna's constraints: <= 0 is feasible
        if math.isnan(mean):
            trial.set_user_attr("error", f"{kpi} undefined for this design")
            raise optuna.TrialPruned(f"{kpi} undefined")
        if second is not None:
            return mean, float(np.nanmean(values[second.kpi]))
        return mean

    return objective


# ------------------------------------------------------------------ the worker loop


def sampler_for(study: optuna.Study, seed: int, worker: int) -> optuna.samplers.BaseSampler:
    """TPE seeded by the base seed, the trials already stored and the worker's index.

    A resumed study must not replay the sampler's first draws, and two workers must
    not propose the same designs; a new study's first worker gets the plain seed.
    """
    history = len(study.get_trials(deepcopy=False))
    return optuna.samplers.TPESampler(seed=(seed + 1_000_003 * history + 7_919 * worker)
                                      % 2**32)


def _retry(study: optuna.Study, number: int) -> None:
    """Queue a failed trial's parameters once more (once per original trial)."""
    _RETRY(study, copy.deepcopy(study.get_trials(deepcopy=False)[number]))


def _fail(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Fail a running trial and requeue it; False if another worker got there first."""
    try:
        won = study._storage.set_trial_state_values(trial._trial_id,
                                                    state=optuna.trial.TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    if won:
        _retry(study, trial.number)
    return bool(won)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _fail_dead(study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> int:
    """Fail and requeue the running trials whose worker is gone; how many were."""
    storage = study._storage
    if isinstance(storage, optuna.storages.RDBStorage) and \
            storage.get_heartbeat_interval() is not None:
        before = sum(t.state == RUNNING for t in trials)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # the retry callback requeues
        after = len(study.get_trials(deepcopy=False, states=(RUNNING,)))
        return max(0, before - after)
    failed = 0
    for t in trials:
        host, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if t.state == RUNNING and host == HOST and pid.isdigit() and \
                int(pid) != os.getpid() and not _alive(int(pid)):
            log.warning("trial %d: its worker (process %s) is gone; retrying it",
                        t.number, pid)
            failed += _fail(study, t)
    return failed


def run_trials(study: optuna.Study, objective: Callable[[optuna.Trial], Any], n_trials: int,
               on_trial: Callable[[optuna.Study], None] | None = None) -> None:
    """Run trials until ``study`` holds ``n_trials`` counted trials.

    While the trials still missing are all running elsewhere, wait: one of them may
    fail and come back as a queued retry. On Ctrl-C the running trial of this worker
    is failed and queued again, then ``KeyboardInterrupt`` propagates.
    """
    mine: list[int] = []

    def tracked(trial: optuna.Trial) -> Any:
        mine.append(trial.number)
        return objective(trial)

    callbacks = [] if on_trial is None else [lambda s, _t: on_trial(s)]
    try:
        while True:
            trials = study.get_trials(deepcopy=False)
            counted = sum(t.state in COUNTED for t in trials)
            if counted >= n_trials:
                return
            running = sum(t.state == RUNNING for t in trials)
            if counted + running >= n_trials:
                if not _fail_dead(study, trials):
                    time.sleep(POLL_S)
                continue
            study.optimize(tracked, n_trials=1, catch=(Surplus,), callbacks=callbacks)
    except BaseException as exc:
        if not sim.is_interrupt(exc):
            raise
        if mine:  # the trial under way; Optuna may already have failed it
            frozen = study.get_trials(deepcopy=False)[mine[-1]]
            if frozen.state == RUNNING:
                _fail(study, frozen)
            elif frozen.state == optuna.trial.TrialState.FAIL and \
                    not frozen.user_attrs.get("surplus"):
                _retry(study, frozen.number)
        raise


# ------------------------------------------------------------------ worker processes


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to join a study (picklable)."""

    scenario: Scenario
    storage: str
    heartbeat: int | None
    study_name: str
    n_trials: int
    replicates: int
    seed: int
    population_scale: float
    index: int
    threads: int
    verbosity: int
    engine: str = "fast"


def start_worker(spec: WorkerSpec) -> subprocess.Popen[bytes]:
    """Start a worker process: a new interpreter that reads ``spec`` from its stdin.

    It runs in a process group of its own, so that a Ctrl-C in the terminal reaches
    only the parent, which passes it on once (:func:`optimise._search._run_workers`);
    it holds SIGINT back until it has started, so that it never stops half-way
    through its imports.
    """
    proc = subprocess.Popen([sys.executable, "-c", "import signal; signal.pthread_sigmask("
                             "signal.SIG_BLOCK, {signal.SIGINT}); from optimise._workers "
                             "import _entry; _entry()"], stdin=subprocess.PIPE, process_group=0)
    assert proc.stdin is not None
    proc.stdin.write(pickle.dumps(spec))
    proc.stdin.close()
    return proc


def worker_main(spec: WorkerSpec) -> None:
    """Entry point of a worker process: join the study and run trials.

    Ctrl-C (passed on by the parent) exits 130 quietly, also when it interrupted
    Optuna half-way through a storage write.
    """
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # see start_worker
        optuna.logging.set_verbosity(spec.verbosity)
        store, _ = open_storage(spec.storage, Path("."), spec.study_name, spec.heartbeat)
        study = optuna.load_study(study_name=spec.study_name, storage=store,
                                  pruner=FeasibleMedianPruner())
        study.sampler = sampler_for(study, spec.seed, spec.index)
        objective = make_objective(spec.scenario, spec.n_trials, spec.replicates, spec.seed,
                                   spec.population_scale, spec.threads, spec.engine)
        run_trials(study, objective, spec.n_trials)
    except BaseException as exc:
        if sim.is_interrupt(exc):
            sys.exit(130)
        if isinstance(exc, SimError):
            print(f"worker {spec.index}: error: {exc}", file=sys.stderr)
            sys.exit(2)
        raise



def _entry() -> None:
    worker_main(pickle.loads(sys.stdin.buffer.read()))
