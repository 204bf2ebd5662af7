"""The study core: what every experiment on an Optuna study shares.

Storages, seeded samplers, the suggestion of a point of a search space, the
retry of dead workers' trials, and the one trial loop, :func:`run_trials`,
that the search (:mod:`optimise._search`) and the calibration
(:mod:`optimise._calibrate`) run — Optuna's ``Study.optimize``, one trial at a
time, under a trial cap that holds across workers.

A *worker* is one such loop. It runs trials of one study until the study holds
the requested number of *counted* trials: complete, pruned, or failed for its
values (:class:`Unusable`). The cap is exact across workers: a worker starts a
trial only while counted + running trials stay below the cap, and a trial that
two workers started at once checks, before it runs anything, how many counted or
running trials precede it by number (the storage numbers trials atomically); the
later one stops at once as a *surplus* trial (state FAIL, never retried).

A worker that dies mid-trial leaves a RUNNING trial. On an RDB storage its
heartbeat stops, and after the grace period any worker fails the trial and
queues its parameters once more (Optuna's heartbeat and
``RetryHeartbeatStaleTrialCallback``). The journal file has no heartbeats;
there each trial records the host and process id of its worker, and a worker
on the same host fails and requeues the trials of processes that no longer
exist, when it starts and whenever it waits for the last trials. An
interrupted worker (Ctrl-C) fails and requeues its own trial.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.storages.journal import JournalFileBackend

import sim
from sim import SimError

__all__ = [
    "POLL_S",
    "Storage",
    "Surplus",
    "Unusable",
    "counted",
    "counts",
    "fail_dead",
    "open_storage",
    "open_study",
    "run_trials",
    "sampler_seed",
    "suggest_point",
    "tpe_sampler",
    "worker_id",
]

log = logging.getLogger(__name__)

COMPLETE, PRUNED = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED
RUNNING, FAIL = optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL
POLL_S = 0.5
"""How often a worker that waits for others' trials looks at the study again."""

HOST = socket.gethostname()


def worker_id() -> str:
    """This process as a trial records its worker: ``host:pid``."""
    return f"{HOST}:{os.getpid()}"


class Surplus(Exception):
    """A trial started by a worker after others had already filled the trial cap."""


class Unusable(Exception):
    """The objective has no usable value at the trial's point (e.g. no finite loss).

    The trial fails with the message as its ``error``; it counts towards the cap and
    is not retried: the same point would fail again.
    """


def counts(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial counts towards the requested number of trials.

    Complete and pruned trials do, and so do trials failed for their values (an
    ``error`` recorded, surplus trials excepted). A trial failed by an interruption or
    a dead worker does not: it is retried.
    """
    if trial.state in (COMPLETE, PRUNED):
        return True
    return trial.state == FAIL and "error" in trial.user_attrs \
        and not trial.user_attrs.get("surplus")


def counted(study: optuna.Study) -> int:
    """How many trials of ``study`` count towards the requested number (:func:`counts`)."""
    return sum(1 for t in study.get_trials(deepcopy=False) if counts(t))


# ------------------------------------------------------------------ storages and studies


@dataclass(frozen=True)
class Storage:
    """An opened study storage and its label (the journal file's path, or the URL)."""

    backend: optuna.storages.BaseStorage
    label: str

    @property
    def journal(self) -> str | None:
        """The journal file (which optuna-dashboard opens), None for an RDB storage."""
        return None if "://" in self.label else self.label

    @property
    def heartbeats(self) -> bool:
        """Whether its workers beat (an RDB storage), so stale trials show by silence."""
        return isinstance(self.backend, optuna.storages.RDBStorage) and \
            self.backend.get_heartbeat_interval() is not None


with warnings.catch_warnings():
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    _RETRY = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)


def open_storage(storage: str | None, journal: Path, heartbeat: int | None = None,
                 workers: int = 1) -> Storage:
    """The study's storage.

    Args:
        storage: None (the journal file ``journal``), a journal file path, or an RDB
            URL (``postgresql://…``, ``sqlite:///…``).
        journal: the default journal file (:func:`sim.results.journal_file`).
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
            journal.parent.mkdir(parents=True, exist_ok=True)
            storage = str(journal)
        return Storage(optuna.storages.JournalStorage(JournalFileBackend(storage)), storage)
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
            return Storage(optuna.storages.RDBStorage(
                storage, heartbeat_interval=beat, grace_period=2 * beat,
                heartbeat_stale_trial_callback=_RETRY), storage)
    except ModuleNotFoundError as exc:
        extra = " (pip install 'journey-engine[postgres]')" if "postgres" in storage else ""
        raise SimError(f"storage {storage!r} needs the database driver {exc.name!r}; "
                       f"install it{extra}") from None
    except Exception as exc:  # sqlalchemy's errors: bad URL, server unreachable
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SimError(f"cannot open storage {storage!r}: {first}") from None


def open_study(name: str, storage: Storage,
               directions: Sequence[Literal["minimize", "maximize"]],
               sampler: optuna.samplers.BaseSampler | None = None,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Create study ``name`` in ``storage``, or load it to resume."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.create_study(study_name=name, storage=storage.backend,
                                   directions=list(directions), sampler=sampler,
                                   pruner=pruner, load_if_exists=True)


def sampler_seed(seed: int, history: int = 0, worker: int = 0) -> int:
    """A sampler's seed from the base seed, the trials already stored and the worker."""
    return (seed + 1_000_003 * history + 7_919 * worker) % 2**32


def tpe_sampler(study: optuna.Study, seed: int, worker: int) -> optuna.samplers.TPESampler:
    """TPE seeded by the base seed, the trials already stored and the worker's index.

    A resumed study must not replay the sampler's first draws, and two workers must
    not propose the same designs; a new study's first worker gets the plain seed.
    """
    return optuna.samplers.TPESampler(
        seed=sampler_seed(seed, len(study.get_trials(deepcopy=False)), worker))


def suggest_point(trial: optuna.Trial, space: Iterable[Any]) -> dict[str, Any]:
    """The trial's point of a search space: dotted path -> value.

    Each dimension has ``path`` and either ``choices`` or ``type`` (``int``,
    ``float``, ``log``) with ``low`` and ``high`` — a search variable of an
    ``optimise:`` block or a parameter of a ``calibrate:`` block.
    """
    point = {}
    for spec in space:
        if spec.choices is not None:
            point[spec.path] = trial.suggest_categorical(spec.path, spec.choices)
        elif spec.type == "int":
            point[spec.path] = trial.suggest_int(spec.path, int(spec.low), int(spec.high))
        else:
            point[spec.path] = trial.suggest_float(spec.path, spec.low, spec.high,
                                                   log=spec.type == "log")
    return point


# ------------------------------------------------------------------ dead workers


def _retry(study: optuna.Study, number: int) -> None:
    """Queue a failed trial's parameters once more (once per original trial)."""
    _RETRY(study, copy.deepcopy(study.get_trials(deepcopy=False)[number]))


def _fail(study: optuna.Study, number: int) -> bool:
    """Fail a running trial and requeue it; False if another worker got there first."""
    try:
        study.tell(number, state=FAIL)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError):  # finished meanwhile
        return False
    _retry(study, number)
    return True


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


def fail_dead(study: optuna.Study, storage: Storage,
              trials: list[optuna.trial.FrozenTrial]) -> int:
    """Fail and requeue the running trials whose worker is gone; how many were."""
    if storage.heartbeats:
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
            failed += _fail(study, t.number)
    return failed


# ------------------------------------------------------------------ the trial loop


_EXPECTED: set[int] = set()
"""Numbers of the trials of this process whose failure is expected (surplus, unusable or
interrupted ones): their end is not news."""


class _QuietExpected(logging.Filter):
    """Drop Optuna's warning and traceback for a trial whose failure is expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(f"Trial {n} failed ") for n in _EXPECTED)


def _quiet_expected_failures() -> None:
    """Install :class:`_QuietExpected` on Optuna's trial logger, once per process."""
    logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _QuietExpected) for f in logger.filters):
        logger.addFilter(_QuietExpected())


def _ahead(study: optuna.Study, number: int) -> int:
    """Counted or running trials numbered below ``number`` (surplus ones excluded)."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.number < number and (counts(t) or t.state == RUNNING)
               and not t.user_attrs.get("surplus"))


def _capped(objective: Callable[[optuna.Trial], Any], n_trials: int, mine: list[int]
            ) -> Callable[[optuna.Trial], Any]:
    """``objective`` behind the trial cap, with the worker and expected failures recorded."""

    def trial_of_this_worker(trial: optuna.Trial) -> Any:
        mine.append(trial.number)
        trial.set_user_attr("worker", worker_id())
        if _ahead(trial.study, trial.number) >= n_trials:
            _EXPECTED.add(trial.number)
            trial.set_user_attr("surplus", True)
            trial.set_user_attr("error", "surplus: other workers had filled the trial cap")
            raise Surplus(f"trial {trial.number}: the study already has {n_trials} trials")
        try:
            return objective(trial)
        except Unusable as exc:
            _EXPECTED.add(trial.number)
            trial.set_user_attr("error", str(exc))
            raise
        except BaseException as exc:
            if sim.is_interrupt(exc):  # failed and requeued by run_trials
                _EXPECTED.add(trial.number)
            raise

    return trial_of_this_worker


def _requeue_interrupted(study: optuna.Study, number: int) -> None:
    """Fail (if Optuna has not) and requeue this worker's interrupted trial."""
    frozen = study.get_trials(deepcopy=False)[number]
    if frozen.state == RUNNING:
        _fail(study, number)
    elif frozen.state == FAIL and not frozen.user_attrs.get("surplus"):
        _retry(study, number)


def run_trials(study: optuna.Study, storage: Storage,
               objective: Callable[[optuna.Trial], Any], n_trials: int,
               on_trial: Callable[[optuna.Study], None] | None = None) -> None:
    """Run trials of ``objective`` until ``study`` holds ``n_trials`` counted trials.

    First, and whenever the trials still missing are all running elsewhere, the
    trials of dead workers are failed and requeued; while none is, wait: one of the
    running ones may fail and come back as a queued retry. ``on_trial`` is called
    after each trial of this worker. On Ctrl-C the running trial of this worker is
    failed and queued again, then ``KeyboardInterrupt`` propagates.

    Raises:
        Whatever ``objective`` raises, except :class:`Unusable` (the trial fails) and
        ``optuna.TrialPruned`` (it is pruned).
    """
    _quiet_expected_failures()
    mine: list[int] = []
    capped = _capped(objective, n_trials, mine)
    callbacks = [] if on_trial is None else [lambda s, _t: on_trial(s)]
    try:
        fail_dead(study, storage, study.get_trials(deepcopy=False))
        while True:
            trials = study.get_trials(deepcopy=False)
            done = sum(counts(t) for t in trials)
            if done >= n_trials:
                return
            running = sum(t.state == RUNNING for t in trials)
            if done + running >= n_trials:
                if not fail_dead(study, storage, trials):
                    time.sleep(POLL_S)
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.optimize(capped, n_trials=1, catch=(Surplus, Unusable),
                               callbacks=callbacks)
    except BaseException as exc:
        if sim.is_interrupt(exc) and mine:  # the trial under way
            _requeue_interrupted(study, mine[-1])
        raise
