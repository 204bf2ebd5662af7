"""Parquet results: layout, metadata, atomic replacement, readers, resume."""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import sim
from sim.results import open_dataset, read_table

TABLES = ("occupancy", "flows", "kpis", "retention", "ledger")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, tiny_scenario: sim.Scenario
            ) -> tuple[Path, sim.RunResult]:
    out = tmp_path_factory.mktemp("results")
    result = sim.run(tiny_scenario, seed=11, replicates=2, out=out, events=True)
    return out, result


def test_layout_is_hive_partitioned(written: tuple[Path, sim.RunResult]) -> None:
    out, result = written
    for table in (*TABLES, "events"):
        for r in range(len(result.seeds)):
            path = out / table / f"scenario={result.scenario.name}" / "variant=base" / \
                f"replicate={r}" / f"part-{result.run_id}.parquet"
            assert path.is_file(), path
    assert not list(out.rglob("*.tmp")), "temporary files left behind"


def test_metadata_names_the_run(written: tuple[Path, sim.RunResult]) -> None:
    out, result = written
    path = next((out / "kpis").rglob("*.parquet"))
    meta = {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}
    assert meta["journey.scenario_hash"] == result.scenario.content_hash
    assert sim.load_scenario(meta["journey.scenario_yaml"]) == result.scenario
    assert int(meta["journey.seed"]) in result.seeds
    assert meta["journey.engine"] == "fast"
    assert meta["journey.rng"]
    assert meta["journey.version"] == sim.__version__


def test_readers_agree(written: tuple[Path, sim.RunResult]) -> None:
    out, result = written
    arrow = open_dataset(out, "kpis").to_table()
    assert arrow.num_rows == 2
    assert sorted(arrow.column("replicate").to_pylist()) == [0, 1]
    frame = pd.read_parquet(out / "kpis")
    assert len(frame) == 2 and {"scenario", "replicate", "variant", "seed"} <= set(frame)
    rows = duckdb.sql(
        f"select replicate, conversion from read_parquet('{out}/kpis/**/*.parquet', "
        f"hive_partitioning=true) order by replicate").fetchall()
    expected = sorted(zip(result.kpis.column("replicate").to_pylist(),
                          result.kpis.column("conversion").to_pylist(), strict=True))
    assert [(int(r), c) for r, c in rows] == expected
    occ = read_table(out, "occupancy", replicate=1)
    assert set(occ.column("replicate").to_pylist()) == {1}


def test_rerun_replaces_never_duplicates(tmp_path: Path, tiny_scenario: sim.Scenario) -> None:
    first = sim.run(tiny_scenario, seed=5, out=tmp_path)
    sim.run(tiny_scenario, seed=5, out=tmp_path)
    kpis = ds.dataset(tmp_path / "kpis", partitioning="hive").to_table()
    assert kpis.num_rows == 1
    assert kpis.column("conversion")[0].as_py() == first.kpis.column("conversion")[0].as_py()
    other = sim.run(tiny_scenario, seed=6, out=tmp_path)  # another run: it replaces the first
    kpis = ds.dataset(tmp_path / "kpis", partitioning="hive").to_table()
    assert kpis.column("run_id").to_pylist() == [other.run_id]
    assert [r.run_id for r in other.replaced] == [first.run_id]


def test_resume_reuses_finished_replicates(tmp_path: Path, tiny_scenario: sim.Scenario) -> None:
    full = sim.run(tiny_scenario, seed=3, replicates=2, out=tmp_path)
    victim = next((tmp_path / "kpis").rglob("replicate=1/*.parquet"))
    victim.unlink()  # replicate 1 now looks interrupted
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("replicate=0/*.parquet")}
    again = sim.run(tiny_scenario, seed=3, replicates=2, out=tmp_path, resume=True)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("replicate=0/*.parquet")} == stamp
    assert victim.is_file()
    assert again.kpis.column("conversion").to_pylist() == full.kpis.column(
        "conversion").to_pylist()


def test_summary_has_t_intervals_on_the_kpis_own_scale(written: tuple[Path, sim.RunResult]
                                                        ) -> None:
    _, result = written
    summary = {row["kpi"]: row for row in result.summary().to_pylist()}
    values = result.kpis.column("conversion").to_pylist()
    mean = sum(values) / 2
    sd = math.sqrt(sum((v - mean) ** 2 for v in values))  # n - 1 = 1
    half = 12.706204736174707 * sd / math.sqrt(2)  # t(0.975, 1 df)
    row = summary["conversion"]
    assert row["mean"] == pytest.approx(mean)
    # a share: the t interval on the logit scale (delta method), mapped back
    logit = math.log(mean / (1 - mean))
    h = half / (mean * (1 - mean))
    assert row["ci_low"] == pytest.approx(1 / (1 + math.exp(-(logit - h))))
    assert row["ci_high"] == pytest.approx(1 / (1 + math.exp(-(logit + h))))
    assert row["n"] == 2 and row["few"]
    # a quantity without range: the plain t interval
    revenue = result.kpis.column("revenue").to_pylist()
    r_mean = sum(revenue) / 2
    r_half = 12.706204736174707 * math.sqrt(sum((v - r_mean) ** 2 for v in revenue)) / \
        math.sqrt(2)
    d = r_mean  # revenue >= 0 here: the log scale
    assert summary["revenue"]["ci_high"] == pytest.approx(d * math.exp(r_half / d))


def test_events_reconcile_with_flows(written: tuple[Path, sim.RunResult]) -> None:
    _, result = written
    assert result.events is not None
    ev = result.events.to_pandas()
    fl = result.flows.to_pandas()
    moves = ev[ev.from_stage.notna()].groupby(["replicate", "from_stage", "to_stage"]).size()
    flows = fl[fl.kind == "transition"].groupby(["replicate", "from_stage", "to_stage"])[
        "count"].sum()
    pd.testing.assert_series_equal(moves.sort_index(), flows.sort_index(), check_names=False,
                                   check_dtype=False)
    # each agent id enters exactly once
    entries = ev[ev.from_stage.isna()]
    assert not entries.duplicated(["replicate", "agent"]).any()


def test_bad_arguments_are_sim_errors(tiny_scenario: sim.Scenario) -> None:
    for kwargs in ({"replicates": 0}, {"population_scale": 0.0},
                   {"population_scale": float("nan")}, {"engine": "warp"}, {"threads": 99},
                   {"seed": -1}):
        with pytest.raises(sim.SimError):
            sim.run(tiny_scenario, **kwargs)  # type: ignore[arg-type]


def test_threads_option_is_restored(tiny_scenario: sim.Scenario) -> None:
    import numba

    before = numba.get_num_threads()
    sim.run(tiny_scenario, threads=1)
    assert numba.get_num_threads() == before


def test_population_scale_scales_agents(tiny_scenario: sim.Scenario) -> None:
    small = sim.run(tiny_scenario, population_scale=0.5).occupancy.to_pandas()
    full = sim.run(tiny_scenario).occupancy.to_pandas()
    at0 = lambda f: f[f.step == 0]["count"].sum()  # noqa: E731
    assert at0(small) == round(at0(full) * 0.5)


def test_capacity_refused_by_fast_engine(tiny_scenario_text: str) -> None:
    text = tiny_scenario_text.replace(
        "    cost_per_exposure: 0.05",
        "    cost_per_exposure: 0.05\n    capacity: 2\n"
        "    service_time: {distribution: exponential, mean_days: 0.1}")
    scenario = sim.load_scenario(text)
    with pytest.raises(sim.SimError, match="--engine des"):
        sim.run(scenario)


def test_resume_works_on_a_filesystem_uri(tmp_path: Path, tiny_scenario: sim.Scenario) -> None:
    uri = f"file://{tmp_path}"
    full = sim.run(tiny_scenario, seed=3, replicates=2, out=uri)
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.parquet")}
    again = sim.run(tiny_scenario, seed=3, replicates=2, out=uri, resume=True)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.parquet")} == stamp
    pd.testing.assert_frame_equal(again.kpis.to_pandas(), full.kpis.to_pandas())


def test_a_variant_label_must_name_a_folder(tiny_scenario: sim.Scenario) -> None:
    with pytest.raises(sim.SimError, match="names a folder"):
        sim.run(tiny_scenario, variant="../escape")
