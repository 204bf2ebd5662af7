"""Exposure rows of the events table: one per touchpoint exposure, opt-in, changing nothing else."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import sim

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pair(tiny_scenario: sim.Scenario) -> tuple[sim.RunResult, sim.RunResult]:
    plain = sim.run(tiny_scenario, replicates=2, population_scale=0.3, seed=4, events=True)
    traced = sim.run(tiny_scenario, replicates=2, population_scale=0.3, seed=4, exposures=True)
    return plain, traced


def _frame(table: object) -> pd.DataFrame:
    return table.to_pandas()  # type: ignore[attr-defined]


def test_exposure_rows_count_exactly_the_ledgers_exposures(
        pair: tuple[sim.RunResult, sim.RunResult]) -> None:
    _, traced = pair
    assert traced.events is not None
    ev = _frame(traced.events)
    rows = ev[ev["kind"] == "exposure"].groupby(["replicate", "step", "touchpoint"]).size()
    ledger = _frame(traced.ledger)
    billed = ledger[(ledger["kind"] == "touchpoint") & (ledger["exposures"] > 0)].set_index(
        ["replicate", "step", "item"])["exposures"]
    billed.index.names = rows.index.names
    pd.testing.assert_series_equal(rows.sort_index(), billed.sort_index(), check_names=False,
                                   check_dtype=False)


def test_an_exposure_happens_in_a_stage_where_its_touchpoint_is_active(
        pair: tuple[sim.RunResult, sim.RunResult], tiny_scenario: sim.Scenario) -> None:
    _, traced = pair
    ev = _frame(traced.events)
    exposed = ev[ev["kind"] == "exposure"]
    assert len(exposed) > 0 and (exposed["from_stage"] == exposed["to_stage"]).all()
    active = {name: set(tp.stages) for name, tp in tiny_scenario.touchpoints.items()}
    # more_email widens reach, not stages: the base scenario's stages hold in every regime
    assert all(stage in active[tp] for tp, stage in zip(exposed["touchpoint"],
                                                        exposed["from_stage"], strict=True))
    others = ev[ev["kind"] != "exposure"]
    assert others["touchpoint"].isna().all()
    assert set(others["kind"]) == {"entry", "transition"}
    assert (others["kind"] == "entry").eq(others["from_stage"].isna()).all()


def test_asking_for_exposures_changes_no_other_number(
        pair: tuple[sim.RunResult, sim.RunResult]) -> None:
    plain, traced = pair
    for name in ("occupancy", "flows", "kpis", "retention", "ledger"):
        a = _frame(getattr(plain, name)).drop(columns=["run_id"])
        b = _frame(getattr(traced, name)).drop(columns=["run_id"])
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert plain.events is not None and traced.events is not None
    a, b = _frame(plain.events), _frame(traced.events)
    moves = b[b["kind"] != "exposure"].drop(columns=["run_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a.drop(columns=["run_id"]).reset_index(drop=True), moves,
                                  check_exact=True)
    assert plain.run_id != traced.run_id      # another events table: another run


def test_the_event_engine_records_a_queued_touchpoint_when_its_service_ends() -> None:
    scenario = sim.load_scenario(ROOT / "scenarios" / "cosmetic_clinic_capacity.yaml").apply(
        overrides={"time.horizon_days": 90})
    run = sim.run(scenario, engine="des", population_scale=0.1, seed=2, exposures=True)
    ev = _frame(run.events)
    rows = ev[ev["kind"] == "exposure"].groupby(["step", "touchpoint"]).size()
    ledger = _frame(run.ledger)
    billed = ledger[(ledger["kind"] == "touchpoint") & (ledger["exposures"] > 0)].set_index(
        ["step", "item"])["exposures"]
    pd.testing.assert_series_equal(rows.sort_index(), billed.sort_index(), check_names=False,
                                   check_dtype=False)
    queued = [n for n, tp in scenario.touchpoints.items() if tp.capacity is not None]
    assert set(queued) <= set(rows.index.get_level_values("touchpoint"))


def test_journey_run_exposures_writes_them(tiny_scenario_text: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sim.cli import app

    file = tmp_path / "tiny.yaml"
    file.write_text(tiny_scenario_text)
    res = CliRunner().invoke(app, ["run", str(file), "--exposures", "--population-scale",
                                   "0.2", "--out", str(tmp_path / "o"), "--quiet"])
    assert res.exit_code == 0, res.output
    ev = pd.read_parquet(tmp_path / "o" / "events")
    assert {"entry", "transition", "exposure"} == set(ev["kind"])
