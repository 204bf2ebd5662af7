"""Throughput of the fast engine: agent-steps per second and memory per agent.

Runs the shipped cosmetic-clinic scenario ("full": touchpoints, satisfaction,
reviews and referrals) and a lean variant of it without feedbacks (no
satisfaction effects, reviews, referrals or contagion) at 1,000,000 agents ×
365 daily steps, with 1 and 2 numba threads. Each configuration runs in its
own process with an empty numba cache, so its JIT compile time and peak RSS
are its own. Also times the first and the second ``journey run`` (cold
compile, then numba's cache).

Usage::

    python benchmarks/throughput.py [--agents N] [--days D] [--repeats K] [--json]

With ``--json`` the last line is one JSON object
``{"lean": {...}, "full": {...}, "journey_run": {...}}``; each variant holds
``agent_steps_per_s`` (thread count -> median over repeats), ``peak_rss_bytes``,
``bytes_per_agent`` and ``compile_s``. Not a test: the machine is shared and
noisy, so compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "cosmetic_clinic.yaml"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _variant(kind: str, agents: int, days: int) -> Any:
    import sim

    s = sim.load_scenario(SCENARIO)
    overrides: dict[str, Any] = {"time.horizon_days": float(days), "time.step_days": 1.0,
                                 "population.arrivals.per_day": 0.0}
    for name, seg in s.segments.items():
        if seg.arrivals_per_day is not None:
            overrides[f"segments.{name}.arrivals_per_day"] = 0.0
    if kind == "lean":
        overrides.update({"satisfaction.effects": {}, "word_of_mouth": {}, "reviews": None,
                          "interventions": {}, "optimise": None})
    s = s.apply(overrides=overrides)
    initial = sum(p.count for p in s.population.initial)
    return s, agents / initial


def child(kind: str, agents: int, days: int, repeats: int) -> dict[str, Any]:
    """Measure one configuration in this process (threads from NUMBA_NUM_THREADS)."""
    import numba

    from sim.engines import fast
    from sim.engines.fast import simulate
    from sim.model import compile_scenario

    scenario, scale = _variant(kind, agents, days)
    tiny = compile_scenario(scenario, population_scale=1000 / agents * scale)
    # compile (or load) every kernel the big run uses, the parallel one included, before
    # the clock and the memory baseline start
    threshold, fast.PARALLEL_MIN_AGENTS = fast.PARALLEL_MIN_AGENTS, 0
    t0 = time.perf_counter()
    simulate(tiny, 1)
    compile_s = time.perf_counter() - t0
    fast.PARALLEL_MIN_AGENTS = threshold
    model = compile_scenario(scenario, population_scale=scale)
    base_rss = _rss_bytes()
    rates = []
    agent_steps = 0
    for k in range(repeats):
        t0 = time.perf_counter()
        raw = simulate(model, 1 + k)
        elapsed = time.perf_counter() - t0
        agent_steps = int(raw.occupancy[1:].sum())
        rates.append(agent_steps / elapsed)
        del raw
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"threads": numba.get_num_threads(), "agent_steps": agent_steps,
            "agents": int(raw_agents(model)), "rates": rates, "compile_s": compile_s,
            "peak_rss_bytes": peak, "bytes_per_agent": (peak - base_rss) / agents}


def raw_agents(model: Any) -> int:
    return sum(c for _, _, c in model.placements)


def _spawn(kind: str, threads: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_NUM_THREADS": str(threads), "NUMBA_CACHE_DIR": cache}
        out = subprocess.run(
            [sys.executable, __file__, "--child", kind, "--agents", str(args.agents),
             "--days", str(args.days), "--repeats", str(args.repeats)],
            env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _journey_run() -> dict[str, float]:
    """Wall time of `journey run` on a small population: cold cache, then warm."""
    times = []
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for _ in range(2):
            t0 = time.perf_counter()
            subprocess.run(["journey", "run", str(SCENARIO), "--population-scale", "0.01",
                            "--out", out, "--quiet"], env=env, check=True,
                           capture_output=True)
            times.append(time.perf_counter() - t0)
    return {"first_s": times[0], "second_s": times[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=["lean", "full"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.agents, args.days, args.repeats)))
        return

    report: dict[str, Any] = {}
    threads = [int(t) for t in args.threads.split(",")]
    print(f"{args.agents:,} agents × {args.days} daily steps, {args.repeats} repeats, "
          f"scenario {SCENARIO.name}")
    for kind in ("lean", "full"):
        entry: dict[str, Any] = {"agent_steps_per_s": {}}
        for t in threads:
            res = _spawn(kind, t, args)
            median = statistics.median(res["rates"])
            entry["agent_steps_per_s"][str(t)] = median
            entry.setdefault("compile_s", res["compile_s"])
            entry["peak_rss_bytes"] = max(entry.get("peak_rss_bytes", 0), res["peak_rss_bytes"])
            entry["bytes_per_agent"] = max(entry.get("bytes_per_agent", 0.0),
                                           res["bytes_per_agent"])
            print(f"  {kind:4s} {t} thread(s): {median / 1e6:6.1f} M agent-steps/s "
                  f"(runs: {', '.join(f'{r / 1e6:.1f}' for r in res['rates'])}); "
                  f"first call {res['compile_s']:.1f} s; peak RSS "
                  f"{res['peak_rss_bytes'] / 2**20:.0f} MiB; "
                  f"{res['bytes_per_agent']:.1f} bytes/agent")
        report[kind] = entry
    report["journey_run"] = _journey_run()
    print(f"  journey run (1% population): first call {report['journey_run']['first_s']:.1f} s "
          f"(cold compile), second {report['journey_run']['second_s']:.1f} s (cached)")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
