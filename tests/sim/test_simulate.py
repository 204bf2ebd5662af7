"""``sim.simulate``: the dense counts of a run, the same numbers ``sim.run`` makes tables of."""

from __future__ import annotations

import numpy as np
import pytest

import sim


@pytest.fixture(scope="module")
def both(tiny_scenario: sim.Scenario) -> tuple[sim.RunResult, sim.RunCounts]:
    args = {"seed": 11, "replicates": 3, "population_scale": 0.2, "first_replicate": 2}
    return sim.run(tiny_scenario, **args), sim.simulate(tiny_scenario, **args)


def test_simulate_gives_the_kpis_of_run_bit_for_bit(
        both: tuple[sim.RunResult, sim.RunCounts]) -> None:
    result, counts = both
    assert counts.seeds == result.seeds
    assert set(counts.kpis) == {*sim.KPI_NAMES, "agents"}
    for name, values in counts.kpis.items():
        column = result.kpis.column(name).to_numpy(zero_copy_only=False).astype(float)
        np.testing.assert_array_equal(values, column, err_msg=name)
    assert counts.bounds == result.bounds


def _dense(result: sim.RunResult, table: str, axis: str, scenario: sim.Scenario
           ) -> np.ndarray:
    stages, segments = list(scenario.stages), list(scenario.segments)
    reps = sorted(set(result.seeds))
    out = np.zeros((len(reps), scenario.steps + 1, len(segments), len(stages)), np.int64)
    for row in getattr(result, table).to_pylist():
        out[reps.index(row["seed"]), row["step"], segments.index(row["segment"]),
            stages.index(row[axis])] += row["count"]
    return out


def test_simulate_counts_are_the_tables_of_run(
        both: tuple[sim.RunResult, sim.RunCounts], tiny_scenario: sim.Scenario) -> None:
    result, counts = both
    order = np.argsort(np.argsort(result.seeds))  # replicate -> position among sorted seeds
    occupancy = _dense(result, "occupancy", "stage", tiny_scenario)[order]
    np.testing.assert_array_equal(counts.occupancy, occupancy)
    entries = _dense(result, "flows", "to_stage", tiny_scenario)[order]
    np.testing.assert_array_equal(counts.entries, entries)
    eligible, retained = counts.retention
    assert eligible.shape == retained.shape == (3, tiny_scenario.steps + 1)
    np.testing.assert_array_equal(eligible.ravel(), result.retention.column("eligible"))
    np.testing.assert_array_equal(retained.ravel(), result.retention.column("retained"))


def test_simulate_checks_its_arguments_as_run_does(tiny_scenario: sim.Scenario) -> None:
    with pytest.raises(sim.SimError, match="replicates"):
        sim.simulate(tiny_scenario, replicates=0)
    with pytest.raises(sim.SimError, match="first_replicate"):
        sim.simulate(tiny_scenario, first_replicate=-1)
