"""Reproducibility: the same seed gives bit-identical tables in any process and thread count.

Every draw is a hash of (seed, agent, step, stream) and every per-step sum is
made chunk by chunk in a fixed order, so nothing may depend on the process,
the number of numba threads or what ran before. Common random numbers: a
touchpoint with no lift and no satisfaction effect changes nothing but cost.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import sim
from sim.engines import _kernels
from sim.engines._driver import PARALLEL_MIN_AGENTS
from sim.engines._kernels import CHUNKS
from sim.engines.fast import simulate
from sim.model import compile_scenario

SEED = 17
SCALE = 170        # 34,000 agents at step 0: one replicate takes the parallel kernel
HORIZON = 40       # both intervention windows open inside it
TABLES = ("occupancy", "flows", "kpis", "retention", "ledger", "events")

_CHILD = textwrap.dedent("""\
    import sys

    import numba
    import pyarrow.parquet as pq

    import sim

    text_path, out = sys.argv[1], sys.argv[2]
    with open(text_path, encoding="utf-8") as fh:
        result = sim.run(fh.read(), seed={seed}, population_scale={scale}, events=True)
    for name in {tables!r}:
        pq.write_table(getattr(result, name), f"{{out}}/{{name}}.parquet")
    print("threads", numba.get_num_threads())
""").format(seed=SEED, scale=SCALE, tables=TABLES)


def _column_bits(column: pa.ChunkedArray) -> tuple[str, object]:
    """A column in a form whose equality means bit-identical (NaN included)."""
    values = column.to_numpy(zero_copy_only=False)
    if values.dtype.kind == "f":
        return str(column.type), np.ascontiguousarray(values).view(np.uint8).tobytes()
    if values.dtype.kind in "iub":
        return str(column.type), values.tobytes()
    return str(column.type), values.tolist()


def assert_identical(a: pa.Table, b: pa.Table, *, skip: tuple[str, ...] = ()) -> None:
    """Same columns, types and bits in every cell (except the ``skip`` columns)."""
    assert a.column_names == b.column_names
    assert a.num_rows == b.num_rows
    for name in a.column_names:
        if name not in skip:
            assert _column_bits(a[name]) == _column_bits(b[name]), f"column {name} differs"


def _assert_runs_identical(a: sim.RunResult, b: sim.RunResult) -> None:
    assert a.seeds == b.seeds
    for name in TABLES:
        assert_identical(getattr(a, name), getattr(b, name))


def _run(scenario: sim.Scenario, seed: int, replicates: int = 1,
         threads: int | None = None) -> sim.RunResult:
    return sim.run(scenario, seed=seed, replicates=replicates, threads=threads,
                   population_scale=SCALE, events=True)


@pytest.fixture(scope="module")
def text(journey_text: str) -> str:
    return journey_text.replace("horizon_days: 120", f"horizon_days: {HORIZON}")


@pytest.fixture(scope="module")
def scenario(text: str) -> sim.Scenario:
    return sim.load_scenario(text)


@pytest.fixture(scope="module")
def single(scenario: sim.Scenario) -> sim.RunResult:
    """One replicate: the parallel kernel on every thread numba has."""
    return _run(scenario, seed=SEED)


@pytest.fixture(scope="module")
def pair(scenario: sim.Scenario) -> sim.RunResult:
    """Two replicates: side by side on two threads (serial kernels) when there are two."""
    return _run(scenario, seed=SEED, replicates=2)


def test_the_parallel_kernel_is_exercised(scenario: sim.Scenario) -> None:
    model = compile_scenario(scenario, SCALE)
    assert sum(count for _, _, count in model.placements) >= PARALLEL_MIN_AGENTS


def test_same_seed_same_tables(scenario: sim.Scenario, single: sim.RunResult) -> None:
    _assert_runs_identical(single, _run(scenario, seed=SEED))
    # agent ids are deterministic: the same agent makes the same moves
    assert single.events is not None and single.events.num_rows > 10_000


def test_parallel_and_serial_kernels_agree(scenario: sim.Scenario) -> None:
    model = compile_scenario(scenario, SCALE)
    a = simulate(model, 99, events=True, parallel=True)
    b = simulate(model, 99, events=True, parallel=False)
    assert a.events is not None and b.events is not None
    for name in ("occupancy", "sat_sum", "flows", "arrivals", "referred", "exposures",
                 "acquired", "reviews", "rating", "retained", "to_convert"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for name, column in a.events.items():
        assert np.array_equal(column, b.events[name]), name
    assert a.clv_total == b.clv_total


@numba.njit(cache=False)
def _worker_of(c: int, workers: int) -> int:   # an inner kernel: called from compiled code
    return _kernels._worker_of(c, workers)


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 5, 7, 8, 16, 17, 18, 20, 32, 33, 63, 64])
def test_every_chunk_has_one_worker_and_the_shares_are_even_and_spread(workers: int
                                                                       ) -> None:
    """The parallel kernel deals the chunks out (:func:`sim.engines._kernels._worker_of`):
    each to one worker in range, shares as even as the counts allow, and each worker's
    chunks spread over the ids, from every quarter while there are 16 workers or fewer
    (agents of one stage sit together along the ids, and stages differ in work)."""
    owner = [_worker_of(c, workers) for c in range(CHUNKS)]
    assert all(0 <= w < workers for w in owner)
    shares = np.bincount(owner, minlength=workers)
    assert shares.min() >= CHUNKS // workers
    assert shares.max() - shares.min() <= (2 if workers in (17, 18) else 1)
    if workers <= 16:
        for w in range(workers):
            quarters = {c * 4 // CHUNKS for c in range(CHUNKS) if owner[c] == w}
            assert quarters == {0, 1, 2, 3}, (w, owner)


def test_thread_count_does_not_matter(scenario: sim.Scenario, single: sim.RunResult,
                                      pair: sim.RunResult) -> None:
    _assert_runs_identical(single, _run(scenario, seed=SEED, threads=1))
    # two replicates one after the other on one thread, or side by side on two
    _assert_runs_identical(pair, _run(scenario, seed=SEED, replicates=2, threads=1))


def test_a_replicate_is_its_seed(single: sim.RunResult, pair: sim.RunResult) -> None:
    """Replicate 0 of a two-replicate run is the one-replicate run."""
    assert pair.seeds[0] == single.seeds[0] != pair.seeds[1]
    for name in TABLES:
        table = getattr(pair, name)
        first = table.filter(pc.equal(table["replicate"], 0))
        assert_identical(getattr(single, name), first)
    occ = pair.occupancy
    rep = np.asarray(occ["replicate"])
    assert not np.array_equal(np.asarray(occ["count"])[rep == 0],
                              np.asarray(occ["count"])[rep == 1])


def test_other_processes_and_thread_counts(tmp_path: Path, text: str,
                                           single: sim.RunResult) -> None:
    """Two fresh processes, NUMBA_NUM_THREADS=1 (serial kernel) and 2 (parallel), at once."""
    path = tmp_path / "journey.yaml"
    path.write_text(text, encoding="utf-8")
    root = Path(__file__).resolve().parents[2]
    children = {}
    for threads in (1, 2):
        out = tmp_path / f"threads{threads}"
        out.mkdir()
        env = {**os.environ, "NUMBA_NUM_THREADS": str(threads)}
        env.pop("NUMBA_DISABLE_JIT", None)
        children[threads] = (out, subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path), str(out)], cwd=root, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for threads, (out, child) in children.items():
        stdout, stderr = child.communicate(timeout=300)
        assert child.returncode == 0, stderr[-4000:]
        assert f"threads {threads}" in stdout
        for name in TABLES:
            table = pq.read_table(out / f"{name}.parquet")
            assert_identical(getattr(single, name), table)
            assert table.schema.metadata[b"journey.rng"] == b"splitmix64-counter-v2"


def test_different_seed_different_tables(scenario: sim.Scenario,
                                         single: sim.RunResult) -> None:
    other = _run(scenario, seed=SEED + 1)
    assert other.seeds != single.seeds

    def differs(a: pa.Table, b: pa.Table, column: str) -> bool:
        return a.num_rows != b.num_rows or _column_bits(a[column]) != _column_bits(b[column])

    assert differs(single.occupancy, other.occupancy, "count")
    assert differs(single.flows, other.flows, "count")
    assert differs(single.kpis, other.kpis, "revenue")
    assert single.events is not None and other.events is not None
    assert differs(single.events, other.events, "agent")


def test_a_touchpoint_without_effect_changes_only_cost(scenario: sim.Scenario,
                                                       single: sim.RunResult) -> None:
    """Common random numbers: ``noop`` (no lift, no satisfaction) only costs money."""
    wider = scenario.apply(overrides={"touchpoints.noop.reach.use": 0.9})
    other = _run(wider, seed=SEED)
    # another scenario text is another run: only the run id tells them apart
    for name in ("occupancy", "flows", "retention", "events"):
        assert_identical(getattr(single, name), getattr(other, name), skip=("run_id",))
    assert_identical(single.kpis, other.kpis, skip=("cost", "roi", "run_id"))
    assert np.all(np.asarray(other.kpis["cost"]) > np.asarray(single.kpis["cost"]))
    # the ledger differs only in noop's rows (more exposures, more cost)
    items = np.asarray(single.ledger["item"].to_numpy(zero_copy_only=False))
    assert np.array_equal(items, np.asarray(other.ledger["item"].to_numpy(zero_copy_only=False)))
    noop = items == "noop"
    mask = pa.array(~noop)
    assert_identical(single.ledger.filter(mask), other.ledger.filter(mask), skip=("run_id",))
    before = np.asarray(single.ledger["exposures"])[noop]
    after = np.asarray(other.ledger["exposures"])[noop]
    assert (after >= before).all() and after.sum() > 2 * before.sum()
