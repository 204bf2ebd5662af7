"""Throughput of the event engine beside the fast engine: agent-steps per second.

Scenario: the shipped ``cosmetic_clinic_capacity.yaml`` scaled to N agents at
the start (arrivals scale with it). Three rows per population:

* ``fast``: the scenario with its queues removed (unlimited consults and
  surgeon), on the fast engine;
* ``des``: the same scenario on the event engine (the twin: identical
  outputs, so the difference is the SimPy clock's cost);
* ``des+queues``: the scenario as shipped, consult slots and surgeons scaled
  with the population (so the queues stay as loaded as at full scale), on the
  event engine: one SimPy process per request, waits, abandonment.

Each row: median over repeats after a warm-up run (kernels compiled or loaded
from numba's cache beforehand), one numba thread (the machine is shared; both
engines use the same kernel, so the ratio holds for more threads), and the
number of requests the queues handled. Not a test: compare ratios within a run.

Usage::

    python benchmarks/des_throughput.py [--agents 10000,100000] [--days 365] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "cosmetic_clinic_capacity.yaml"
QUEUE_FIELDS = ("capacity", "service_time", "patience", "opening", "wait_satisfaction_per_day",
                "target_wait_days", "server_cost_per_day")


def _scenarios(days: int) -> tuple[Any, Any]:
    """(the scenario with queues, the same without them), cut to ``days``."""
    import yaml

    import sim

    queued = sim.load_scenario(SCENARIO).apply(overrides={"time.horizon_days": float(days)})
    data = queued.to_data()
    data.pop("optimise", None)
    for tp in data["touchpoints"].values():
        for name in QUEUE_FIELDS:
            tp.pop(name, None)
    for iv in data["interventions"].values():
        iv["set"] = {k: v for k, v in iv["set"].items()
                     if not any(f".{n}" in k for n in QUEUE_FIELDS)}
    return queued, sim.load_scenario(yaml.safe_dump(data, sort_keys=False))


def _time(simulate: Any, model: Any, repeats: int) -> tuple[float, int, int]:
    """Median agent-steps/s over ``repeats`` runs, agent-steps of a run, requests."""
    rates, steps, requests = [], 0, 0
    for k in range(repeats):
        t0 = time.perf_counter()
        raw = simulate(model, 1 + k)
        elapsed = time.perf_counter() - t0
        steps = int(raw.occupancy[1:].sum())
        requests = 0 if raw.queues is None else int(raw.queues["arrivals"].sum())
        rates.append(steps / elapsed)
    return statistics.median(rates), steps, requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="10000,100000")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numba

    from sim.engines import des, fast
    from sim.model import compile_scenario

    queued, unlimited = _scenarios(args.days)
    initial = sum(p.count for p in queued.population.initial)
    print(f"{SCENARIO.name}, {args.days} daily steps, {numba.get_num_threads()} numba "
          f"thread(s), median of {args.repeats}")
    # warm-up: compile or load every kernel
    fast.simulate(compile_scenario(unlimited, 0.05), 0)
    des.simulate(compile_scenario(queued, 0.05), 0)
    for agents in (int(a) for a in args.agents.split(",")):
        scale = agents / initial
        slots = {f"touchpoints.{n}.capacity": max(1, round(tp.capacity * scale))
                 for n, tp in queued.touchpoints.items() if tp.queued}
        rows = [("fast", fast.simulate, compile_scenario(unlimited, scale)),
                ("des", des.simulate, compile_scenario(unlimited, scale)),
                ("des+queues", des.simulate,
                 compile_scenario(queued.apply(overrides=slots), scale))]
        base = 0.0
        for label, simulate, model in rows:
            rate, steps, requests = _time(simulate, model, args.repeats)
            base = base or rate
            servers = ", ".join(f"{k.split('.')[1]} {v}" for k, v in slots.items())
            extra = f"; {requests:,} requests, servers: {servers}" if requests else ""
            print(f"  {agents:>9,} agents  {label:<11s} {rate / 1e6:8.3f} M agent-steps/s "
                  f"({steps:,} agent-steps; {rate / base:6.3f} x fast){extra}")


if __name__ == "__main__":
    main()
