"""`journey optimise / calibrate / sweep`: settings, shared number formats, formats for
scripts, a moving two-objective progress, and Ctrl-C as a user presses it (real processes)."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

import optimise
import sim
from sim.cli import app
from tests.conftest import TINY_SCENARIO_TEXT
from tests.optimise.test_sweep import JOURNEY

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _journey() -> list[str]:
    """The installed console script (what a user runs; Dask's spawned workers import it)."""
    exe = shutil.which("journey", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-c", "from sim.cli import main; main()"]


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(JOURNEY.replace("COUNT", "300").replace("HORIZON", "60"))
    return path


# -------------------------------------------------------------------- sweep


def test_registering_the_commands_twice_adds_each_once() -> None:
    import typer

    from optimise.cli import register

    fresh = typer.Typer()
    register(fresh)
    register(fresh)
    names = [c.name for c in fresh.registered_commands]
    assert sorted(names) == ["attribute", "calibrate", "optimise", "sensitivity", "sweep"]


def test_a_bad_variant_names_its_values(sweep_file: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["sweep", str(sweep_file), "--vary",
                              "touchpoints.email.reach.use=0.1,1.5", "--vary",
                              "interventions=none,winback", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert res.stderr.splitlines() == [
        "variant v0002 (touchpoints.email.reach.use=1.5, interventions=none): "
        "touchpoints.email.reach.use: input should be less than or equal to 1"]


def test_sweep_and_run_print_a_kpi_the_same_way(sweep_file: Path, tmp_path: Path) -> None:
    swept = runner.invoke(app, ["sweep", str(sweep_file), "--vary", "seed=21", "--kpi",
                                "revenue", "--kpi", "conversion", "--workers", "1", "--out",
                                str(tmp_path / "s"), "--quiet"])
    ran = runner.invoke(app, ["run", str(sweep_file), "--out", str(tmp_path / "r"),
                              "--quiet"])
    assert swept.exit_code == ran.exit_code == 0, swept.output + ran.output
    [row] = [line.split() for line in swept.stdout.splitlines() if line.startswith("v0000")]
    kpis = {line.split()[0]: line.split()[1] for line in ran.stdout.splitlines()[2:]
            if line.split()}
    assert row[2:] == [kpis["revenue"], kpis["conversion"]]
    assert row[2].startswith("€") and row[3].endswith("%")


def test_sweep_json_holds_every_kpi_of_every_variant(sweep_file: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["sweep", str(sweep_file), "--vary",
                              "touchpoints.email.reach.use=0.1,0.2", "--workers", "1", "--out",
                              str(tmp_path / "o"), "--format", "json"])
    assert res.exit_code == 0, res.output
    document = json.loads(res.stdout)
    rows = document["summary"]
    assert len(rows) == 2 * len(sim.KPI_NAMES)
    assert {r["touchpoints.email.reach.use"] for r in rows} == {0.1, 0.2}
    assert "2 tasks ran" in res.stderr


# ----------------------------------------------------------------- optimise


def _tiny(tmp_path: Path, second: bool = False) -> Path:
    text = TINY_SCENARIO_TEXT.replace("horizon_days: 365", "horizon_days: 400") \
        .replace("count: 1000", "count: 300")
    if second:
        text = text.replace("  objective: {kpi: retention_365}\n",
                            "  objective: {kpi: retention_365}\n"
                            "  second_objective: {kpi: cost, direction: minimize}\n")
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


def test_two_objectives_report_the_front_and_the_best_of_each(tmp_path: Path) -> None:
    seen: list[tuple[int, int, float | None, str]] = []
    optimise.optimise(sim.load_scenario(_tiny(tmp_path, second=True)), trials=4,
                      replicates=1, top_k=1, reeval_replicates=2, out=tmp_path,
                      progress=lambda *args: seen.append(args))
    done, total, best, status = seen[-1]
    assert (done, total, best) == (4, 4, None)
    assert status.startswith("front ") and "best retention_365 " in status
    assert "%" in status and "best cost €" in status


def test_optimise_with_settings_keeps_its_own_study_and_prints_csv(tmp_path: Path) -> None:
    file = _tiny(tmp_path)
    out = tmp_path / "o"
    res = runner.invoke(app, ["optimise", str(file), "--set", "touchpoints.email.satisfaction=0.2",
                              "--trials", "2", "--replicates", "1", "--top-k", "1", "--out",
                              str(out), "--format", "csv"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert rows[0]["design"] == "baseline" and rows[0]["objective"] == "retention_365"
    assert 0 < float(rows[0]["value"]) < 1
    assert (out / "optimise" / "tiny-touchpoints.email.satisfaction-0.2").is_dir()
    assert "wrote " in res.stderr
    journal = out / "optimise" / "tiny-touchpoints.email.satisfaction-0.2.journal"
    assert f"the study is in {journal} (optuna-dashboard {journal}" in res.stderr
    assert optuna.logging.get_verbosity() == optuna.logging.CRITICAL
    try:
        loud = runner.invoke(app, ["--verbose", "optimise", str(file), "--trials", "2",
                                   "--replicates", "1", "--top-k", "1", "--out", str(out),
                                   "--quiet"])
        assert loud.exit_code == 0, loud.output
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


# ---------------------------------------------------------------- calibrate


def test_calibrate_with_settings_reads_the_files_next_to_the_scenario(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    shutil.copytree(ROOT / "scenarios" / "data", folder / "data")
    shutil.copy(ROOT / "scenarios" / "subscription_cohort.yaml", folder / "cohort.yaml")
    res = runner.invoke(app, ["calibrate", str(folder / "cohort.yaml"), "--set",
                              "calibrate.replicates=1", "--trials", "3", "--intervals",
                              "none", "--out", str(tmp_path / "o"), "--format", "json"])
    assert res.exit_code == 0, res.output
    document = json.loads(res.stdout)
    assert {p["parameter"] for p in document["parameters"]} == {
        "segments.all.heterogeneity.active->churned.a",
        "segments.all.heterogeneity.active->churned.b"}
    assert document["fit"] and document["evaluations"] >= 3


# ------------------------------------------------------------- Ctrl-C, for real


def _interrupt(args: list[str], ready: Callable[[], bool], tmp_path: Path
               ) -> tuple[int, list[str], str]:
    """Start ``journey ARGS``, wait until ``ready()``, then press Ctrl-C as a terminal does
    (SIGINT to the whole process group, workers included); returns the exit code, the
    non-empty stderr lines and stdout."""
    proc = subprocess.Popen([*_journey(), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            cwd=tmp_path)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not ready():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=240)
    return proc.returncode, [line for line in err.splitlines() if line.strip()], out


def test_ctrl_c_on_a_sweep_is_one_line_without_dask_tracebacks(tmp_path: Path) -> None:
    file = tmp_path / "s.yaml"
    file.write_text(JOURNEY.replace("COUNT", "20000").replace("HORIZON", "400"))
    out = tmp_path / "o"
    args = ["sweep", str(file), "--vary", "touchpoints.email.reach.use=0.1,0.2,0.3",
            "--replicates", "8", "--workers", "2", "--out", str(out)]
    code, lines, stdout = _interrupt(args, lambda: any(out.glob("kpis/**/*.parquet")),
                                     tmp_path)
    assert code == 130, lines
    assert lines == [f"interrupted: finished tasks are stored in {out}; continue with: "
                     f"{shlex.join(['journey', *args])}"]
    assert stdout == ""


def test_optimise_workers_keep_optuna_quiet_and_ctrl_c_is_one_line(tmp_path: Path) -> None:
    file = _tiny(tmp_path)
    quiet = subprocess.run([*_journey(), "optimise", str(file), "--trials", "3",
                            "--replicates", "1", "--top-k", "1", "--workers", "2", "--out",
                            str(tmp_path / "q")], capture_output=True, text=True, timeout=300,
                           check=False, cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""                    # no "[I …] Trial 0 finished" from the workers
    out = tmp_path / "o"
    args = ["optimise", str(file), "--trials", "200", "--replicates", "2", "--workers", "2",
            "--out", str(out)]
    def trials_under_way() -> bool:  # the workers have started trials of their own
        return any(p.read_text().count('"user_attr":{"worker":') >= 3
                   for p in out.rglob("*.journal"))

    code, lines, stdout = _interrupt(args, trials_under_way, tmp_path)
    assert code == 130, lines
    assert lines == [f"interrupted: finished trials are stored in the study tiny; continue "
                     f"with: {shlex.join(['journey', *args])}"]
    assert stdout == ""
