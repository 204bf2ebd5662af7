"""Throughput of the fast engine: agent-steps per second and memory per agent.

Runs the shipped cosmetic-clinic scenario ("full": touchpoints, satisfaction,
reviews and referrals) and a lean variant of it without feedbacks (no
satisfaction effects, reviews, referrals or contagion) at 1,000,000 agents ×
365 daily steps, with 1 and 2 numba threads. Each configuration runs in its
own process with an empty numba cache, so its JIT compile time and peak RSS
are its own. Its bytes per agent are what one run adds to the memory, measured
in a second process whose kernels load from that cache (the compiler's transient
memory, its peak and the freed memory it leaves behind for a run to reuse, would
otherwise shift the figure either way). Beside each, in the same process, it times the *floor*: the
counter-based draws for every agent-step of the same population (one per
touchpoint active in the agent's stage, one for the exit, against the model's
cuts; as randomness scheme ``splitmix64-counter-v1`` drew them, the fixed
reference) and a one-byte stage update, nothing else; each configuration is
also given as a ratio to it. A *small* population (10,000 agents × 365 days, the
full scenario) shows the per-step overhead, as a ratio to the large run. Also
times the first and the later ``journey run``s (cold compile, then numba's
cache).

Usage::

    python benchmarks/throughput.py [--agents N] [--days D] [--repeats K] [--json]

With ``--json`` the last line is one JSON object
``{"lean": {...}, "full": {...}, "floor": {...}, "small": {...}, "journey_run":
{...}}``; lean and full hold ``agent_steps_per_s`` (thread count -> median over
repeats), ``ratio_to_floor`` (thread count -> median of the per-repeat ratios to
the floor timed beside it), ``peak_rss_bytes`` (the timing process's, its compile
included), ``bytes_per_agent`` (the run's high-water mark above the memory before
it, per agent, in the second process) and ``compile_s``; floor holds
``agent_steps_per_s``; small holds ``agent_steps_per_s`` and ``ratio_to_large`` (at
the largest thread count); journey_run ``first_s`` (the median of the runs on a cold
cache), ``cold_s`` (those runs), ``second_s`` (the median of the cached runs after them)
and ``warm_s`` (those runs). Not a test: the
machine is shared and noisy, so compare ratios within one run.
"""

from __future__ import annotations

import argparse
import functools
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

import numpy as np

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


@functools.cache
def _floor_kernel() -> Any:
    """The floor: per agent-step, counter-based draws (one per touchpoint active in the
    agent's stage, one for the exit) and a one-byte stage update.

    Written as the engine's kernel is: chunks in a ``prange``, unsigned indices (no
    wraparound checks), the engine's own ``mix64`` and 53-bit draws. The draws are
    those of randomness scheme ``splitmix64-counter-v1``, the fixed reference the
    targets are set against: a key of two finalisers and one finaliser per decision.
    The engine's scheme v2 takes the key in one finaliser and the exit draw from the
    key's own bits, so it may do fewer hash evaluations than the floor."""
    import numba

    from sim.engines._kernels import _GOLDEN, _ONE, _STEP_MUL, CHUNKS, _bits53, mix64

    exit_g = np.uint64(1) * _GOLDEN   # v1's exit stream

    @numba.njit(nogil=True, cache=False)
    def chunk(lo: int, hi: int, seed: np.uint64, step_key: np.uint64, stage: np.ndarray,
              act_start: np.ndarray, act_key: np.ndarray, reach_cut: np.ndarray,
              exit_start: np.ndarray, exit_to: np.ndarray, exit_cum: np.ndarray) -> int:
        count = 0
        for i in range(np.uint64(lo), np.uint64(hi)):
            key = mix64(mix64(seed + _GOLDEN * (i + _ONE)) ^ step_key)
            s = stage[i]
            for k in range(act_start[s], act_start[s + np.uint8(1)]):
                if _bits53(key, act_key[k]) < reach_cut[k]:
                    count += 1
            e0 = exit_start[s]
            e1 = exit_start[s + np.uint8(1)]
            if e1 > e0:
                bits = _bits53(key, exit_g)
                for e in range(e0, e1):
                    if bits < exit_cum[e]:
                        stage[i] = exit_to[e]
                        break
        return count

    @numba.njit(parallel=True, nogil=True, cache=False)
    def floor(n: int, steps: int, seed: np.uint64, stage: np.ndarray, act_start: np.ndarray,
              act_key: np.ndarray, reach_cut: np.ndarray, exit_start: np.ndarray,
              exit_to: np.ndarray, exit_cum: np.ndarray) -> np.ndarray:
        hits = np.zeros(CHUNKS, np.int64)
        size = (n + CHUNKS - 1) // CHUNKS
        for t in range(1, steps + 1):
            step_key = mix64(np.uint64(t) * _STEP_MUL + _GOLDEN)
            for c in numba.prange(CHUNKS):
                lo = min(n, c * size)
                hits[c] += chunk(lo, min(n, lo + size), seed, step_key, stage, act_start,
                                 act_key, reach_cut, exit_start, exit_to, exit_cum)
        return hits

    return floor


def _floor_inputs(model: Any) -> tuple[np.ndarray, ...]:
    """The floor's cuts from the compiled model (first regime, first segment)."""
    import numba

    from sim.engines._kernels import _GOLDEN, _cut53

    cut53 = numba.njit(lambda p: _cut53(p))  # an inner kernel: called from compiled code
    m = model.arrays
    act_key = (m.tp_stream[m.act_tp.astype(np.int64)] * _GOLDEN).astype(np.uint64)
    reach_cut = np.array([cut53(float(p)) for p in m.reach[0, 0]], dtype=np.uint64)
    exit_cum = np.zeros(m.base_p.shape[1], dtype=np.uint64)
    for s in range(m.exit_start.shape[0] - 1):
        total = 0.0
        for e in range(int(m.exit_start[s]), int(m.exit_start[s + 1])):
            total += float(m.base_p[0, e])
            exit_cum[e] = cut53(min(total, 1.0))
    return act_key, reach_cut, exit_cum


def _floor_rate(model: Any, seed: int) -> float:
    """Agent-steps per second of the floor on the model's initial population."""
    m = model.arrays
    stage = np.concatenate([np.full(c, si, np.uint8) for _, si, c in model.placements])
    act_key, reach_cut, exit_cum = _floor_inputs(model)
    floor = _floor_kernel()
    args = (m.act_start.astype(np.uint64), act_key, reach_cut, m.exit_start.astype(np.uint64),
            m.exit_to.astype(np.uint8), exit_cum)
    floor(16, 2, np.uint64(seed), stage[:16].copy(), *args)          # compile
    t0 = time.perf_counter()
    floor(stage.size, model.steps, np.uint64(seed), stage, *args)
    return stage.size * model.steps / (time.perf_counter() - t0)


def child(kind: str, agents: int, days: int, repeats: int) -> dict[str, Any]:
    """Measure one configuration in this process (threads from NUMBA_NUM_THREADS)."""
    import numba

    from sim.engines import _driver
    from sim.engines.fast import simulate
    from sim.model import compile_scenario

    scenario, scale = _variant("full" if kind == "small" else kind, agents, days)
    tiny = compile_scenario(scenario, population_scale=1000 / agents * scale)
    # compile (or load) every kernel the big run uses, the parallel one included, before
    # the clock and the memory baseline start
    threshold, _driver.PARALLEL_MIN_AGENTS = _driver.PARALLEL_MIN_AGENTS, 0
    t0 = time.perf_counter()
    simulate(tiny, 1)
    compile_s = time.perf_counter() - t0
    _driver.PARALLEL_MIN_AGENTS = threshold
    if kind != "small":
        _floor_rate(tiny, 1)   # compiles the floor: its compile is not the engine's memory
    model = compile_scenario(scenario, population_scale=scale)
    rates = []
    floors = []
    agent_steps = 0
    for k in range(repeats):
        t0 = time.perf_counter()
        raw = simulate(model, 1 + k)
        elapsed = time.perf_counter() - t0
        agent_steps = int(raw.occupancy[1:].sum())
        rates.append(agent_steps / elapsed)
        del raw
        if kind != "small":
            floors.append(_floor_rate(model, 1 + k))     # beside it, in the same conditions
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"threads": numba.get_num_threads(), "agent_steps": agent_steps,
            "agents": int(raw_agents(model)), "rates": rates, "floors": floors,
            "compile_s": compile_s, "peak_rss_bytes": peak}


def memory_child(kind: str, agents: int, days: int) -> dict[str, Any]:
    """The memory one run of a configuration adds, in a process of its own whose kernels
    load from the cache the timing child filled: the compiler's transient memory (its
    peak, and the freed memory it leaves in the process for a run to reuse) stays out.
    The peak is the kernel's high-water mark (``VmHWM``), reset once the run's inputs
    are built."""
    from sim.engines import _driver
    from sim.engines.fast import simulate
    from sim.model import compile_scenario

    scenario, scale = _variant(kind, agents, days)
    threshold, _driver.PARALLEL_MIN_AGENTS = _driver.PARALLEL_MIN_AGENTS, 0
    simulate(compile_scenario(scenario, population_scale=1000 / agents * scale), 1)
    _driver.PARALLEL_MIN_AGENTS = threshold
    model = compile_scenario(scenario, population_scale=scale)
    base_rss = _rss_bytes()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")          # the high-water mark restarts from the current RSS
    simulate(model, 1)
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    return {"bytes_per_agent": (hwm - base_rss) / agents, "run_peak_rss_bytes": hwm}


def raw_agents(model: Any) -> int:
    return sum(c for _, _, c in model.placements)


def _spawn(kind: str, threads: int, args: argparse.Namespace, agents: int | None = None
           ) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_NUM_THREADS": str(threads), "NUMBA_CACHE_DIR": cache}
        common = ["--agents", str(agents or args.agents), "--days", str(args.days)]
        out = subprocess.run(
            [sys.executable, __file__, "--child", kind, *common, "--repeats", str(args.repeats)],
            env=env, capture_output=True, text=True, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        if kind != "small":
            out = subprocess.run([sys.executable, __file__, "--memory", kind, *common],
                                 env=env, capture_output=True, text=True, check=True)
            res.update(json.loads(out.stdout.strip().splitlines()[-1]))
    return res


WARM_STARTS = 5
"""Cached `journey run`s timed after the cold ones; their median is ``second_s``."""

COLD_STARTS = 3
"""Cold `journey run`s, each on an empty cache of its own; their median is ``first_s``."""


def _journey_run() -> dict[str, Any]:
    """Wall time of `journey run` on a small population: cold cache, then cached.

    ``first_s`` is the median of :data:`COLD_STARTS` runs, each on an empty cache of its
    own (``cold_s`` lists them); ``second_s`` the median of the :data:`WARM_STARTS` runs
    after them, from the last one's cache (one process's start is too noisy to quote on
    a shared machine); ``warm_s`` lists them.
    """
    cold: list[float] = []
    warm: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        def once(cache: str) -> float:
            t0 = time.perf_counter()
            subprocess.run(["journey", "run", str(SCENARIO), "--population-scale", "0.01",
                            "--out", out, "--quiet"], env={**os.environ, "NUMBA_CACHE_DIR": cache},
                           check=True, capture_output=True)
            return time.perf_counter() - t0

        for k in range(COLD_STARTS):
            with tempfile.TemporaryDirectory() as cache:
                cold.append(once(cache))
                if k == COLD_STARTS - 1:
                    warm = [once(cache) for _ in range(WARM_STARTS)]
    return {"first_s": statistics.median(cold), "cold_s": cold,
            "second_s": statistics.median(warm), "warm_s": warm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--small", type=int, default=10_000, help="agents of the small run")
    parser.add_argument("--child", choices=["lean", "full", "small"], help=argparse.SUPPRESS)
    parser.add_argument("--memory", choices=["lean", "full"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.agents, args.days, args.repeats)))
        return
    if args.memory:
        print(json.dumps(memory_child(args.memory, args.agents, args.days)))
        return

    report: dict[str, Any] = {}
    threads = [int(t) for t in args.threads.split(",")]
    print(f"{args.agents:,} agents × {args.days} daily steps, {args.repeats} repeats, "
          f"scenario {SCENARIO.name}")
    floor: dict[str, float] = {}
    for kind in ("lean", "full"):
        entry: dict[str, Any] = {"agent_steps_per_s": {}, "ratio_to_floor": {}}
        for t in threads:
            res = _spawn(kind, t, args)
            median = statistics.median(res["rates"])
            entry["agent_steps_per_s"][str(t)] = median
            ratio = statistics.median(r / f for r, f in zip(res["rates"], res["floors"],
                                                             strict=True))
            entry["ratio_to_floor"][str(t)] = ratio
            floor[str(t)] = max(floor.get(str(t), 0.0), statistics.median(res["floors"]))
            entry.setdefault("compile_s", res["compile_s"])
            entry["peak_rss_bytes"] = max(entry.get("peak_rss_bytes", 0), res["peak_rss_bytes"])
            entry["bytes_per_agent"] = max(entry.get("bytes_per_agent", 0.0),
                                           res["bytes_per_agent"])
            print(f"  {kind:4s} {t} thread(s): {median / 1e6:6.1f} M agent-steps/s "
                  f"(runs: {', '.join(f'{r / 1e6:.1f}' for r in res['rates'])}); "
                  f"first call {res['compile_s']:.1f} s; peak RSS "
                  f"{res['peak_rss_bytes'] / 2**20:.0f} MiB; "
                  f"{res['bytes_per_agent']:.1f} bytes/agent; {ratio:.2f} of the floor "
                  f"({statistics.median(res['floors']) / 1e6:.1f} M/s)")
        report[kind] = entry
    report["floor"] = {"agent_steps_per_s": floor}
    top = str(max(threads))
    small = _spawn("small", max(threads), args, agents=args.small)
    small_rate = statistics.median(small["rates"])
    report["small"] = {"agents": args.small, "agent_steps_per_s": small_rate,
                       "ratio_to_large": small_rate / report["full"]["agent_steps_per_s"][top]}
    print(f"  small ({args.small:,} agents, full, {top} threads): {small_rate / 1e6:.1f} M "
          f"agent-steps/s, {report['small']['ratio_to_large']:.2f} of the large run")
    report["journey_run"] = _journey_run()
    runs = report["journey_run"]
    print(f"  journey run (1% population): first call {runs['first_s']:.1f} s (cold compile, "
          f"median of {COLD_STARTS}), then {runs['second_s']:.2f} s (cached, median of "
          f"{WARM_STARTS})")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
