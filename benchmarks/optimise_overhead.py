"""Time per optimisation trial spent outside the simulation (sampler, storage, bookkeeping).

Runs a study on a small scenario with each storage and subtracts the time spent in
simulations (measured around every call into the engine) from the wall time of the
search. Not a test: compare storages as ratios within one run.

Usage::

    python benchmarks/optimise_overhead.py [--trials N] [--repeats K] [--json]

Storages: the journal file (the embedded default), SQLite, and PostgreSQL on a
throwaway cluster on loopback (``tests/pgcluster.py``; skipped, saying why, where
PostgreSQL is not installed). One worker, so the figures are per-trial costs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCENARIO = """\
name: overhead
seed: 1
time: {horizon_days: 200}
population: {arrivals: {per_day: 3}}
stages:
  prospect: {kind: prospect, exits: {customer: {mean_days: 4}}}
  customer: {kind: customer, exits: {churned: {mean_days: 120}}}
  churned: {kind: lost}
touchpoints:
  call: {stages: [customer], reach: 0.0, lift: {customer->churned: -2.0}, cost_per_exposure: 1}
optimise:
  objective: {kpi: retention_90}
  search:
    - {path: touchpoints.call.reach.customer, low: 0.0, high: 0.8}
  replicates: 2
"""


def measure(storage: str | None, trials: int, out: Path, study: str) -> dict[str, float]:
    import sim
    from optimise import _workers, optimise

    spent = {"sim": 0.0, "calls": 0}
    real = _workers.kpis

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent["sim"] += time.perf_counter() - t0
            spent["calls"] += 1

    _workers.kpis = timed
    try:
        scenario = sim.load_scenario(SCENARIO)
        t0 = time.perf_counter()
        optimise(scenario, trials=trials, storage=storage, out=out, seed=1, top_k=1,
                 study_name=study)
        wall = time.perf_counter() - t0
    finally:
        _workers.kpis = real
    return {"wall_s": wall, "simulation_s": spent["sim"],
            "overhead_per_trial_ms": 1000 * (wall - spent["sim"]) / trials}


_cluster: dict[str, str] = {}


def _storage(label: str, tmp: Path, stack: contextlib.ExitStack) -> str | None:
    if label == "journal":
        return None
    if label == "sqlite":
        return f"sqlite:///{tmp}/study.db"
    if "url" not in _cluster:  # one cluster for all repeats, a study per repeat
        from tests.pgcluster import throwaway_cluster

        _cluster["url"] = stack.enter_context(throwaway_cluster())
    return _cluster["url"]



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import sim

    sim.run(sim.load_scenario(SCENARIO))  # load the kernels before timing
    report: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        for label in ("journal", "sqlite", "postgresql"):
            overheads = []
            for k in range(args.repeats):
                with tempfile.TemporaryDirectory() as tmp:
                    try:
                        storage = _storage(label, Path(tmp), stack)
                    except RuntimeError as exc:  # PostgreSQL unavailable
                        print(f"{label:10s} skipped: {exc}")
                        break
                    overheads.append(measure(storage, args.trials, Path(tmp), f"run{k}")
                                     ["overhead_per_trial_ms"])
            if not overheads:
                continue
            report[label] = {"overhead_per_trial_ms": statistics.median(overheads),
                             "runs_ms": overheads}
            print(f"{label:10s} {statistics.median(overheads):7.1f} ms per trial outside "
                  f"the simulation (runs: {', '.join(f'{o:.1f}' for o in overheads)}; "
                  f"{args.trials} trials)")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
