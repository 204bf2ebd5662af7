"""Throughput of `journey attribute` on the cosmetic clinic: runs per second, total time.

Attributes the shipped cosmetic clinic's touchpoints three ways, each into a fresh
folder: removal effects only (one run with everything on, one per touchpoint),
exact Shapley values over every subset of the first ``--shapley-touchpoints``
touchpoints (2^n runs; 13, all of them, by default: 8,192 runs), and Shapley values
sampled over ``--orders`` orders of all of them. Each run simulates ``--replicates``
replicates at ``--scale`` of the population; the path methods add one run with
exposure rows. Prints for each the runs, the wall time, runs per second,
agent-steps per second over the runs and the peak resident memory of this
process. Not a test: the machine is shared, so compare within one run.

Usage::

    python benchmarks/attribute_throughput.py [--scale X] [--replicates R]
                                              [--shapley-touchpoints N] [--orders M] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(label: str, **kwargs: Any) -> dict[str, Any]:
    import optimise
    import sim

    scenario = sim.load_scenario(ROOT / "scenarios" / "cosmetic_clinic.yaml")
    probe = sim.simulate(scenario, replicates=1, population_scale=kwargs["population_scale"])
    agent_steps_per_run = float(probe.kpis["agents"][0]) * scenario.steps * kwargs["replicates"]
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        worth = optimise.attribute(scenario, out=out, **kwargs)
        wall = time.perf_counter() - t0
    runs = worth.summary["coalitions"] + 1
    return {"method": label, "touchpoints": len(worth.summary["touchpoints"]),
            "shapley": worth.summary["shapley"], "runs": runs,
            "replicates": kwargs["replicates"], "scale": kwargs["population_scale"],
            "wall_s": round(wall, 2), "runs_per_s": round(runs / wall, 2),
            "agent_steps_per_s": round(runs * agent_steps_per_run / wall),
            "peak_rss_mib": round(peak_rss_mib(), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--replicates", type=int, default=2)
    parser.add_argument("--shapley-touchpoints", type=int, default=13)
    parser.add_argument("--orders", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import sim

    scenario = sim.load_scenario(ROOT / "scenarios" / "cosmetic_clinic.yaml")
    touchpoints = list(scenario.touchpoints)
    sim.simulate(scenario, population_scale=args.scale)          # compile outside the timing
    common = {"replicates": args.replicates, "population_scale": args.scale,
              "kpis": ["acquired", "revenue"]}
    rows = [
        measure("removal", method="removal", **common),
        measure("shapley exact", method="shapley",
                touchpoints=touchpoints[:args.shapley_touchpoints],
                exact_up_to=args.shapley_touchpoints, **common),
        measure("shapley sampled", method="shapley", orders=args.orders, **common),
    ]
    if args.json:
        print(json.dumps({"attribute": rows}, indent=2))
        return
    print(f"cosmetic clinic, {len(touchpoints)} touchpoints, population scale {args.scale}, "
          f"{args.replicates} replicates per run")
    head = f"{'method':<16}{'tps':>4}{'runs':>7}{'wall s':>9}{'runs/s':>8}" \
           f"{'agent-steps/s':>15}{'peak MiB':>10}"
    print(head)
    for r in rows:
        print(f"{r['method']:<16}{r['touchpoints']:>4}{r['runs']:>7}{r['wall_s']:>9.1f}"
              f"{r['runs_per_s']:>8.2f}{r['agent_steps_per_s']:>15,.0f}{r['peak_rss_mib']:>10.0f}")


if __name__ == "__main__":
    main()
