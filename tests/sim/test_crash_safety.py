"""Crash safety, proven: SIGKILL at random moments never leaves an unreadable folder,
and ``--resume`` then gives exactly the folder a clean run gives.

Kills land during the kernels' compilation (a fresh numba cache), the simulation
and the writing of the tables; after every kill pyarrow and DuckDB read every
table of the folder; temporaries a kill leaves are hidden from both and removed
by the next write.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pytest

from sim.results import TABLES, list_runs

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "dental_clinic.yaml"
RUN = ["run", str(SCENARIO), "--replicates", "6", "--events", "--quiet", "--seed", "3"]
SWEEP = ["sweep", str(SCENARIO), "--replicates", "2", "--workers", "1", "--quiet",
         "--population-scale", "0.5",
         "--vary", "touchpoints.care_tips_email.reach.use=0.015,0.1",
         "--vary", "interventions=none,recall_reminders"]


def _files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def _journey(args: list[str], out: Path, env: dict[str, str] | None = None,
             kill_after: float | None = None, kill_while_writing: float | None = None
             ) -> int | None:
    """Run ``journey ARGS --out OUT`` in its own process group; SIGKILL the whole group
    after ``kill_after`` seconds, or ``kill_while_writing`` seconds after the files under
    OUT change (the run is writing); neither: let it finish. Returns the exit code, or
    None when it was killed."""
    proc = subprocess.Popen([sys.executable, "-c", "from sim.cli import main; main()", *args,
                             "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    if kill_while_writing is not None:
        before = _files(out)
        while proc.poll() is None and _files(out) == before:
            time.sleep(0.001)
        kill_after = kill_while_writing
    try:
        proc.wait(timeout=kill_after if kill_after is not None else 600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert proc.returncode == 0, err
    return proc.returncode


def _timed(args: list[str], out: Path) -> float:
    start = time.perf_counter()
    _journey(args, out)
    return time.perf_counter() - start


def _assert_readable(folder: Path) -> None:
    """Every table of the folder reads with pyarrow and DuckDB (none of the kill's
    temporaries is visible to either)."""
    for table in (*TABLES, "variants"):
        path = folder / table
        files = list(path.rglob("*.parquet"))
        if not files:
            continue
        rows = ds.dataset(path, format="parquet", partitioning="hive").to_table().num_rows
        [(counted,)] = duckdb.sql(f"select count(*) from read_parquet('{path}/**/*.parquet', "
                                  f"hive_partitioning=true)").fetchall()
        assert counted == rows, table


def _frame(folder: Path, table: str) -> pd.DataFrame:
    frame = ds.dataset(folder / table, format="parquet", partitioning="hive").to_table(
    ).to_pandas()
    for col in ("scenario", "variant"):
        frame[col] = frame[col].astype(str)
    cols = sorted(frame.columns)
    return frame[cols].sort_values(cols, kind="stable").reset_index(drop=True)


def _assert_same_folder(got: Path, want: Path) -> None:
    for table in (*TABLES, "variants"):
        if not (want / table).exists():
            assert not (got / table).exists(), table
            continue
        pd.testing.assert_frame_equal(_frame(got, table), _frame(want, table),
                                      check_exact=True, check_categorical=False)
    assert not [p for p in got.rglob("*") if p.name.endswith(".tmp")], "temporaries left"


@pytest.mark.slow
def test_journey_run_killed_at_random_moments_resumes_to_the_clean_folder(
        tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    duration = _timed(RUN, clean)              # warm: kernels come from numba's cache
    out = tmp_path / "killed"
    rng = random.Random(20261202)
    # during compilation: a numba cache of its own, empty, so the kernels compile
    cold = {"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    for moment in (1.5, 4.0):
        assert _journey([*RUN, "--resume"], out, env=cold, kill_after=moment) is None
        _assert_readable(out)
    # anywhere in the simulation and writing, then while files are being written
    kills = 0
    for _ in range(6):
        if _journey([*RUN, "--resume"], out, kill_after=rng.uniform(0.3, duration)) is None:
            kills += 1
        _assert_readable(out)
    for _ in range(8):
        if _journey(RUN, out, kill_while_writing=rng.uniform(0.0, 0.02)) is None:
            kills += 1
        _assert_readable(out)
    assert kills >= 8
    _journey([*RUN, "--resume"], out)
    _assert_same_folder(out, clean)
    [run] = list_runs(out)
    assert run.replicates == tuple(range(6)) and not run.incomplete


@pytest.mark.slow
def test_a_sweep_killed_at_random_moments_resumes_to_the_clean_dataset(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    clean = tmp_path / "clean"
    duration = _timed(SWEEP, clean)
    out = tmp_path / "killed"
    rng = random.Random(7)
    for _ in range(3):
        _journey(SWEEP, out, kill_after=rng.uniform(0.5, duration))
        _assert_readable(out)
    for _ in range(3):
        _journey(SWEEP, out, kill_while_writing=rng.uniform(0.0, 0.05))
        _assert_readable(out)
    _journey(SWEEP, out)
    _assert_same_folder(out, clean)
