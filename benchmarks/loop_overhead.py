"""The share of wall time an optimisation trial and a calibration spend outside the engine.

Runs, as ``journey optimise`` and ``journey calibrate`` run them, a short search on
shipped scenarios and times every per-replicate ``simulate`` call of the fast engine
(the wall time during which at least one replicate runs:
``optimise_overhead.KernelClock``). What remains of the wall time is everything the
loop does besides simulating: Optuna and its storage, applying and compiling the
trial's scenario, starting the replicates' threads, KPIs and likelihoods, the
evaluation cache. Each loop runs once first (not counted) so imports and the numba
cache load are not counted. Not a test: compare two versions of the code as ratios
within one session (``PYTHONPATH=<checkout>``).

Usage::

    python benchmarks/loop_overhead.py [--trials N] [--calibration-trials N]
        [--trial SCENARIO@SCALE ...] [--threads T] [--json]

Defaults: trials of the dental clinic at its shipped population (scale 1, ~8,000
agents, 4 replicates a trial) and of the cosmetic clinic at scale 0.1 (~4,000
agents); the calibration of ``scenarios/subscription_cohort.yaml`` as ``journey
calibrate`` runs it (its block's replicates, the population scale it chooses
itself, profile intervals) with fewer search trials and Monte Carlo refits, both as
a whole and its evaluations alone (``Evaluator.simulate``: the point applied,
simulated and read).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from optimise_overhead import KernelClock, clocked_kernel

ROOT = Path(__file__).resolve().parent.parent
TRIALS = ("dental_clinic.yaml@1", "cosmetic_clinic.yaml@0.1")
CALIBRATION = ROOT / "scenarios" / "subscription_cohort.yaml"


def _share(wall: float, kernel: float, loops: int, calls: int) -> dict[str, float]:
    return {"wall_s": wall, "kernel_s": kernel, "outside_share": (wall - kernel) / wall,
            "outside_ms_per_loop": 1000 * (wall - kernel) / loops, "loops": loops,
            "replicates_simulated": calls}


def trial_share(path: Path, scale: float, trials: int) -> dict[str, float]:
    """An optimisation's trials (and its re-evaluation of the best, as the command runs)."""
    import optimise

    with tempfile.TemporaryDirectory() as tmp:  # imports, kernels, sampler, storage
        optimise.optimise(path, trials=2, out=tmp, seed=1, top_k=1, population_scale=scale)
    with tempfile.TemporaryDirectory() as tmp, clocked_kernel() as clock:
        t0 = time.perf_counter()
        optimise.optimise(path, trials=trials, out=tmp, seed=1, top_k=1,
                          population_scale=scale)
        wall = time.perf_counter() - t0
    return _share(wall, clock.seconds, trials, clock.calls)


@contextlib.contextmanager
def clocked_evaluations(clock: KernelClock) -> Iterator[list[tuple[float, float]]]:
    """The wall time of every calibration evaluation that simulates (a new point's
    loss) and the kernel time within it (evaluations run one at a time)."""
    from optimise._calibrate._evaluator import Evaluator

    seconds: list[tuple[float, float]] = []
    real = Evaluator.simulate

    def timed(self: Any, values: Any) -> Any:
        t0, k0 = time.perf_counter(), clock.seconds
        try:
            return real(self, values)
        finally:
            seconds.append((time.perf_counter() - t0, clock.seconds - k0))

    Evaluator.simulate = timed  # type: ignore[method-assign]
    try:
        yield seconds
    finally:
        Evaluator.simulate = real  # type: ignore[method-assign]


def calibration_share(trials: int, mc_seeds: int) -> dict[str, Any]:
    """A calibration as the command runs it (search, refinement, profile intervals, Monte
    Carlo refits), and its evaluations alone (applying the point, simulating it, reading
    the targets' values from the counts)."""
    import optimise

    def once(tmp: str, n: int, k: int) -> Any:
        return optimise.calibrate(CALIBRATION, trials=n, mc_seeds=k, out=tmp)

    with tempfile.TemporaryDirectory() as tmp:
        once(tmp, 2, 0)
    with tempfile.TemporaryDirectory() as tmp, clocked_kernel() as clock, \
            clocked_evaluations(clock) as evaluations:
        t0 = time.perf_counter()
        result = once(tmp, trials, mc_seeds)
        wall = time.perf_counter() - t0
    out = _share(wall, clock.seconds, max(1, len(evaluations)), clock.calls)
    out["population_scale"] = float(result.population_scale)
    inside = sum(w for w, _ in evaluations)
    kernel = sum(k for _, k in evaluations)
    out["evaluation_outside_share"] = (inside - kernel) / inside
    out["evaluation_outside_ms"] = 1000 * (inside - kernel) / max(1, len(evaluations))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--calibration-trials", type=int, default=20)
    parser.add_argument("--mc-seeds", type=int, default=2,
                        help="the calibration's Monte Carlo refits (the command's default: 8)")
    parser.add_argument("--trial", action="append", default=None,
                        help="SCENARIO@SCALE under scenarios/ (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="numba threads")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import numba
    import optuna

    import optimise
    import sim

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.threads:
        numba.set_num_threads(args.threads)
    print(f"sim from {Path(sim.__file__).parent}, optimise from "
          f"{Path(optimise.__file__).parent}; {numba.get_num_threads()} numba threads")
    report: dict[str, Any] = {}
    for item in args.trial or TRIALS:
        name, _, scale = item.partition("@")
        got = trial_share(ROOT / "scenarios" / name, float(scale or 1), args.trials)
        report[f"trial:{item}"] = got
        print(f"trial {item:28s} {got['outside_share']:6.1%} of the wall time outside the "
              f"engine ({got['outside_ms_per_loop']:.0f} ms a trial; {got['wall_s']:.1f} s "
              f"for {args.trials} trials, {got['replicates_simulated']} replicates)")
    got = calibration_share(args.calibration_trials, args.mc_seeds)
    report["calibration"] = got
    print(f"calibration {CALIBRATION.name:22s} {got['outside_share']:6.1%} of the wall time "
          f"outside the engine ({got['wall_s']:.1f} s, {got['loops']} evaluations, "
          f"{got['replicates_simulated']} replicates at population scale "
          f"{got['population_scale']:g}); its evaluations alone "
          f"{got['evaluation_outside_share']:.1%} ({got['evaluation_outside_ms']:.1f} ms each)")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    sys.exit(main())
