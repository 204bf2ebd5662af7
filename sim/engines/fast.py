"""The fast engine: the driver's steps in a plain loop, agents in numba kernels.

:func:`simulate` runs one replicate of a compiled model and returns its raw
counts (:class:`~sim.engines.raw.RawRun`); metrics and tables are built from
those elsewhere. Each step is :class:`~sim.engines._driver.Driver`'s
``begin`` (the population-level feedbacks between steps: arrivals by segment
from the counter-based stream, referred prospects, the public rating,
contagion and the regime of open interventions), ``advance`` (the kernel over
every agent) and ``end`` (counts).
"""

from __future__ import annotations

from collections.abc import Callable

from sim.engines._driver import Driver
from sim.engines.raw import RawRun
from sim.model import CompiledModel

__all__ = ["PROGRESS_STEPS", "simulate"]

PROGRESS_STEPS = 16
"""With a progress callback, steps run in compiled blocks of this many between reports."""


def simulate(model: CompiledModel, seed: int, *, events: bool = False, exposures: bool = False,
             progress: Callable[[int], None] | None = None, parallel: bool = True) -> RawRun:
    """Run one replicate.

    Args:
        model: the compiled scenario.
        seed: the replicate's seed (0 <= seed < 2**64).
        events: also record one row per agent transition and entry.
        exposures: also record one row per touchpoint exposure (implies ``events``).
        progress: called with the number of steps done after each step; an
            exception it raises stops the run.
        parallel: allow the parallel kernel (for populations past
            :data:`~sim.engines._driver.PARALLEL_MIN_AGENTS`);
            results are the same either way.

    Returns:
        The raw counts of the run.

    Raises:
        SimError: the population would pass 2**31 - 1 agents.
    """
    run = Driver(model, seed, events=events, exposures=exposures, parallel=parallel)
    if run.events:  # events are gathered in Python after every step
        for t in range(1, model.steps + 1):
            r = run.begin(t)
            run.advance(t, r)
            run.end(t)
            if progress is not None:
                progress(t)
        return run.result()
    # compiled loops over blocks of steps: a progress report per block
    block = model.steps if progress is None else max(1, min(PROGRESS_STEPS, model.steps))
    for t0 in range(1, model.steps + 1, block):
        t1 = min(model.steps + 1, t0 + block)
        run.run(t0, t1)
        if progress is not None:
            progress(t1 - 1)
    return run.result()
