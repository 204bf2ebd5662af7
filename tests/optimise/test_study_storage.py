"""A finished study opens with plain Optuna, as optuna-dashboard opens it.

The README tells users to run ``optuna-dashboard OUT/optimise/<study>.journal``
(or ``OUT/calibrate/<study>.journal``); optuna-dashboard opens a journal file
with Optuna's public ``JournalStorage(JournalFileBackend(path))``. These tests
run a tiny optimisation and a tiny calibration with the default storage and
open what they left with that public API only: the file is where the README
says, holds the study under the name the result gives, and its trials are
finished, with their parameters and values.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend

import optimise
import sim

ROOT = Path(__file__).resolve().parents[2]
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def _open_journal(path: Path) -> optuna.storages.JournalStorage:
    assert path.is_file(), f"no journal file at {path}"
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def test_a_finished_optimisation_opens_from_its_journal_file_with_plain_optuna(
        tmp_path: Path, tiny_scenario: sim.Scenario) -> None:
    scenario = tiny_scenario.apply(overrides={"optimise.objective.kpi": "retention_90"})
    result = optimise.optimise(scenario, trials=4, replicates=2, top_k=1,
                               reeval_replicates=2, population_scale=0.2, out=tmp_path, seed=1)

    journal = tmp_path / "optimise" / f"{scenario.name}.journal"
    assert result.storage == result.journal == str(journal)
    storage = _open_journal(journal)
    assert result.study_name in optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=result.study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 4
    assert all(t.state in FINISHED for t in trials), [t.state for t in trials]
    assert scenario.optimise is not None
    searched = {s.path for s in scenario.optimise.search}
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete, "no complete trial"
    for trial in complete:
        assert set(trial.params) == searched
        assert trial.values is not None and len(trial.values) == len(study.directions)
    assert [t.number for t in trials] == sorted(t.number for t in trials)


def test_a_finished_calibration_opens_from_its_journal_file_with_plain_optuna(
        tmp_path: Path) -> None:
    result = optimise.calibrate(ROOT / "scenarios" / "subscription_cohort.yaml", out=tmp_path,
                                trials=5, intervals="none", mc_seeds=0)

    journal = tmp_path / "calibrate" / f"{result.study_name}.journal"
    assert result.storage == result.journal == str(journal)
    study = optuna.load_study(study_name=result.study_name, storage=_open_journal(journal))
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 5
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    fitted = {p.path for p in result.parameters}
    assert all(set(t.params) == fitted for t in trials)
    values = [t.value for t in trials if t.value is not None]
    assert study.best_value == pytest.approx(min(values))
