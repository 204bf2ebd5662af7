"""Time per optimisation trial spent outside the kernel (sampler, storage, tables, bookkeeping).

Runs a study on a small scenario with each storage and subtracts the time spent in
the engine's kernel (measured around every per-replicate ``simulate`` call of the fast
engine, as the wall time during which at least one replicate runs) from the wall time
of the whole search, and divides by the trials. What remains is everything a trial
costs besides simulating: Optuna, the storage, compiling and patching the scenario,
tables and KPIs. Not a test: compare storages, or two versions of the code, as ratios
within one session.

Usage::

    python benchmarks/optimise_overhead.py [--trials N] [--repeats K] [--storages S,...] [--json]

To compare two versions, run this same file against each (``PYTHONPATH=<checkout>``)
in one session.

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
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # tests.pgcluster; sim and optimise as installed or on PYTHONPATH

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


class KernelClock:
    """Wall time during which at least one replicate is inside the engine's ``simulate``.

    Replicates may run side by side on threads; the clock counts the time any of them
    runs once, so ``wall - kernel`` is the time nothing was simulating.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._active = 0
        self._since = 0.0
        self._lock = threading.Lock()

    def wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                if self._active == 0:
                    self._since = time.perf_counter()
                self._active += 1
                self.calls += 1
            try:
                return real(*args, **kwargs)
            finally:
                with self._lock:
                    self._active -= 1
                    if self._active == 0:
                        self.seconds += time.perf_counter() - self._since

        return timed


@contextlib.contextmanager
def clocked_kernel() -> Iterator[KernelClock]:
    """Time every call of the fast engine's per-replicate ``simulate``.

    ``sim.api`` looks the engine's function up on its module at each replicate, so
    the probe replaces it there.
    """
    import sim.engines.fast as fast

    clock = KernelClock()
    real = fast.simulate
    fast.simulate = clock.wrap(real)  # type: ignore[assignment]
    try:
        yield clock
    finally:
        fast.simulate = real  # type: ignore[assignment]


def measure(storage: str | None, trials: int, out: Path, study: str) -> dict[str, float]:
    import optimise
    import sim

    scenario = sim.load_scenario(SCENARIO)
    with clocked_kernel() as clock:
        t0 = time.perf_counter()
        optimise.optimise(scenario, trials=trials, storage=storage, out=out, seed=1, top_k=1,
                          study_name=study)
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "kernel_s": clock.seconds, "kernel_calls": clock.calls,
            "overhead_per_trial_ms": 1000 * (wall - clock.seconds) / trials}


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
    parser.add_argument("--storages", default="journal,sqlite,postgresql",
                        help="comma-separated: journal, sqlite, postgresql")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import optuna

    import optimise
    import sim

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"sim from {Path(sim.__file__).parent}, optimise from "
          f"{Path(optimise.__file__).parent}")
    sim.run(sim.load_scenario(SCENARIO))  # load the kernels before timing
    with tempfile.TemporaryDirectory() as tmp:  # and the sampler, storage and study code
        measure(None, 3, Path(tmp), "warm-up")
    report: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        for label in args.storages.split(","):
            overheads, kernel = [], []
            for k in range(args.repeats):
                with tempfile.TemporaryDirectory() as tmp:
                    try:
                        storage = _storage(label, Path(tmp), stack)
                    except RuntimeError as exc:  # PostgreSQL unavailable
                        print(f"{label:10s} skipped: {exc}")
                        break
                    got = measure(storage, args.trials, Path(tmp), f"run{k}")
                    overheads.append(got["overhead_per_trial_ms"])
                    kernel.append(1000 * got["kernel_s"] / args.trials)
            if not overheads:
                continue
            report[label] = {"overhead_per_trial_ms": statistics.median(overheads),
                             "runs_ms": overheads,
                             "kernel_per_trial_ms": statistics.median(kernel)}
            print(f"{label:10s} {statistics.median(overheads):7.1f} ms per trial outside "
                  f"the kernel (runs: {', '.join(f'{o:.1f}' for o in overheads)}; "
                  f"{args.trials} trials; kernel {statistics.median(kernel):.1f} ms per trial)")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
