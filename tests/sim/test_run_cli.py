"""`journey run`: every shipped scenario runs; the command in-process; Ctrl-C in a real process."""

from __future__ import annotations

import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

import sim
from sim.cli import app
from sim.results import TABLES

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))


def _queued(scenario: sim.Scenario) -> bool:
    return any(tp.queued for tp in scenario.touchpoints.values())


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_shipped_scenario_runs(path: Path) -> None:
    """Each shipped journey runs on its engine: the fast one, or the event engine where
    touchpoints have a capacity (the fast engine refuses those, pointing to it)."""
    scenario = sim.load_scenario(path)
    enabled = scenario.apply(interventions=list(scenario.interventions))
    engine = "des" if _queued(scenario) else "fast"
    if engine == "des":
        with pytest.raises(sim.SimError, match="--engine des"):
            sim.run(scenario, population_scale=0.05, seed=1)
    for variant in (scenario, enabled):
        result = sim.run(variant, population_scale=0.05, seed=1, engine=engine)
        kpi = result.kpis.to_pylist()[0]
        assert kpi["entrants"] + result.occupancy.to_pandas().query("step == 0")[
            "count"].sum() > 0
        if not variant.stages_of_kind("prospect"):
            # a closed cohort of placed customers: nobody to acquire, so the journey is
            # the cohort's churn
            assert math.isnan(kpi["conversion"]) and kpi["acquired"] == 0
            assert kpi["churned"] > 0
            continue
        assert 0 <= kpi["conversion"] <= 1
        assert kpi["acquired"] > 0, "a shipped journey should acquire customers"
        assert kpi["cost"] >= 0 and kpi["revenue"] >= 0
    # every enabled intervention shows up in the ledger with its cost
    ledger = result.ledger.to_pandas()
    for name in scenario.interventions:
        rows = ledger[(ledger["kind"] == "intervention") & (ledger["item"] == name)]
        expected = scenario.interventions[name].cost
        if expected.fixed or expected.per_day:
            assert rows["amount"].sum() > 0, name


def test_run_command_writes_dataset(tmp_path: Path, tiny_scenario_text: str) -> None:
    file = tmp_path / "tiny.yaml"
    file.write_text(tiny_scenario_text)
    out = tmp_path / "results"
    res = CliRunner().invoke(app, ["run", str(file), "--replicates", "2", "--out", str(out),
                                   "--events", "--seed", "4", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "conversion" in res.stdout and "95% CI" in res.stdout
    assert str(out) in res.stdout
    for table in (t for t in TABLES if t != "queues"):  # queues: event engine, capacity
        assert ds.dataset(out / table, partitioning="hive").count_rows() > 0, table


def test_run_des_writes_queues_with_every_option(tmp_path: Path) -> None:
    """`journey run FILE --engine des` on the capacity scenario, with every option of
    journey run; a rerun with --resume reuses the replicates; the fast engine refuses
    the file in one line that points to --engine des."""
    file = ROOT / "scenarios" / "cosmetic_clinic_capacity.yaml"
    out = tmp_path / "results"
    args = ["run", str(file), "--engine", "des", "--replicates", "2", "--out", str(out),
            "--events", "--seed", "4", "--threads", "1", "--population-scale", "0.3",
            "--variant", "slots", "--quiet"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "mean_wait_days" in res.stdout and "engine des" in res.stdout
    for table in TABLES:
        assert ds.dataset(out / table, partitioning="hive").count_rows() > 0, table
    queues = ds.dataset(out / "queues", partitioning="hive").to_table().to_pandas()
    assert set(queues["touchpoint"]) == {"consult", "surgeon"}
    assert set(queues["variant"]) == {"slots"} and set(queues["replicate"]) == {0, 1}
    assert {"arrivals", "served", "abandoned", "withdrawn", "queue_length", "in_service",
            "mean_wait_days", "p90_wait_days", "utilisation",
            "utilisation_open"} <= set(queues.columns)
    assert queues["served"].sum() > 0
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    res = CliRunner().invoke(app, [*args, "--resume"])
    assert res.exit_code == 0, res.output
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == stamp
    res = CliRunner().invoke(app, ["run", str(file), "--out", str(tmp_path / "f"), "--quiet"])
    assert res.exit_code == 2
    assert "--engine des" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.output


@pytest.mark.parametrize("args", [["--population-scale", "-1"], ["--threads", "0"],
                                  ["--replicates", "0"], ["--seed", "-3"],
                                  ["--engine", "slow"]])
def test_run_rejects_bad_options(tmp_path: Path, tiny_scenario_text: str,
                                 args: list[str]) -> None:
    file = tmp_path / "tiny.yaml"
    file.write_text(tiny_scenario_text)
    res = CliRunner().invoke(app, ["run", str(file), "--out", str(tmp_path / "o"), *args])
    assert res.exit_code == 2
    assert "Traceback" not in res.output


def test_run_bad_scenario_is_one_line_per_problem(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text("name: x\ntime: {horizon_days: 10}\nstages: {a: {kind: prospect}}\n")
    res = CliRunner().invoke(app, ["run", str(file), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert f"{file}:3:" in res.stderr and "customer" in res.stderr
    assert "Traceback" not in res.output


def test_ctrl_c_leaves_only_complete_files_and_says_how_to_resume_in_one_line(
        tmp_path: Path, tiny_scenario_text: str) -> None:
    """SIGINT to the process group while replicates run (a terminal's Ctrl-C): exit 130,
    one line on stderr naming what is kept and the command to resume, no temporary
    file, no partial replicate."""
    text = tiny_scenario_text.replace("horizon_days: 365", "horizon_days: 3650")
    file = tmp_path / "long.yaml"
    file.write_text(text)
    out = tmp_path / "results"
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}  # replicates one after another
    args = ["run", str(file), "--replicates", "50", "--population-scale", "4", "--out",
            str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-c", "from sim.cli import main; main()", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True)
    # wait until at least one replicate is complete, then interrupt
    deadline = time.monotonic() + 120
    kpis = out / "kpis"
    while time.monotonic() < deadline and not list(kpis.rglob("*.parquet")):
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert [line for line in err.splitlines() if line.strip()] == [
        f"interrupted: replicates that finished are stored in {out} (none partly); continue "
        f"with: {shlex.join(['journey', *args, '--resume'])}"]
    assert not [p for p in out.rglob("*") if p.name.startswith(".")], "temporary files left"
    done = {p.parent.name for p in kpis.rglob("*.parquet")}
    assert 1 <= len(done) < 50
    for table in ("occupancy", "flows", "retention", "ledger"):
        assert {p.parent.name for p in (out / table).rglob("*.parquet")} >= done, table
