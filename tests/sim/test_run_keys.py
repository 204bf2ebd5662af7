"""A folder key holds one run: what a reader reads is always one run, traceable by its id."""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

import sim
from sim.cli import app
from sim.results import TABLES, list_runs

SCALE = 0.2


def _kpis(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / "kpis")


def test_an_edited_scenario_rerun_with_fewer_replicates_leaves_only_the_new_run(
        tiny_scenario: sim.Scenario, tmp_path: Path) -> None:
    old = sim.run(tiny_scenario, replicates=4, population_scale=SCALE, out=tmp_path)
    edited = tiny_scenario.apply(overrides={"population.arrivals.per_day": 5})
    new = sim.run(edited, replicates=2, population_scale=SCALE, out=tmp_path)

    kpis = _kpis(tmp_path)
    assert sorted(kpis["replicate"].astype(int)) == [0, 1]
    assert set(kpis["run_id"]) == {new.run_id} != {old.run_id}
    assert kpis["entrants"].tolist() == new.kpis.column("entrants").to_pylist()
    [replaced] = new.replaced
    assert replaced.run_id == old.run_id and replaced.replicates == (0, 1, 2, 3)
    assert "another scenario text" in str(replaced)
    for table in ("occupancy", "flows", "retention", "ledger"):
        assert set(pd.read_parquet(tmp_path / table)["run_id"]) == {new.run_id}


@pytest.mark.parametrize("change, words", [
    ({"seed": 99}, "base seed"),
    ({"population_scale": 0.1}, "population scale 0.2"),
])
def test_the_replaced_run_says_how_it_differed(tiny_scenario: sim.Scenario, tmp_path: Path,
                                               change: dict[str, float], words: str) -> None:
    sim.run(tiny_scenario, replicates=2, population_scale=SCALE, out=tmp_path)
    kwargs = {"population_scale": SCALE, **change}
    new = sim.run(tiny_scenario, replicates=2, out=tmp_path, **kwargs)  # type: ignore[arg-type]
    assert len(new.replaced) == 1 and words in new.replaced[0].why
    assert set(_kpis(tmp_path)["run_id"]) == {new.run_id}


def test_the_same_run_with_fewer_replicates_drops_the_surplus(
        tiny_scenario: sim.Scenario, tmp_path: Path) -> None:
    sim.run(tiny_scenario, replicates=3, population_scale=SCALE, out=tmp_path)
    again = sim.run(tiny_scenario, replicates=2, population_scale=SCALE, out=tmp_path,
                    resume=True)
    assert sorted(_kpis(tmp_path)["replicate"].astype(int)) == [0, 1]
    assert [r.replicates for r in again.replaced] == [(2,)]
    assert "beyond this run's replicates" in str(again.replaced[0])


def test_resume_reuses_the_runs_replicates_and_adds_the_missing_ones(
        tiny_scenario: sim.Scenario, tmp_path: Path) -> None:
    first = sim.run(tiny_scenario, replicates=2, population_scale=SCALE, out=tmp_path)
    stamps = {p: os.stat(p).st_mtime_ns for p in first.paths}
    more = sim.run(tiny_scenario, replicates=3, population_scale=SCALE, out=tmp_path,
                   resume=True)
    assert all(os.stat(p).st_mtime_ns == t for p, t in stamps.items())
    assert more.replaced == [] and more.run_id == first.run_id
    clean = sim.run(tiny_scenario, replicates=3, population_scale=SCALE)
    pd.testing.assert_frame_equal(more.kpis.to_pandas(), clean.kpis.to_pandas())


def test_other_variants_of_the_folder_are_left_alone(tiny_scenario: sim.Scenario,
                                                     tmp_path: Path) -> None:
    base = sim.run(tiny_scenario, population_scale=SCALE, out=tmp_path)
    other = sim.run(tiny_scenario.apply(interventions=["more_email"]), variant="email",
                    population_scale=SCALE, out=tmp_path)
    assert base.replaced == other.replaced == []
    assert set(_kpis(tmp_path)["run_id"]) == {base.run_id, other.run_id}


def test_every_row_of_every_table_carries_its_run_id(tiny_scenario: sim.Scenario,
                                                     tmp_path: Path) -> None:
    result = sim.run(tiny_scenario, replicates=2, population_scale=SCALE, out=tmp_path,
                     events=True)
    for table in ("occupancy", "flows", "kpis", "retention", "ledger", "events"):
        rows = duckdb.sql(f"select distinct run_id from read_parquet("
                          f"'{tmp_path}/{table}/**/*.parquet', hive_partitioning=true)").fetchall()
        assert rows == [(result.run_id,)], table


def test_temporaries_a_killed_writer_left_are_hidden_and_the_next_run_removes_them(
        tiny_scenario: sim.Scenario, tmp_path: Path) -> None:
    sim.run(tiny_scenario, population_scale=SCALE, out=tmp_path)
    folder = tmp_path / "kpis" / "scenario=tiny" / "variant=base" / "replicate=0"
    leftover = folder / ".part-0123.parquet.deadbeef.tmp"
    leftover.write_bytes(b"half a parquet file")
    assert ds.dataset(tmp_path / "kpis", partitioning="hive").to_table().num_rows == 1
    assert duckdb.sql(f"select count(*) from read_parquet('{tmp_path}/kpis/**/*.parquet')"
                      ).fetchall() == [(1,)]
    sim.run(tiny_scenario, population_scale=SCALE, out=tmp_path)
    assert not leftover.exists()


def test_list_runs_reads_each_run_from_its_files(tiny_scenario: sim.Scenario,
                                                 tmp_path: Path) -> None:
    a = sim.run(tiny_scenario, replicates=2, population_scale=SCALE, out=tmp_path, seed=5)
    b = sim.run(tiny_scenario, variant="v2", population_scale=0.1, out=tmp_path,
                engine="des", events=True)
    runs = {r.variant: r for r in list_runs(tmp_path)}
    assert runs.keys() == {"base", "v2"}
    assert (runs["base"].run_id, runs["base"].base_seed, runs["base"].replicates,
            runs["base"].population_scale, runs["base"].engine) == (a.run_id, 5, (0, 1), SCALE,
                                                                   "fast")
    assert (runs["v2"].run_id, runs["v2"].engine, runs["v2"].population_scale) == (
        b.run_id, "des", 0.1)
    assert "events" in runs["v2"].tables and "events" not in runs["base"].tables
    assert set(runs["base"].tables) <= set(TABLES)
    assert runs["base"].scenario_hash == tiny_scenario.content_hash


def test_journey_runs_lists_the_folder_as_a_table_csv_and_json(tiny_scenario: sim.Scenario,
                                                               tmp_path: Path) -> None:
    result = sim.run(tiny_scenario, replicates=2, population_scale=SCALE, out=tmp_path)
    runner = CliRunner()
    shown = runner.invoke(app, ["runs", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert result.run_id in shown.stdout and "tiny" in shown.stdout
    as_json = runner.invoke(app, ["runs", str(tmp_path), "--format", "json"])
    [row] = json.loads(as_json.stdout)["runs"]
    assert (row["run_id"], row["replicates"], row["population_scale"]) == (result.run_id, 2,
                                                                           SCALE)
    as_csv = runner.invoke(app, ["runs", str(tmp_path), "--format", "csv"])
    assert as_csv.stdout.splitlines()[0].startswith("scenario,variant,run_id")
    missing = runner.invoke(app, ["runs", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no such results folder" in missing.stderr
