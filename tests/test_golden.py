"""Proof that a reshaping changed nothing: the tables of a fixed set of runs hash the same.

A fixed set of commands — a fast run, an event-engine run with queues, an
optimisation with a fixed sampler seed, a calibration and a sweep — writes its
tables; each table's content (rows in the order written, values at full
precision, no timestamps or file metadata) is hashed with SHA-256 and compared
with ``tests/golden.json``. The hashes are not an oracle of correctness (the
theory tests are): they say that code moved without changing what it computes.

Tables made by Optuna's samplers depend on Optuna's release as well as on this
code, so they are compared only under the Optuna release the hashes were
recorded with; the engine's tables are compared always.

Record anew, after a change meant to change numbers, with
``python -m tests.test_golden`` and say why in the commit.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import sim

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).with_name("golden.json")
SCENARIOS = ROOT / "scenarios"
RUN_TABLES = ("occupancy", "flows", "kpis", "retention", "ledger", "events", "queues")


def _digest(table: pa.Table) -> str:
    """SHA-256 of a table's columns and values (not its metadata or chunking)."""
    h = hashlib.sha256()
    table = table.replace_schema_metadata(None)
    for name in sorted(table.column_names):
        column = table.column(name)
        h.update(f"{name}:{column.type}\n".encode())
        h.update(json.dumps(column.to_pylist(), default=repr).encode())
    return h.hexdigest()


def _dataset(folder: Path) -> dict[str, str]:
    out = {}
    for table in RUN_TABLES:
        if (folder / table).is_dir():
            read = ds.dataset(folder / table, format="parquet", partitioning="hive").to_table()
            keys = [c for c in ("scenario", "variant", "replicate", "step", "lag_steps",
                                "from_stage", "to_stage", "kind", "item", "agent", "segment",
                                "stage", "touchpoint") if c in read.column_names]
            read = read.sort_by([(k, "ascending") for k in keys])
            out[table] = _digest(read)
    return out


def _fast(folder: Path) -> dict[str, str]:
    sim.run(SCENARIOS / "dental_clinic.yaml", replicates=2, population_scale=0.2, events=True,
            out=folder)
    return _dataset(folder)


def _des(folder: Path) -> dict[str, str]:
    scenario = sim.load_scenario(SCENARIOS / "cosmetic_clinic_capacity.yaml").apply(
        overrides={"time.horizon_days": 120})
    sim.run(scenario, replicates=2, population_scale=0.1, engine="des", out=folder)
    return _dataset(folder)


def _optimise(folder: Path) -> dict[str, str]:
    import optimise

    result = optimise.optimise(SCENARIOS / "dental_clinic.yaml", trials=6, replicates=2,
                               population_scale=0.1, seed=5, top_k=2, out=folder)
    study = Path(result.paths[0]).parent
    return {f.name: _digest(pq.read_table(f)) for f in sorted(study.glob("*.parquet"))}


def _calibrate(folder: Path) -> dict[str, str]:
    import optimise

    result = optimise.calibrate(SCENARIOS / "subscription_cohort.yaml", trials=6,
                                population_scale=2, intervals="profile", seed=3, out=folder)
    study = Path(result.paths[0]).parent
    return {f.name: _digest(pq.read_table(f)) for f in sorted(study.glob("*.parquet"))}


def _sweep(folder: Path) -> dict[str, str]:
    import optimise

    variants = optimise.design({"touchpoints.care_tips_email.reach.use": [0.015, 0.1],
                                "interventions": [[], ["recall_reminders"]]})
    optimise.sweep(SCENARIOS / "dental_clinic.yaml", variants, replicates=2, out=folder,
                   population_scale=0.1, workers=1)
    return _dataset(folder)


CASES: dict[str, tuple[Callable[[Path], dict[str, str]], bool]] = {
    "fast": (_fast, False), "des": (_des, False), "optimise": (_optimise, True),
    "calibrate": (_calibrate, True), "sweep": (_sweep, False),
}
"""Case -> (what it runs, whether its tables depend on Optuna's samplers)."""


def _golden() -> dict[str, object]:
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("case", list(CASES))
def test_the_tables_of_a_fixed_set_of_runs_are_unchanged(case: str, tmp_path: Path) -> None:
    golden = _golden()
    build, uses_optuna = CASES[case]
    if uses_optuna and golden["optuna"] != version("optuna"):
        pytest.skip(f"recorded with Optuna {golden['optuna']}, this is {version('optuna')}: "
                    f"its samplers may draw other trials")
    assert build(tmp_path) == golden["cases"][case]  # type: ignore[index]


def record() -> None:
    """Write ``tests/golden.json`` from the current code."""
    import tempfile

    cases = {}
    for name, (build, _) in CASES.items():
        with tempfile.TemporaryDirectory() as folder:
            cases[name] = build(Path(folder))
    GOLDEN.write_text(json.dumps({"optuna": version("optuna"), "cases": cases}, indent=1,
                                 sort_keys=True) + "\n")


if __name__ == "__main__":
    record()
    sys.stdout.write(f"wrote {GOLDEN}\n")
