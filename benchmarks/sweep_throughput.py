"""Throughput of `journey sweep` on a local Dask cluster: tasks per minute, agent-steps/s.

Runs the same sweep (variants × replicates of the dental clinic at a reduced
population) into a fresh folder with 1 and with 2 worker processes, and prints
for each the wall time end to end (cluster start included), the cluster start
alone, tasks per minute and agent-steps per second over the whole sweep, and
the agent-steps per second of the same tasks run serially in this process
(``sim.run``, one thread) as the reference. Not a test: compare ratios within one
run; the machine is shared.

Usage::

    python benchmarks/sweep_throughput.py [--variants V] [--replicates R] [--scale X]
                                          [--repeats K] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _agent_steps(out: str) -> int:
    from sim.results import open_dataset

    kpis = open_dataset(out, "kpis").to_table(columns=["agents"])
    return int(sum(kpis.column("agents").to_pylist()))


def measure(workers: int, variants: int, replicates: int, scale: float) -> dict[str, float]:
    import optimise
    import sim

    scenario = sim.load_scenario(ROOT / "scenarios" / "dental_clinic.yaml")
    reach = [round(0.05 + 0.4 * i / max(1, variants - 1), 4) for i in range(variants)]
    grid = optimise.design({"touchpoints.search_ads.reach.discover": reach})
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        result = optimise.sweep(scenario, grid, replicates=replicates, out=out,
                                population_scale=scale, workers=workers)
        wall = time.perf_counter() - t0
        steps = _agent_steps(out) * scenario.steps
    start = result.connect_s
    tasks = result.ran
    return {"workers": workers, "tasks": tasks, "wall_s": wall, "cluster_start_s": start,
            "tasks_per_min": 60 * tasks / wall, "agent_steps_per_s": steps / wall,
            "agent_steps_per_s_after_start": steps / max(wall - start, 1e-9)}


def serial(variants: int, replicates: int, scale: float) -> float:
    import optimise
    import sim

    scenario = sim.load_scenario(ROOT / "scenarios" / "dental_clinic.yaml")
    reach = [round(0.05 + 0.4 * i / max(1, variants - 1), 4) for i in range(variants)]
    grid = optimise.design({"touchpoints.search_ads.reach.discover": reach})
    sim.run(grid[0].scenario(scenario), population_scale=scale, threads=1)  # compile / load
    t0 = time.perf_counter()
    steps = 0
    for v in grid:
        res = sim.run(v.scenario(scenario), replicates=replicates, population_scale=scale,
                      threads=1, variant=v.id)
        steps += int(sum(res.kpis.column("agents").to_pylist())) * scenario.steps
    return steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", type=int, default=6)
    parser.add_argument("--replicates", type=int, default=4)
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for workers in (1, 2):
        runs = [measure(workers, args.variants, args.replicates, args.scale)
                for _ in range(args.repeats)]
        row = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rows.append(row)
    reference = statistics.median(serial(args.variants, args.replicates, args.scale)
                                  for _ in range(args.repeats))
    if args.json:
        print(json.dumps({"sweeps": rows, "serial_agent_steps_per_s": reference}, indent=2))
        return
    print(f"{args.variants} variants x {args.replicates} replicates of dental_clinic at "
          f"population scale {args.scale}; medians of {args.repeats}")
    for r in rows:
        print(f"{int(r['workers'])} worker(s): {r['wall_s']:.1f} s end to end "
              f"(cluster start {r['cluster_start_s']:.1f} s), {r['tasks_per_min']:.0f} tasks/min, "
              f"{r['agent_steps_per_s'] / 1e6:.1f} M agent-steps/s "
              f"({r['agent_steps_per_s_after_start'] / 1e6:.1f} M after the start)")
    print(f"serial in one process, one thread: {reference / 1e6:.1f} M agent-steps/s")


if __name__ == "__main__":
    main()
