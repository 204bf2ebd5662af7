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


def test_segment_kpis_add_up_to_the_run_s(both: tuple[sim.RunResult, sim.RunCounts]) -> None:
    _, counts = both
    by_segment = counts.segment_kpis
    assert set(by_segment) == {"young", "old"}
    for name in ("entrants", "acquired", "churned", "won_back", "revenue"):
        total = sum(by_segment[g][name] for g in by_segment)
        np.testing.assert_allclose(total, counts.kpis[name], rtol=1e-12, err_msg=name)


def test_switching_a_touchpoint_off_removes_its_exposures_and_costs_only(
        tiny_scenario: sim.Scenario) -> None:
    args = {"seed": 3, "replicates": 2, "population_scale": 0.2}
    on = sim.simulate(tiny_scenario, **args)
    off = sim.simulate(tiny_scenario, off=["email"], **args)
    assert all(raw.exposures.sum() > 0 for raw in on.raw)
    assert all(raw.exposures.sum() == 0 for raw in off.raw)
    assert (off.kpis["cost"] == 0).all()
    # the touchpoint lowers churn: without it more customers churn, on the same seeds
    assert off.kpis["churned"].sum() > on.kpis["churned"].sum()
    # arrivals draw from their own streams: the same entrants either way
    np.testing.assert_array_equal(off.kpis["entrants"], on.kpis["entrants"])
    with pytest.raises(sim.SimError, match="unknown touchpoint 'emial'"):
        sim.simulate(tiny_scenario, off=["emial"], **args)
