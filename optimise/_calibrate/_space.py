"""The parameter space of a calibration: dotted-path parameters, their ranges and priors.

Continuous parameters (``float``, ``log``) live on unit coordinates for the
local refinement and the profiles; integer and choice parameters are fitted
by the global search only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from sim import Scenario

__all__ = ["Space", "current", "start_point"]


class Space:
    """Parameters ↔ points: continuous ones on unit coordinates, discrete ones fixed."""

    def __init__(self, params: Sequence[Any]) -> None:
        self.params = list(params)
        self.continuous = [i for i, p in enumerate(self.params)
                           if p.choices is None and p.type in ("float", "log")]

    def value(self, i: int, u: float) -> float:
        p = self.params[i]
        u = min(1.0, max(0.0, float(u)))
        if p.type == "log":
            return float(math.exp(math.log(p.low) + u * (math.log(p.high) - math.log(p.low))))
        return float(p.low + u * (p.high - p.low))

    def unit(self, i: int, value: float) -> float:
        p = self.params[i]
        if p.type == "log":
            return (math.log(value) - math.log(p.low)) / (math.log(p.high) - math.log(p.low))
        return (value - p.low) / (p.high - p.low)

    def with_units(self, base: dict[str, Any], units: Sequence[float] | np.ndarray,
                   which: Sequence[int] | None = None) -> dict[str, Any]:
        out = dict(base)
        for i, u in zip(self.continuous if which is None else which, units, strict=True):
            out[self.params[i].path] = self.value(i, u)
        return out

    def prior_nll(self, values: Mapping[str, Any]) -> float:
        total = 0.0
        for p in self.params:
            if p.prior is None:
                continue
            x = float(values[p.path])
            pr = p.prior
            if pr.distribution == "normal":
                lp = stats.norm.logpdf(x, pr.mean, pr.sd)
            elif pr.distribution == "lognormal":
                lp = stats.lognorm.logpdf(x, pr.sigma, scale=math.exp(pr.mu)) if x > 0 \
                    else -math.inf
            else:
                lp = stats.beta.logpdf(x, pr.a, pr.b)
            total -= float(lp)
        return total


def current(scenario: Scenario, path: str) -> Any:
    """The scenario's value at a dotted path, or None when it is not set."""
    node: Any = scenario.to_data()
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node if isinstance(node, (int, float, str, bool)) else None


def start_point(scenario: Scenario, space: Space) -> dict[str, Any] | None:
    """The scenario's own values of the parameters, when every one lies in its range
    (the search tries them first); None otherwise."""
    start = {}
    for p in space.params:
        value = current(scenario, p.path)
        ok = value is not None and (
            value in p.choices if p.choices is not None else p.low <= value <= p.high)
        if ok:
            start[p.path] = value
    return start if len(start) == len(space.params) else None
