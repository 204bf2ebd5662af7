"""Worker processes: several workers of one study on this machine.

``optimise(workers=W)`` starts W worker processes (:func:`run_workers`), each
running the study core's trial loop (:func:`optimise._study.run_trials`) on the
same storage; with an RDB storage, workers on other machines may join the
same study. The trial cap and the retry of a dead worker's trials are the
study core's.
"""

from __future__ import annotations

import logging
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import optuna

import sim
from optimise._search._objective import FeasibleMedianPruner, make_objective
from optimise._study import POLL_S, counted, open_storage, run_trials, tpe_sampler
from sim import Scenario, SimError

__all__ = ["WorkerSpec", "run_workers", "start_worker", "worker_main"]

log = logging.getLogger(__name__)


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
    only the parent, which passes it on once (:func:`run_workers`); it holds SIGINT
    back until it has started, so that it never stops half-way through its imports.
    """
    proc = subprocess.Popen([sys.executable, "-c", "import signal; signal.pthread_sigmask("
                             "signal.SIG_BLOCK, {signal.SIGINT}); from optimise._search._workers "
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
        storage = open_storage(spec.storage, Path(spec.storage), spec.heartbeat)
        study = optuna.load_study(study_name=spec.study_name, storage=storage.backend,
                                  pruner=FeasibleMedianPruner())
        study.sampler = tpe_sampler(study, spec.seed, spec.index)
        objective = make_objective(spec.scenario, spec.replicates, spec.seed,
                                   spec.population_scale, spec.threads, spec.engine)
        run_trials(study, storage, objective, spec.n_trials)
    except BaseException as exc:
        if sim.is_interrupt(exc):
            sys.exit(130)
        if isinstance(exc, SimError):
            print(f"worker {spec.index}: error: {exc}", file=sys.stderr)
            sys.exit(2)
        raise


def _entry() -> None:
    worker_main(pickle.loads(sys.stdin.buffer.read()))


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Pass a Ctrl-C on to the workers (in their own process group, a terminal's Ctrl-C
    did not reach them) and wait for them to end."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def run_workers(study: optuna.Study, spec: WorkerSpec, workers: int,
                report: Callable[[optuna.Study], None]) -> None:
    """Run ``workers`` worker processes on ``study`` and report progress until they end.

    Workers are new interpreters (see :func:`start_worker`), not forks: the
    parent's numba threads do not survive a fork, and the caller's main module
    is not imported again. A worker that dies leaves its trial to the others, which fail
    and requeue it; if every worker stops before the study is full, this raises.
    """
    procs = [start_worker(replace(spec, index=i)) for i in range(workers)]
    reported: set[int] = set()
    try:
        while True:
            codes = [p.poll() for p in procs]  # also reaps the ones that ended
            for i, code in enumerate(codes):
                if code not in (0, None) and i not in reported:
                    reported.add(i)
                    how = (f"was killed by signal {-code}" if code < 0
                           else f"exited with code {code}")
                    log.warning("worker %d (process %d) %s; its trial goes to the others",
                                i, procs[i].pid, how)
            report(study)
            if all(code is not None for code in codes):
                break
            time.sleep(POLL_S)
    except BaseException as exc:
        if sim.is_interrupt(exc):
            _stop(procs)
        raise
    missing = spec.n_trials - counted(study)
    if missing > 0:
        raise SimError(f"every worker stopped with {missing} of {spec.n_trials} trial(s) "
                       f"still to run (see the messages above); rerun with the same study "
                       f"name to continue")
