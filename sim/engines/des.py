"""The event engine: SimPy drives the clock; capacity-limited touchpoints are queues.

A replicate is a SimPy :class:`~simpy.Environment` whose time is in days. One
process, the clock, fires at every step boundary and runs the between-step
feedbacks and the agent-step kernel through the
:class:`~sim.engines._driver.Driver` that the fast engine loops over — the same
calls in the same order, so on a scenario without capacity limits the two
engines give identical outputs. All
agents take step t at the boundary t * step_days, in id order, as the fast
engine does; because agents are independent within a step, stepping them one
after another at the same instant is the same as one process per agent
waking at that instant (DESIGN.md, "One agent-step, two drivers").

What needs continuous time runs between the boundaries. A capacity-limited
touchpoint is a :class:`simpy.Resource` with ``capacity`` servers (a
:class:`simpy.PriorityResource` when it has opening hours). At the start of
step t each agent makes the exposure draw of every such touchpoint active in
its stage (:func:`~sim.engines._kernels.draw_requests`: the kernel's own draw);
an exposed agent becomes one process that requests the resource at a uniform
time within the step, waits — until served, until its patience runs out
(abandoned), or until it moves to a stage where the touchpoint is not active
(withdrawn) — and is served for its service time. The kernel gives it the
touchpoint's effects (lift, satisfaction, an exposure's cost) in the step its
service ends, and adds ``wait_satisfaction_per_day`` times the days waited to
its satisfaction in the step its wait ends.

Every draw is counter-based (seed, agent, step, stream), so runs are
reproducible and two designs (say, 3 or 4 consult slots) share their random
numbers. Outputs at the horizon: requests still waiting count in the last
step's queue length; services still running count in utilisation up to the
horizon and have no effect.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Generator, Iterator
from typing import Any

import numpy as np
import simpy

from sim._errors import SimError
from sim.engines._driver import Driver
from sim.engines._kernels import draw_requests
from sim.engines.raw import RawRun
from sim.model import MAX_QUEUES, CompiledModel, QueueSpec

__all__ = ["OUTCOMES", "QUEUE_COLUMNS", "closed_periods", "simulate"]

QUEUE_COLUMNS = ("arrivals", "served", "abandoned", "withdrawn", "queue_length", "in_service")
"""Per-step counts of each queue (int64[steps + 1, Q] in ``RawRun.queues``): requests
that arrived, started service, ran out of patience, left with their stage in the step;
requests waiting and being served at the end of the step."""

OUTCOMES = {"waiting": 0, "served": 1, "abandoned": 2, "withdrawn": 3}
"""How a request ended (``RawRun.queues["outcome"]``); ``waiting`` at the horizon."""


def closed_periods(spec: QueueSpec) -> Iterator[tuple[float, float]]:
    """The periods [start, end) in days when a touchpoint with opening hours is closed.

    Day d (counted from 0) is open when ``d % 7 < days_per_week``, from
    ``open_hour`` to ``close_hour``. Infinite: call lazily.
    """
    assert spec.open_hour is not None and spec.close_hour is not None
    start, end = spec.open_hour / 24.0, spec.close_hour / 24.0
    closed_from = 0.0
    for day in itertools.count():
        if day % 7 >= spec.days_per_week:
            continue
        if day + start > closed_from:
            yield closed_from, day + start
        closed_from = day + end


class _Queues:
    """The capacity-limited touchpoints of one replicate and their accounts."""

    def __init__(self, env: simpy.Environment, drv: Driver, model: CompiledModel) -> None:
        self.env = env
        self.drv = drv
        self.specs = model.queues
        self.sd = model.arrays.step_days
        T1, Q = model.steps + 1, len(model.queues)
        self.step = 1
        self.count = {name: np.zeros((T1, Q), np.int64) for name in QUEUE_COLUMNS}
        self.busy_days = np.zeros((T1, Q))
        self.busy = np.zeros(drv.capacity, np.uint64)   # queues each agent is busy with
        self.waiting: list[dict[int, tuple[simpy.Process, int]]] = [{} for _ in range(Q)]
        self.serving: list[dict[int, float]] = [{} for _ in range(Q)]
        self.req: dict[str, list[Any]] = {k: [] for k in
                                          ("queue", "agent", "step", "arrive", "start",
                                           "served_step", "outcome")}
        self.resources: list[simpy.Resource] = []
        for q, spec in enumerate(self.specs):
            hours = spec.open_hour is not None
            res = simpy.PriorityResource(env, spec.capacity) if hours else \
                simpy.Resource(env, spec.capacity)
            self.resources.append(res)
            if hours:
                env.process(self._closer(q))
        n_max = drv.capacity * max(1, Q)
        self.out = (np.zeros(n_max, np.int64), np.zeros(n_max, np.int64), np.zeros(n_max),
                    np.zeros(n_max), np.zeros(n_max))

    # ------------------------------------------------------------ processes

    def _closer(self, q: int) -> Generator[simpy.Event, Any, None]:
        """Hold every server of queue q while it is closed (a running service ends first)."""
        env, res, spec = self.env, self.resources[q], self.specs[q]
        for start, end in closed_periods(spec):
            if start > env.now:
                yield env.timeout(start - env.now)
            holds = [res.request(priority=0) for _ in range(spec.capacity)]  # type: ignore[call-arg]
            yield env.all_of(holds)
            if end > env.now:
                yield env.timeout(end - env.now)
            for hold in holds:
                res.release(hold)

    def request(self, i: int, q: int, at: float, service: float, patience: float) -> None:
        """Agent i wants queue q's touchpoint this step, ``at`` (a fraction) into it."""
        self.busy[i] |= np.uint64(1) << np.uint64(q)
        self.env.process(self._customer(i, q, at * self.sd, service, patience))

    def _customer(self, i: int, q: int, delay: float, service: float,
                  patience: float) -> Generator[simpy.Event, Any, None]:
        env, res, spec = self.env, self.resources[q], self.specs[q]
        yield env.timeout(delay)
        arrive = env.now
        self.count["arrivals"][self.step, q] += 1
        k = len(self.req["queue"])
        for name, value in (("queue", q), ("agent", i), ("step", self.step),
                            ("arrive", arrive), ("start", math.nan), ("served_step", -1),
                            ("outcome", 0)):
            self.req[name].append(value)
        proc = env.active_process
        assert proc is not None
        self.waiting[q][i] = (proc, k)
        kw = {"priority": 1} if spec.open_hour is not None else {}
        with res.request(**kw) as req:
            try:
                if math.isinf(patience):
                    yield req
                else:
                    got = yield req | env.timeout(patience)
                    if req not in got:
                        self._end_wait(i, q, k, "abandoned")
                        return
            except simpy.Interrupt:
                return  # withdrawn: accounted by the clock, the request is cancelled
            del self.waiting[q][i]
            self.req["start"][k] = env.now
            self.req["served_step"][k] = self.step
            self.req["outcome"][k] = OUTCOMES["served"]
            self.count["served"][self.step, q] += 1
            self._penalty(i, q, env.now - arrive)
            self.serving[q][i] = env.now
            yield env.timeout(service)
            start = self.serving[q].pop(i)
            self._add_busy(q, start, env.now)
            st = self.drv.st
            bit = np.uint64(1) << np.uint64(q)
            st.served[i] |= bit
            self.busy[i] &= ~bit

    def _penalty(self, i: int, q: int, waited: float) -> None:
        pen = self.specs[q].wait_sat_per_day
        if pen != 0.0 and waited > 0.0:
            self.drv.st.wait_sat[i] += pen * waited

    def _end_wait(self, i: int, q: int, k: int, outcome: str) -> None:
        """Agent i leaves queue q unserved (request record k)."""
        del self.waiting[q][i]
        self.req["outcome"][k] = OUTCOMES[outcome]
        self.count[outcome][self.step, q] += 1
        self._penalty(i, q, self.env.now - self.req["arrive"][k])
        self.busy[i] &= ~(np.uint64(1) << np.uint64(q))

    def _add_busy(self, q: int, a: float, b: float) -> None:
        """Add the service interval [a, b) days to the busy time of the steps it spans."""
        sd, last = self.sd, self.busy_days.shape[0] - 1
        while b > a:
            t = min(last, int(a // sd) + 1)
            edge = b if t == last else min(b, t * sd)
            self.busy_days[t, q] += edge - a
            a = edge

    # ------------------------------------------------------------ the clock's part

    def draw(self, t: int, r: int) -> None:
        """Draw step t's requests (at the start of the step) and start their processes."""
        drv = self.drv
        n = drv.n
        if self.busy.shape[0] < drv.capacity:
            grown = np.zeros(drv.capacity, np.uint64)
            grown[: self.busy.shape[0]] = self.busy
            self.busy = grown
            size = drv.capacity * max(1, len(self.specs))
            self.out = (np.zeros(size, np.int64), np.zeros(size, np.int64), np.zeros(size),
                        np.zeros(size), np.zeros(size))
        qa = drv.model.queue_arrays
        assert qa is not None
        agent, queue, at, service, patience = self.out
        k = draw_requests(n, t, r, drv.seed64, drv.model.arrays, qa, drv.st.stage, drv.st.seg,
                          self.busy, agent, queue, at, service, patience)
        for j in range(k):
            self.request(int(agent[j]), int(queue[j]), float(at[j]), float(service[j]),
                         float(patience[j]))

    def after_step(self, t: int) -> None:
        """After the kernel of step t: waiting agents that left the touchpoint's stages
        withdraw; the queue lengths at the end of the step are recorded."""
        stage = self.drv.st.stage
        for q, spec in enumerate(self.specs):
            for i, (proc, k) in list(self.waiting[q].items()):
                if not spec.active[int(stage[i])]:
                    self._end_wait(i, q, k, "withdrawn")
                    proc.interrupt("withdrawn")
            self.count["queue_length"][t, q] = len(self.waiting[q])
            self.count["in_service"][t, q] = len(self.serving[q])
        self.step = t + 1

    def finish(self, horizon: float) -> dict[str, np.ndarray]:
        """The queue accounts at the horizon (services still running count up to it)."""
        for q in range(len(self.specs)):
            for start in self.serving[q].values():
                self._add_busy(q, start, horizon)
        out: dict[str, np.ndarray] = {name: arr for name, arr in self.count.items()}
        out["busy_days"] = self.busy_days
        out["open_days"] = np.stack([_open_days(spec, self.sd, self.busy_days.shape[0] - 1)
                                     for spec in self.specs], axis=1)
        out["queue"] = np.asarray(self.req["queue"], np.int64)
        out["agent"] = np.asarray(self.req["agent"], np.int64)
        out["step"] = np.asarray(self.req["step"], np.int64)
        out["arrive"] = np.asarray(self.req["arrive"], np.float64)
        out["start"] = np.asarray(self.req["start"], np.float64)
        out["served_step"] = np.asarray(self.req["served_step"], np.int64)
        out["outcome"] = np.asarray(self.req["outcome"], np.int8)
        return out


def _open_days(spec: QueueSpec, sd: float, steps: int) -> np.ndarray:
    """Days the touchpoint is open in each step: float64[steps + 1] (row 0 empty)."""
    out = np.zeros(steps + 1)
    out[1:] = sd
    if spec.open_hour is None:
        return out
    horizon = steps * sd
    for a, b in closed_periods(spec):
        if a >= horizon:
            break
        b = min(b, horizon)
        t = int(a // sd) + 1
        while a < b and t <= steps:
            edge = min(b, t * sd)
            out[t] -= edge - a
            a, t = edge, t + 1
    return np.maximum(out, 0.0)


def _check(model: CompiledModel) -> None:
    if len(model.queues) > MAX_QUEUES:
        raise SimError(f"the scenario has {len(model.queues)} capacity-limited touchpoints; "
                       f"the event engine runs at most {MAX_QUEUES}")
    seen: dict[str, tuple[str, int]] = {}
    for r, settings in enumerate(model.queue_settings):
        for name, text in settings.items():
            before = seen.setdefault(name, (text, r))
            if before[0] != text:
                when = [", ".join(model.regimes[x]) or "none" for x in (before[1], r)]
                raise SimError(
                    f"touchpoint {name!r}: its capacity, service time, patience, opening or "
                    f"waiting settings change within the run (interventions active: "
                    f"{when[0]}, then {when[1]}); the event engine keeps a queue's settings "
                    f"for the whole run: give the intervention no window, or run the "
                    f"variants separately")


def simulate(model: CompiledModel, seed: int, *, events: bool = False, exposures: bool = False,
             progress: Callable[[int], None] | None = None, parallel: bool = True) -> RawRun:
    """Run one replicate on the event engine.

    Args:
        model: the compiled scenario.
        seed: the replicate's seed (0 <= seed < 2**64).
        events: also record one row per agent transition and entry.
        exposures: also record one row per touchpoint exposure (implies ``events``).
        progress: called with the number of steps done after each step; an
            exception it raises stops the run.
        parallel: allow the parallel kernel for large populations (results are
            the same either way).

    Returns:
        The raw counts of the run; with capacity-limited touchpoints also
        ``queues`` (:data:`QUEUE_COLUMNS` per step and queue, ``busy_days``
        (server-days spent serving), ``open_days`` (days open),
        and one entry per request: ``queue``, ``agent``, ``step`` (of the
        request), ``arrive`` and ``start`` (days; ``start`` NaN unless served),
        ``served_step`` (-1 unless served), ``outcome`` (:data:`OUTCOMES`)).

    Raises:
        SimError: a queue's settings change within the run, too many queues,
            or the population would pass 2**31 - 1 agents.

    Example:
        >>> import sim
        >>> from sim.engines import des
        >>> from sim.model import compile_scenario
        >>> path = "scenarios/cosmetic_clinic_capacity.yaml"
        >>> scenario = sim.load_scenario(path)  # doctest: +SKIP
        >>> raw = des.simulate(compile_scenario(scenario, 0.1), seed=1)  # doctest: +SKIP
        >>> raw.queues["served"].sum()  # doctest: +SKIP
    """
    _check(model)
    queued = bool(model.queues)
    drv = Driver(model, seed, events=events, exposures=exposures, parallel=parallel, queues=queued)
    env = simpy.Environment()
    queues = _Queues(env, drv, model) if queued else None
    sd = model.arrays.step_days

    def clock() -> Generator[simpy.Event, Any, None]:
        for t in range(1, model.steps + 1):
            r = drv.begin(t)
            if queues is not None:
                queues.draw(t, r)
            # a queue event at the very instant of the boundary (fixed durations, opening
            # hours) goes before it when it was scheduled earlier, after it otherwise
            # (SimPy's order); either way it is counted in the step the kernel sees it in
            yield env.timeout(t * sd - env.now)
            drv.advance(t, r)
            drv.end(t)
            if queues is not None:
                queues.after_step(t)
            if progress is not None:
                progress(t)

    env.run(until=env.process(clock()))
    raw = drv.result()
    if queues is not None:
        raw.queues = queues.finish(model.steps * sd)
    return raw
