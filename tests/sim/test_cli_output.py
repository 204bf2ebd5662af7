"""What every command prints: bad options in one line by their flag, plain tables in a
pipe, --format csv/json with the data only, and one line on Ctrl-C."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sim
from sim.cli import app

runner = CliRunner()
BOX = set("─│┃┏┓┗┛┡┩└┘╇━┼┬┴├┤")


@pytest.fixture
def tiny_file(tmp_path: Path, tiny_scenario_text: str) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_scenario_text)
    return path


SIM_CASES = [
    (["run", "FILE", "--population-scale", "-1"],
     "--population-scale -1: must be a finite number > 0"),
    (["run", "FILE", "--population-scale", "nan"],
     "--population-scale nan: must be a finite number"),
    (["run", "FILE", "--replicates", "0"], "--replicates 0: must be a whole number ≥ 1"),
    (["run", "FILE", "--replicates", "x"],
     "--replicates x: input should be a valid integer, unable to parse string as an integer"),
    (["run", "FILE", "--seed", "-3"], "--seed -3: must be a whole number in 0..2**63-1"),
    (["run", "FILE", "--threads", "0"], "--threads 0: must lie in 1.."),
    (["run", "FILE", "--engine", "slow"], "--engine slow: must be one of fast, des"),
    (["run", "FILE", "--engine", "de"], "--engine de: must be one of fast, des (did you mean "
                                        "'des'?)"),
    (["run", "FILE", "--variant", "a/b"], "--variant a/b: not a valid label"),
    (["run", "FILE", "--format", "xml"], "--format xml: must be one of table, csv, json"),
    (["run", "FILE", "--replicate", "2"], "No such option: --replicate"),
    (["optimise", "FILE", "--trials", "0"], "--trials 0: must be a whole number ≥ 1"),
    (["optimise", "FILE", "--top-k", "0"], "--top-k 0: must be a whole number ≥ 1"),
    (["optimise", "FILE", "--workers", "0"], "--workers 0: must be a whole number ≥ 1"),
    (["optimise", "FILE", "--heartbeat", "0"], "--heartbeat 0: must be a whole number ≥ 1"),
    (["optimise", "FILE", "--population-scale", "0"],
     "--population-scale 0: must be a finite number > 0"),
    (["calibrate", "FILE", "--intervals", "maybe"],
     "--intervals maybe: must be one of profile, none"),
    (["calibrate", "FILE", "--fit-periods", "0"], "--fit-periods 0: must be a whole number ≥ 1"),
    (["sweep", "FILE", "--kpi", "convrsion"],
     "--kpi convrsion: unknown KPI (did you mean 'conversion'?)"),
    (["sweep", "FILE", "--replicates", "-2"], "--replicates -2: must be a whole number ≥ 1"),
    (["sensitivity", "FILE", "--param", "a.b=0:1", "--method", "fast"],
     "--method fast: must be one of sobol, morris"),
    (["sensitivity", "FILE", "--param", "a.b=0:1", "--samples", "1"],
     "--samples 1: must be a whole number ≥ 2"),
    (["report", "DIR", "--seed", "-1"], "--seed -1: must be a whole number in 0..2**63-1"),
]


@pytest.mark.parametrize(("args", "line"), SIM_CASES,
                         ids=[" ".join(a[:1] + a[2:4]) for a, _ in SIM_CASES])
def test_a_bad_option_is_one_line_that_names_the_flag_and_the_value(
        tiny_file: Path, args: list[str], line: str) -> None:
    argv = [str(tiny_file) if a == "FILE" else str(tiny_file.parent) if a == "DIR" else a
            for a in args]
    res = runner.invoke(app, argv)
    assert res.exit_code == 2, res.output
    assert res.stdout == ""
    [shown] = res.stderr.splitlines()
    assert shown.startswith(line), shown


def test_a_bad_option_is_one_line_in_a_real_process(tiny_file: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "from sim.cli import main; main()", "run",
                           str(tiny_file), "--population-scale", "-1"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr == "--population-scale -1: must be a finite number > 0\n"
    assert done.stdout == ""


def test_a_run_prints_a_plain_table_into_a_pipe_with_units_and_plurals(
        tiny_file: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["run", str(tiny_file), "--out", str(tmp_path / "o"),
                              "--seed", "4"])
    assert res.exit_code == 0, res.output
    assert not BOX & set(res.stdout)
    lines = res.stdout.splitlines()
    run_id = sim.run(sim.load_scenario(tiny_file), seed=4).run_id
    assert lines[0] == ("tiny, variant base: 1 replicate, seed 4, 365 steps of 1 day, "
                        f"engine fast, population scale 1, run {run_id}")
    assert lines[1].split() == ["KPI", "mean", "95%", "CI"]
    rows = {line.split()[0]: line for line in lines[2:2 + len(sim.KPI_NAMES)]}
    assert set(rows) == set(sim.KPI_NAMES)
    assert rows["conversion"].split()[1].endswith("%")
    assert rows["revenue"].split()[1].startswith("€")
    assert lines[-1] == f"wrote 5 files to {tmp_path / 'o'}"


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_run_format_prints_the_data_at_full_precision_and_messages_to_stderr(
        tiny_file: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "o"
    res = runner.invoke(app, ["run", str(tiny_file), "--out", str(out), "--seed", "4",
                              "--replicates", "2", "--format", fmt])
    assert res.exit_code == 0, res.output
    expected = {r["kpi"]: r for r in sim.run(sim.load_scenario(tiny_file), seed=4,
                                              replicates=2).summary().to_pylist()}
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(res.stdout)))
        means = {r["kpi"]: float(r["mean"]) if r["mean"] else math.nan for r in rows}
        assert {r["kpi"]: r["unit"] for r in rows}["revenue"] == "EUR"
    else:
        document = json.loads(res.stdout)
        assert (document["scenario"], document["variant"], document["replicates"]) == (
            "tiny", "base", 2)
        means = {r["kpi"]: math.nan if r["mean"] is None else r["mean"]
                 for r in document["kpis"]}
        assert len(document["paths"]) == 10
    assert set(means) == set(expected)
    for kpi, row in expected.items():
        assert means[kpi] == row["mean"] or (math.isnan(means[kpi]) and math.isnan(row["mean"]))
    assert res.stderr.splitlines() == [
        "intervals over 2 replicates are wide and say little: run 4 or more (--replicates) "
        "for intervals that mean much", f"wrote 10 files to {out}"]
