"""The raw counts of one replicate: what an engine returns and what :mod:`sim.metrics` reads.

Both engines fill the same :class:`RawRun` (through
:class:`~sim.engines._driver.Driver`); the event engine adds its queues.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.model import CompiledModel

__all__ = ["RawRun"]


@dataclass
class RawRun:
    """Raw counts of one replicate; index ``t`` is step t (0 = initial state).

    Shapes: T1 = steps + 1, G segments, S stages, T touchpoints, L = steps + 1 lags.
    """

    model: CompiledModel
    seed: int
    occupancy: np.ndarray      # int64[T1, G, S] at the end of each step
    sat_sum: np.ndarray        # float64[T1, G, S]
    flows: np.ndarray          # int64[T1, G, S, S]
    arrivals: np.ndarray       # int64[T1, G, S] entrants by entry stage (arrivals)
    referred: np.ndarray       # int64[T1, G, S] entrants by entry stage (referrals)
    exposures: np.ndarray      # int64[T1, G, T]
    acquired: np.ndarray       # int64[T1, G]
    reviews: np.ndarray        # int64[T1, 2] (count, score sum) posted in step t
    rating: np.ndarray         # float64[T1] public rating at the end of step t
    retained: np.ndarray       # int64[L]
    to_convert: np.ndarray     # int64[L]
    clv_total: float
    agents: int
    promoters: int
    detractors: int
    customers_at_end: int
    events: dict[str, np.ndarray] | None = field(default=None)
    queues: dict[str, np.ndarray] | None = field(default=None)
    """Event engine, capacity-limited touchpoints: per-step queue counts
    (``sim.engines.des.QUEUE_COLUMNS``) and one row per request (``requests``)."""
