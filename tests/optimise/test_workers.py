"""Parallel workers on one study: an exact trial cap, and a killed worker's trial retried.

Against a real PostgreSQL (a throwaway cluster on loopback, see
``tests/pgcluster.py``) and against the embedded journal file. The PostgreSQL
tests skip, saying why, only where PostgreSQL cannot be installed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend

import optimise
import sim
from tests.optimise.test_search import AFTERCARE
from tests.pgcluster import Unavailable, throwaway_cluster

COMPLETE = optuna.trial.TrialState.COMPLETE


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    try:
        cluster = throwaway_cluster()
        url = cluster.__enter__()
    except Unavailable as exc:
        pytest.skip(str(exc))
    try:
        yield url
    finally:
        cluster.__exit__(None, None, None)


def _scenario() -> sim.Scenario:
    # no binding budget: every design is feasible; one replicate: no pruning, so every
    # counted trial is COMPLETE
    return sim.load_scenario(AFTERCARE.replace("BUDGET", "1e12"))


def _journal(path: str | Path) -> optuna.storages.JournalStorage:
    """A journal file opened with plain Optuna, as optuna-dashboard opens it."""
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _check_exact(trials: list[optuna.trial.FrozenTrial], n: int) -> None:
    states = [t.state for t in trials]
    assert states.count(COMPLETE) == n
    assert optuna.trial.TrialState.RUNNING not in states
    assert optuna.trial.TrialState.WAITING not in states
    # any trial beyond the cap stopped before it simulated, and is marked so
    extra = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert all(t.user_attrs.get("surplus") or "failed_trial" in t.system_attrs
               or any(u.system_attrs.get("failed_trial") == t.number for u in trials)
               for t in extra)


def test_four_workers_on_postgres_end_with_exactly_n_trials(tmp_path: Path,
                                                            pg_url: str) -> None:
    res = optimise.optimise(_scenario(), trials=12, replicates=1, storage=pg_url,
                            study_name="four", workers=4, out=tmp_path, top_k=1)
    study = optuna.load_study(study_name="four", storage=pg_url)
    trials = study.get_trials()
    _check_exact(trials, 12)
    workers = {t.user_attrs["worker"] for t in trials if t.state == COMPLETE}
    assert len(workers) >= 2, "the trials were shared among the worker processes"
    assert res.trials.num_rows == len(trials)
    # the study was created once
    assert [s.study_name for s in optuna.get_all_study_summaries(pg_url)].count("four") == 1


def _kill_one_worker_mid_trial(storage: Any, study_name: str, result: dict[str, Any],
                               thread: threading.Thread) -> int:
    """Wait for a running trial that has its parameters, SIGKILL its worker; its number."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and thread.is_alive():
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:  # not created yet
            time.sleep(0.1)
            continue
        for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
            if t.params and "worker" in t.user_attrs:
                os.kill(int(t.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
                return t.number
        time.sleep(0.05)
    raise AssertionError(f"no running trial to kill: {result}")


def _run_and_kill(storage_arg: str, storage: Any, tmp_path: Path, name: str,
                  heartbeat: int | None) -> list[optuna.trial.FrozenTrial]:
    result: dict[str, Any] = {}
    scenario = _scenario()

    def work() -> None:
        try:
            result["res"] = optimise.optimise(
                scenario, trials=6, replicates=1, storage=storage_arg, study_name=name,
                workers=3, heartbeat=heartbeat, out=tmp_path, top_k=1,
                population_scale=40.0)  # each trial simulates long enough to be killed
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    killed = _kill_one_worker_mid_trial(storage, name, result, thread)
    thread.join(300)
    assert not thread.is_alive()
    assert "error" not in result, result
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    _check_exact(trials, 6)
    assert trials[killed].state == optuna.trial.TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1, "the killed worker's trial is retried once"
    assert retries[0].state == COMPLETE
    assert retries[0].params == trials[killed].params
    return trials


def test_killed_worker_on_postgres_is_failed_by_heartbeat_and_retried(
        tmp_path: Path, pg_url: str) -> None:
    _run_and_kill(pg_url, pg_url, tmp_path, "killed", heartbeat=1)


def test_killed_worker_on_journal_is_found_by_process_id_and_retried(tmp_path: Path) -> None:
    path = str(tmp_path / "study.journal")
    storage = _journal(path)
    _run_and_kill(path, storage, tmp_path, "killed", heartbeat=None)


def test_two_workers_on_the_journal_file(tmp_path: Path) -> None:
    optimise.optimise(_scenario(), trials=8, replicates=1, workers=2, out=tmp_path, top_k=1)
    storage = _journal(tmp_path / "optimise" / "aftercare.journal")
    _check_exact(optuna.load_study(study_name="aftercare", storage=storage).get_trials(), 8)


def test_sqlite_is_refused_for_parallel_workers(tmp_path: Path) -> None:
    with pytest.raises(sim.SimError, match="SQLite cannot serve parallel workers"):
        optimise.optimise(_scenario(), trials=2, workers=2,
                          storage=f"sqlite:///{tmp_path / 's.db'}", out=tmp_path)


def test_heartbeat_needs_an_rdb_storage(tmp_path: Path) -> None:
    with pytest.raises(sim.SimError, match="heartbeats need an RDB storage"):
        optimise.optimise(_scenario(), trials=2, heartbeat=5, out=tmp_path)


def test_cli_refuses_sqlite_for_workers_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sim.cli import app

    file = tmp_path / "aftercare.yaml"
    file.write_text(AFTERCARE.replace("BUDGET", "1e12"))
    res = CliRunner().invoke(app, ["optimise", str(file), "--workers", "2", "--storage",
                                   f"sqlite:///{tmp_path / 's.db'}", "--quiet"])
    assert res.exit_code != 0
    assert "SQLite cannot serve parallel workers" in res.output
    assert "Traceback" not in res.output
