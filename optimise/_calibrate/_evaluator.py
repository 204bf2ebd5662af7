"""The loss of a parameter point: its scenario simulated on common random numbers, each
target's negative log-likelihood weighted and summed, plus the priors' — cached on disk.

Every evaluation runs the same seeds, so the loss is a deterministic function of
the parameters. Each new point's loss is appended to the cache file as it is
computed (``evaluations.jsonl``), so a resumed calibration replays the points it
has seen instead of simulating them again.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

import sim
from optimise._calibrate._likelihood import Counts, Target
from optimise._calibrate._space import Space
from sim import Scenario, SimError

__all__ = ["Evaluator"]

log = logging.getLogger(__name__)


class Evaluator:
    """The loss of a parameter point, on common random numbers, cached on disk.

    Attributes:
        cache: loss by point (:meth:`key`), read from and appended to ``cache_path``.
        runs: simulations run by this evaluator (cached points are not run again).
        best: the lowest loss seen and its point.
    """

    def __init__(self, scenario: Scenario, space: Space, targets: list[Target], seed: int,
                 replicates: int, population_scale: float, cache: Path | None,
                 first_replicate: int = 0) -> None:
        self.scenario, self.space, self.targets = scenario, space, targets
        # the evaluated points simulate the same without the study blocks, whose paths
        # would otherwise be checked again at every point
        self.points = scenario.apply(overrides={"calibrate": None, "optimise": None})
        self.seed, self.replicates, self.scale = seed, replicates, population_scale
        self.first_replicate = first_replicate
        """The seed set: replicates first_replicate .. first_replicate + R - 1 of ``seed``
        (another seed set for the Monte Carlo refits, whose points are cached apart)."""
        self.cache_path = cache
        self.cache: dict[str, float] = {}
        self.runs = 0
        if cache is not None and cache.exists():
            for line in cache.read_text().splitlines():
                try:
                    row = json.loads(line)
                    self.cache[row["key"]] = float(row["loss"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by an interruption
        self.best: tuple[float, dict[str, Any]] = (math.inf, {})

    def key(self, values: Mapping[str, Any]) -> str:
        """A point as the cache knows it (floats rounded to 12 places; the seed set
        when it is not the first)."""
        point: dict[str, Any] = {k: (round(v, 12) if isinstance(v, float) else v)
                                 for k, v in sorted(values.items())}
        if self.first_replicate:
            point = {"@first_replicate": self.first_replicate, **point}
        return json.dumps(point, sort_keys=True)

    def simulate(self, values: Mapping[str, Any]) -> list[np.ndarray]:
        """Each target's simulated values at ``values`` (from the engine's dense counts)."""
        variant = self.points.apply(overrides=dict(values))
        counts = sim.simulate(variant, seed=self.seed, replicates=self.replicates,
                              population_scale=self.scale,
                              first_replicate=self.first_replicate)
        self.runs += 1
        pooled = Counts(counts)
        return [t.simulated(pooled) for t in self.targets]

    def loss(self, values: Mapping[str, Any]) -> float:
        """The loss at ``values`` (inf where the point breaks a scenario rule)."""
        k = self.key(values)
        if k in self.cache:
            value = self.cache[k]
        else:
            try:
                sims = self.simulate(values)
            except SimError as exc:  # a combination of values that breaks a scenario rule
                log.debug("no evaluation at %s: %s", k, exc)
                value = math.inf
            else:
                value = sum(t.weight * t.nll(s) for t, s in zip(self.targets, sims,
                                                                 strict=True))
                value += self.space.prior_nll(values)
            self.cache[k] = value
            self._remember(k, value)
        if value < self.best[0]:
            self.best = (value, dict(values))
        return value if math.isfinite(value) else math.inf

    def _remember(self, key: str, value: float) -> None:
        if self.cache_path is None:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.cache_path, "a") as fh:
            fh.write(json.dumps({"key": key, "loss": value if math.isfinite(value)
                                 else None}) + "\n")
