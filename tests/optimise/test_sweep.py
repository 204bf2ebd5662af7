"""Sweeps on a local Dask cluster and global sensitivity analysis.

A sweep must equal the serial runs bit for bit, survive a killed worker and an
interrupted client, and leave one dataset that DuckDB and polars read.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

import sim
from optimise import Variant, design, parse_vary, read_design, sensitivity, sweep
from optimise._sweep import _variants_table
from sim.cli import app
from sim.results import open_dataset

JOURNEY = """\
name: sweepy
seed: 21
time: {horizon_days: HORIZON}
population:
  initial: [{stage: aware, count: COUNT}]
  arrivals: {per_day: 5}
stages:
  aware: {kind: prospect, exits: {use: 0.04, lost: 0.01}}
  use: {kind: customer, exits: {churned: 0.01}, value: {per_day: 2.0}}
  churned: {kind: lost, exits: {use: 0.005}}
  lost: {kind: lost}
touchpoints:
  email:
    stages: [use]
    reach: 0.1
    lift: {use->churned: -0.5}
    cost_per_exposure: 0.2
interventions:
  winback:
    set: {touchpoints.email.reach.use: 0.4}
    cost: {per_day: 3}
"""
TABLES = ("occupancy", "flows", "kpis", "retention", "ledger")
REPLICATES = 4


def _scenario(count: int = 600, horizon: int = 120) -> sim.Scenario:
    return sim.load_scenario(JOURNEY.replace("COUNT", str(count))
                             .replace("HORIZON", str(horizon)))


def _variants() -> list[Variant]:
    grid = dict([parse_vary("touchpoints.email.reach.use=0.05,0.3"),
                 parse_vary("interventions=none,winback")])
    return [*design(grid, zip_=True), Variant("v0002", {"stages.use.exits.churned.p": 0.02})]


def _frame(out: Path | str, table: str) -> pd.DataFrame:
    frame = open_dataset(out, table).to_table().to_pandas()
    for col in ("scenario", "variant"):
        frame[col] = frame[col].astype(str)
    keys = [c for c in frame.columns if frame[c].dtype == object or c in (
        "replicate", "step", "lag_steps", "seed")]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)[sorted(frame.columns)]


def _serial(scenario: sim.Scenario, variants: list[Variant], out: Path) -> None:
    for v in variants:
        sim.run(v.scenario(scenario), replicates=REPLICATES, variant=v.id, out=out)


def _assert_same_dataset(a: Path | str, b: Path | str) -> None:
    for table in TABLES:
        pd.testing.assert_frame_equal(_frame(a, table), _frame(b, table), check_exact=True,
                                      check_categorical=False)


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serial")
    _serial(_scenario(), _variants(), out)
    return out


def test_a_sweep_on_two_workers_equals_the_serial_runs_bit_for_bit(tmp_path: Path,
                                                                    serial: Path) -> None:
    seen: list[tuple[int, int]] = []
    result = sweep(_scenario(), _variants(), replicates=REPLICATES, out=tmp_path, workers=2,
                   progress=lambda done, total: seen.append((done, total)))
    assert result.ran == 3 * REPLICATES and result.skipped == 0
    assert seen[-1] == (12, 12)
    _assert_same_dataset(tmp_path, serial)
    # the variants table maps ids to values; DuckDB joins it to the KPIs
    rows = duckdb.sql(
        f"select v.variant, v.interventions, count(*) as n from "
        f"read_parquet('{tmp_path}/kpis/**/*.parquet', hive_partitioning=true) k join "
        f"read_parquet('{tmp_path}/variants/**/*.parquet', hive_partitioning=true) v "
        f"on k.variant = v.variant group by all order by 1").fetchall()
    assert rows == [("v0000", "none", 4), ("v0001", "winback", 4), ("v0002", None, 4)]
    # polars reads the same dataset through the hive partitions
    occ = pl.scan_parquet(f"{tmp_path}/occupancy/**/*.parquet", hive_partitioning=True)
    counts = occ.group_by("variant").agg(pl.col("replicate").n_unique()).collect()
    assert dict(counts.iter_rows()) == {"v0000": 4, "v0001": 4, "v0002": 4}
    # the summary: one row per variant and KPI, over the four replicates
    summary = result.summary.to_pandas()
    assert set(summary[summary["kpi"] == "conversion"]["n"]) == {4}
    conv = summary[summary["kpi"] == "conversion"].set_index("variant")["mean"]
    expected = _frame(serial, "kpis").groupby("variant")["conversion"].mean()
    assert conv.to_dict() == pytest.approx(expected.to_dict())


def _worker_pids() -> list[int]:
    """Dask worker processes: children of this process started by multiprocessing spawn."""
    me, out = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == me and b"spawn_main" in cmd:
            out.append(int(entry))
    return out


def test_a_killed_worker_loses_nothing(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
                                       ) -> None:
    """SIGKILL one worker while tasks run: every result is still there, and identical."""
    scenario = _scenario(count=20_000, horizon=365)   # ~0.5 s per task
    variants = _variants()
    killed: list[int] = []

    def kill_one(done: int, total: int) -> None:
        if done >= 2 and not killed:
            pids = _worker_pids()
            assert pids, "no worker process found"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    result = sweep(scenario, variants, replicates=REPLICATES, out=tmp_path, workers=2,
                   progress=kill_one)
    assert killed and result.ran == 12
    clean = tmp_path_factory.mktemp("serial-big")
    _serial(scenario, variants, clean)
    _assert_same_dataset(tmp_path, clean)


def test_an_interrupted_sweep_resumes_to_the_clean_dataset(tmp_path: Path,
                                                            serial: Path) -> None:
    def stop_after_five(done: int, total: int) -> None:
        if done >= 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(_scenario(), _variants(), replicates=REPLICATES, out=tmp_path, workers=2,
              progress=stop_after_five)
    stored = open_dataset(tmp_path, "kpis").count_rows()
    assert 5 <= stored < 12
    again = sweep(_scenario(), _variants(), replicates=REPLICATES, out=tmp_path, workers=2)
    assert again.skipped == stored and again.ran == 12 - stored
    kpis = _frame(tmp_path, "kpis")
    assert len(kpis) == 12 and not kpis.duplicated(["variant", "replicate"]).any()
    _assert_same_dataset(tmp_path, serial)


def test_a_rerun_with_a_smaller_design_leaves_only_that_designs_variants(
        tmp_path: Path, serial: Path) -> None:
    sim.run(_scenario(), variant="mine", out=tmp_path)        # not the sweep's: left alone
    sweep(_scenario(), _variants(), replicates=REPLICATES, out=tmp_path, workers=1)
    smaller = design(dict([parse_vary("touchpoints.email.reach.use=0.3")]))
    again = sweep(_scenario(), smaller, replicates=2, out=tmp_path, workers=1)
    kpis = _frame(tmp_path, "kpis")
    assert sorted(set(kpis["variant"])) == ["mine", "v0000"]
    sweep_rows = kpis[kpis["variant"] == "v0000"]
    assert sorted(sweep_rows["replicate"]) == [0, 1]
    assert set(sweep_rows["run_id"]) == {
        sim.run_identity(smaller[0].scenario(_scenario()), engine="fast", population_scale=1.0,
                         base_seed=_scenario().seed)[0]}
    why = {r.variant: r.why for r in again.replaced}
    assert why["v0001"] == why["v0002"] == "not in this sweep's design"
    assert why["v0000"] == "another scenario text"
    for table in TABLES:
        assert set(_frame(tmp_path, table)["variant"]) == {"mine", "v0000"}, table


def test_sweep_command_prints_the_summary(tmp_path: Path) -> None:
    file = tmp_path / "s.yaml"
    file.write_text(JOURNEY.replace("COUNT", "300").replace("HORIZON", "60"))
    res = CliRunner().invoke(app, ["sweep", str(file), "--vary",
                                   "touchpoints.email.reach.use=0.1,0.2", "--replicates", "2",
                                   "--workers", "1", "--out", str(tmp_path / "out"),
                                   "--quiet"])
    assert res.exit_code == 0, res.output
    assert "v0001" in res.output and "4 tasks ran" in res.output
    again = CliRunner().invoke(app, ["sweep", str(file), "--vary",
                                     "touchpoints.email.reach.use=0.1,0.2", "--replicates",
                                     "2", "--workers", "1", "--out", str(tmp_path / "out"),
                                     "--quiet"])
    assert "0 tasks ran, 4 were already stored" in again.output


@pytest.mark.parametrize(("args", "message"), [
    (["--vary", "touchpoints.email.reach.use"], "write PATH=V1,V2"),
    (["--vary", "touchpoints.email.reach.use=0.1,2.0"], "less than or equal to 1"),
    (["--vary", "interventions=nope"], "unknown intervention 'nope'"),
    (["--vary", "a.b=1,2", "--vary", "c.d=1", "--zip"], "--zip needs lists of one length"),
])
def test_bad_sweeps_get_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    file = tmp_path / "s.yaml"
    file.write_text(JOURNEY.replace("COUNT", "300").replace("HORIZON", "60"))
    res = CliRunner().invoke(app, ["sweep", str(file), *args, "--out", str(tmp_path),
                                   "--quiet"])
    assert res.exit_code == 2 and message in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1


def test_without_dask_the_message_names_the_extra(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(sim.SimError, match=r"pip install 'journey-engine\[distributed\]'"):
        sweep(_scenario(), _variants()[:1], out=tmp_path, workers=1)


SOBOL = """\
name: sens
seed: 4
time: {step_days: 30, horizon_days: 360}
population:
  initial: [{stage: active, count: 400}]
stages:
  active: {kind: customer, exits: {churned: 0.1}, value: {per_day: 1.0}}
  churned: {kind: lost}
touchpoints:
  mail:
    stages: [active]
    reach: 0.3
    cost_per_exposure: 1.0
"""


def test_sensitivity_ranks_the_only_parameter_that_matters_first(tmp_path: Path) -> None:
    """`churned` depends on the churn probability only; with common random numbers the
    other two parameters cannot move it, so its total index is ~1 and theirs 0."""
    params = {"touchpoints.mail.cost_per_exposure": (0.5, 5.0),
              "stages.active.exits.churned.p": (0.02, 0.3),
              "economics.discount_rate_annual": (0.0, 0.2)}
    result = sensitivity(sim.load_scenario(SOBOL), params, method="sobol", samples=32,
                         kpis=["churned"], out=tmp_path, workers=2)
    rows = {r["parameter"]: r for r in result.indices.to_pylist()}
    ranked = sorted(rows, key=lambda p: -rows[p]["st"])
    assert ranked[0] == "stages.active.exits.churned.p"
    top = rows[ranked[0]]
    # Saltelli's estimator with N = 32: the index within its own 95% interval of 1
    assert abs(top["st"] - 1.0) <= max(top["st_conf"], 0.05)
    assert abs(top["s1"] - 1.0) <= max(top["s1_conf"], 0.05)
    for name in ranked[1:]:
        assert rows[name]["st"] == pytest.approx(0.0, abs=1e-12)
    assert Path(result.path).is_file()
    morris = sensitivity(sim.load_scenario(SOBOL), params, method="morris", samples=8,
                         kpis=["churned"], out=tmp_path, workers=2)
    mu = {r["parameter"]: r["mu_star"] for r in morris.indices.to_pylist()}
    assert max(mu, key=lambda p: mu[p]) == "stages.active.exits.churned.p"
    assert mu["touchpoints.mail.cost_per_exposure"] == 0.0


def test_a_sweep_on_the_event_engine_writes_the_queues_table(tmp_path: Path) -> None:
    scenario = sim.load_scenario(Path(__file__).resolve().parents[2] / "scenarios" /
                                 "cosmetic_clinic_capacity.yaml")
    variants = design(dict([parse_vary("touchpoints.consult.capacity=1,2")]))
    result = sweep(scenario, variants, out=tmp_path, population_scale=0.1, engine="des",
                   workers=1)
    assert result.ran == 2
    queues = open_dataset(tmp_path, "queues").to_table().to_pandas()
    served = queues[queues["touchpoint"] == "consult"].groupby("variant")["capacity"].max()
    assert served.to_dict() == {"v0000": 1, "v0001": 2}
    again = sweep(scenario, variants, out=tmp_path, population_scale=0.1, engine="des",
                  workers=1)
    assert again.ran == 0 and again.skipped == 2


def test_a_sweep_file_gives_the_design_of_the_command_line(tmp_path: Path) -> None:
    design_file = tmp_path / "design.yaml"
    design_file.write_text("vary:\n  touchpoints.email.reach.use: [0.05, 0.3]\n"
                           "  interventions: [none, [winback]]\nzip: true\n")
    grid, zipped = read_design(design_file)
    from_cli = dict([parse_vary("touchpoints.email.reach.use=0.05,0.3"),
                     parse_vary("interventions=none,winback")])
    assert zipped and design(grid, zip_=zipped) == design(from_cli, zip_=True)


@pytest.mark.parametrize(("text", "line", "message"), [
    ("vary:\n  a.b: [1, 2]\nzipp: true\n", 3, "unknown field 'zipp' (did you mean 'zip'?)"),
    # the located field path is the engine's; pydantic's words after it are not asserted
    ("vary:\n  a.b: []\n", 2, "vary.a.b: "),
    ("vary:\n  a.b: 3\n", 2, "vary.a.b: "),
    ("vary: {}\n", 1, "vary: "),
    ("zip: true\n", 1, "vary: required field is missing"),
    ("vary:\n  a.b: [on, off]\n", 2, "ambiguous value 'on'"),
    ("- 1\n", 1, "a sweep file is a mapping"),
])
def test_a_bad_sweep_file_is_one_located_line(tmp_path: Path, text: str, line: int,
                                              message: str) -> None:
    design_file = tmp_path / "design.yaml"
    design_file.write_text(text)
    with pytest.raises(sim.ScenarioError) as info:
        read_design(design_file)
    assert len(info.value.problems) == 1
    assert str(info.value).startswith(f"{design_file}:{line}:")
    assert message in str(info.value)
    res = CliRunner().invoke(app, ["sweep", str(design_file), "--design", str(design_file)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) >= 1


def test_the_variants_table_keeps_missing_values_as_nulls() -> None:
    variants = [Variant("v0000", {"a.b": 0.1, "c.d": True}), Variant("v0001", {"e.f": 2})]
    table = _variants_table(variants, _scenario())
    assert table.column("a.b").type == pa.float64()
    assert table.column("a.b").to_pylist() == [0.1, None]
    assert table.column("c.d").to_pylist() == [True, None]
    assert table.column("e.f").to_pylist() == [None, 2.0]


def test_sweep_as_a_real_process_keeps_dask_chatter_off_the_terminal(tmp_path: Path) -> None:
    """`journey sweep` as a user runs it: the KPI table on stdout, and nothing on stderr:
    no log lines or warnings from Dask (they come back with --verbose or --debug)."""
    import subprocess

    file = tmp_path / "s.yaml"
    file.write_text(JOURNEY.replace("COUNT", "300").replace("HORIZON", "60"))
    args = [sys.executable, "-c", "from sim.cli import main; main()", "sweep", str(file),
            "--vary",
            "touchpoints.email.reach.use=0.1,0.2", "--workers", "1", "--out",
            str(tmp_path / "out"), "--quiet"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "v0001" in done.stdout and "2 tasks ran" in done.stdout
    assert done.stderr == "", done.stderr


def test_sensitivity_command_prints_and_writes_the_indices(tmp_path: Path) -> None:
    file = tmp_path / "sens.yaml"
    file.write_text(SOBOL)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, [
        "sensitivity", str(file), "--param", "stages.active.exits.churned.p=0.02:0.3",
        "--param", "touchpoints.mail.cost_per_exposure=0.5:5", "--method", "morris",
        "--samples", "2", "--kpi", "churned", "--workers", "1", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "churned" in res.output and "6 design points" in res.output
    table = pd.read_parquet(out / "sensitivity" / "scenario=sens" / "morris.parquet")
    assert set(table["parameter"]) == {"stages.active.exits.churned.p",
                                       "touchpoints.mail.cost_per_exposure"}
    bad = CliRunner().invoke(app, ["sensitivity", str(file), "--param", "a.b=2:1", "--param",
                                   "c.d=0:1", "--out", str(out)])
    assert bad.exit_code == 2 and "HIGH must exceed LOW" in bad.output
