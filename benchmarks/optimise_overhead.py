"""Time per optimisation trial spent outside the simulation (sampler, storage, bookkeeping).

Runs a study on a small scenario with each storage and subtracts the time spent in
simulations (measured around every call into the engine) from the wall time of the
search. Not a test: compare storages as ratios within one run.

Usage::

    python benchmarks/optimise_overhead.py [--trials N] [--json]

PostgreSQL is not measured here yet (see the optimisation issue).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

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


def measure(storage: str | None, trials: int, out: Path) -> dict[str, float]:
    import sim
    from optimise import _search, optimise

    spent = {"sim": 0.0, "calls": 0}
    real = _search._kpis

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent["sim"] += time.perf_counter() - t0
            spent["calls"] += 1

    _search._kpis = timed  # type: ignore[assignment]
    try:
        scenario = sim.load_scenario(SCENARIO)
        t0 = time.perf_counter()
        optimise(scenario, trials=trials, storage=storage, out=out, seed=1, top_k=1)
        wall = time.perf_counter() - t0
    finally:
        _search._kpis = real  # type: ignore[assignment]
    return {"wall_s": wall, "simulation_s": spent["sim"],
            "overhead_per_trial_ms": 1000 * (wall - spent["sim"]) / trials}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import sim

    sim.run(sim.load_scenario(SCENARIO))  # load the kernels before timing
    report: dict[str, Any] = {}
    for label in ("journal", "sqlite"):
        overheads = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                storage = None if label == "journal" else f"sqlite:///{tmp}/study.db"
                overheads.append(measure(storage, args.trials, Path(tmp))
                                 ["overhead_per_trial_ms"])
        report[label] = {"overhead_per_trial_ms": statistics.median(overheads),
                         "runs_ms": overheads}
        print(f"{label:8s} {statistics.median(overheads):7.1f} ms per trial outside the "
              f"simulation (runs: {', '.join(f'{o:.1f}' for o in overheads)}; "
              f"{args.trials} trials)")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
