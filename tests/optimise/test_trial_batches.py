"""An optimisation trial's replicates side by side: the same study on one thread or two.

A trial runs half its replicates, asks the pruner, then runs the rest. On a small
population one replicate keeps one thread busy, so with two threads and two replicates
the first stage would leave a thread idle: the trial runs both replicates at once
(:func:`optimise._search._objective.first_batch`). Every number must be the one the
staged run on one thread gives, pruned trials included.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numba
import pytest

import optimise
import sim
from optimise._search._objective import first_batch

SCENARIO = """\
name: batches
seed: 2
time: {horizon_days: 150}
population:
  arrivals: {per_day: 5}
stages:
  prospect: {kind: prospect, exits: {customer: {mean_days: 4}}}
  customer: {kind: customer, exits: {churned: {mean_days: 90}}}
  churned: {kind: lost}
touchpoints:
  call:
    stages: [customer]
    reach: 0.0
    lift: {customer->churned: -2.0}
    cost_per_exposure: 3.0
optimise:
  objective: {kpi: retention_90}
  search:
    - {path: touchpoints.call.reach.customer, low: 0.0, high: 0.6}
  trials: 16
  replicates: 2
"""

needs_two = pytest.mark.skipif(int(numba.config.NUMBA_NUM_THREADS) < 2,  # type: ignore[attr-defined]
                               reason="needs two numba threads")


@pytest.fixture
def threads() -> Iterator[Any]:
    """Set the calling thread's numba threads for a test, and restore them."""
    before = numba.get_num_threads()

    def use(n: int) -> None:
        numba.set_num_threads(n)

    yield use
    numba.set_num_threads(before)


def _calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The replicate counts of every ``sim.simulate`` call the trials make."""
    seen: list[int] = []
    real = sim.simulate

    def counted(*args: Any, **kwargs: Any) -> sim.RunCounts:
        seen.append(kwargs["replicates"])
        return real(*args, **kwargs)

    monkeypatch.setattr(sim, "simulate", counted)
    return seen


@needs_two
def test_a_small_trial_runs_its_first_stage_on_every_thread(threads: Any) -> None:
    scenario = sim.load_scenario(SCENARIO)
    threads(2)
    assert first_batch(scenario, 1, 2, 1.0) == 2        # the idle thread takes replicate 1
    assert first_batch(scenario, 2, 4, 1.0) == 2        # no idle thread
    assert first_batch(scenario, 1, 1, 1.0) == 1        # nothing more to run
    assert first_batch(scenario, 1, 2, 1.0, engine="des") == 1
    threads(1)
    assert first_batch(scenario, 1, 2, 1.0) == 1
    # a population the parallel kernel serves: one replicate already uses both threads
    threads(2)
    assert sim.replicate_threads(scenario, population_scale=100.0) == 2
    assert first_batch(scenario, 1, 2, 100.0) == 1


@needs_two
def test_one_thread_or_two_give_the_same_study(tmp_path: Path, threads: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _calls(monkeypatch)
    threads(1)
    one = optimise.optimise(SCENARIO, trials=16, out=tmp_path / "one", seed=7, top_k=2)
    staged = list(calls)
    calls.clear()
    threads(2)
    two = optimise.optimise(SCENARIO, trials=16, out=tmp_path / "two", seed=7, top_k=2)

    assert one.trials.equals(two.trials)
    states = one.trials.column("state").to_pylist()
    assert "PRUNED" in states and "COMPLETE" in states, "both paths of a trial are exercised"
    assert one.replicates_run == two.replicates_run
    assert one.best_scenario.to_yaml() == two.best_scenario.to_yaml()
    # on one thread every trial runs replicate 0, then (unless pruned) replicate 1;
    # on two, both at once: no call of one replicate is left among the trials
    assert staged.count(1) >= 16 and 1 not in calls[:16]
