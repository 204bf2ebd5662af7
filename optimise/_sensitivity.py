"""Global sensitivity analysis: SALib designs run as a sweep, Sobol or Morris indices.

Each row of the design is a variant of the scenario (the sampled value of
every parameter); the variants run as a sweep (on Dask, into the dataset, with
common random numbers across variants); each KPI's mean over replicates is the
model output that SALib analyses.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

import sim
from optimise._design import Variant
from optimise._sweep import SweepResult, mean_kpi, sweep
from sim import Scenario, SimError, kpi_names, unknown_name
from sim.results import sensitivity_path, write_dataset_table

__all__ = ["METHODS", "SensitivityResult", "parse_range", "sensitivity"]

METHODS = ("sobol", "morris")


@dataclass
class SensitivityResult:
    """Indices per KPI and parameter, with 95% confidence intervals."""

    method: str
    indices: pa.Table
    sweep: SweepResult
    path: str


def parse_range(spec: str) -> tuple[str, float, float]:
    """``PATH=LOW:HIGH`` -> (path, low, high)."""
    path, sep, rest = spec.partition("=")
    low_s, sep2, high_s = rest.partition(":")
    try:
        low, high = float(low_s), float(high_s)
    except ValueError:
        low = high = math.nan
    if not sep or not sep2 or not path.strip() or not (math.isfinite(low) and
                                                       math.isfinite(high)):
        raise SimError(f"--param {spec!r}: write PATH=LOW:HIGH (e.g. "
                       f"stages.use.exits.churned.p=0.001:0.01)")
    if high <= low:
        raise SimError(f"--param {spec!r}: HIGH must exceed LOW")
    return path.strip(), low, high


def _salib() -> tuple[Any, Any, Any, Any]:
    try:
        from SALib.analyze import morris as morris_analyze
        from SALib.analyze import sobol as sobol_analyze
        from SALib.sample import morris as morris_sample
        from SALib.sample import sobol as sobol_sample
    except ImportError:
        raise SimError("sensitivity analysis uses SALib and Dask: pip install "
                       "'journey-engine[distributed]'") from None
    return sobol_sample, sobol_analyze, morris_sample, morris_analyze


def sensitivity(scenario: Scenario | str | os.PathLike[str],
                params: Mapping[str, tuple[float, float]], *, method: str = "sobol",
                samples: int = 64, kpis: Sequence[str] | None = None, replicates: int = 1,
                out: str | os.PathLike[str] = "results", seed: int | None = None,
                population_scale: float = 1.0, workers: int | None = None,
                scheduler: str | None = None,
                progress: Callable[[int, int], None] | None = None) -> SensitivityResult:
    """Sobol (first-order and total) or Morris (μ*, σ) indices of KPIs over parameter ranges.

    Args:
        scenario: the base scenario (or its file).
        params: dotted path -> (low, high), sampled uniformly.
        method: ``sobol`` (Saltelli's design, ``samples`` × (D + 2) runs) or
            ``morris`` (``samples`` trajectories, × (D + 1) runs).
        samples: N of the design (a power of two for Sobol).
        kpis: KPIs to analyse (default: the scenario's optimise objective, else
            conversion and retention_365).
        replicates: replicates per design point (their mean is the output).

    Returns:
        The indices with 95% confidence intervals, also written as Parquet
        under ``out/sensitivity/scenario=NAME/<method>.parquet``.
    """
    if not isinstance(scenario, Scenario):
        scenario = sim.load_scenario(scenario)
    if method not in METHODS:
        raise SimError(f"unknown method {method!r}: use {' or '.join(METHODS)}")
    if len(params) < 2:
        raise SimError("sensitivity needs at least two --param ranges")
    if not isinstance(samples, int) or samples < 2:
        raise SimError(f"samples must be a whole number >= 2, not {samples!r}")
    if method == "sobol" and samples & (samples - 1):
        raise SimError(f"Sobol designs need samples as a power of two (e.g. 64), not {samples}")
    if kpis is None:
        kpis = [scenario.optimise.objective.kpi] if scenario.optimise else [
            "conversion", "retention_365"]
    known = kpi_names(scenario)
    unknown = [k for k in kpis if k not in known]
    if unknown:
        raise SimError(unknown_name("KPI", unknown[0], known))
    names = list(params)
    problem = {"num_vars": len(names), "names": names,
               "bounds": [list(params[n]) for n in names]}
    sobol_sample, _, morris_sample, _ = _salib()
    rng_seed = (scenario.seed if seed is None else int(seed)) % 2**32
    if method == "sobol":
        X = sobol_sample.sample(problem, samples, calc_second_order=False, seed=rng_seed)
    else:
        X = morris_sample.sample(problem, samples, num_levels=4, seed=rng_seed)
    variants = [Variant(f"{method[0]}{i:05d}", {n: float(x) for n, x in zip(names, row,
                                                                          strict=True)})
                for i, row in enumerate(X)]
    result = sweep(scenario, variants, replicates=replicates, out=out, seed=seed,
                   population_scale=population_scale, workers=workers, scheduler=scheduler,
                   progress=progress)
    cols = _indices(method, problem, X, kpis, result, [v.id for v in variants], rng_seed)
    table = pa.table(cols)
    final = write_dataset_table(out, sensitivity_path(scenario.name, method), table)
    return SensitivityResult(method=method, indices=table, sweep=result, path=final)


def _indices(method: str, problem: dict[str, Any], X: np.ndarray, kpis: Sequence[str],
             result: SweepResult, ids: list[str], rng_seed: int) -> dict[str, list[Any]]:
    """SALib's indices of each KPI's mean over the design's points, as table columns."""
    _, sobol_analyze, _, morris_analyze = _salib()
    names = problem["names"]
    cols: dict[str, list[Any]] = {"kpi": [], "parameter": [], "method": []}
    stats = (("s1", "S1"), ("s1_conf", "S1_conf"), ("st", "ST"), ("st_conf", "ST_conf")) \
        if method == "sobol" else (("mu_star", "mu_star"), ("mu_star_conf", "mu_star_conf"),
                                   ("sigma", "sigma"), ("mu", "mu"))
    for col, _ in stats:
        cols[col] = []
    for kpi in kpis:
        Y = mean_kpi(result.summary, kpi, ids)
        if np.isnan(Y).any():
            raise SimError(f"KPI {kpi} is undefined (NaN) in {int(np.isnan(Y).sum())} of "
                           f"{Y.size} design points; choose another --kpi")
        if method == "sobol":
            res = sobol_analyze.analyze(problem, Y, calc_second_order=False, conf_level=0.95,
                                        seed=rng_seed)
        else:
            res = morris_analyze.analyze(problem, X, Y, conf_level=0.95, num_levels=4,
                                         seed=rng_seed)
        for j, name in enumerate(names):
            cols["kpi"].append(kpi)
            cols["parameter"].append(name)
            cols["method"].append(method)
            for col, key in stats:
                cols[col].append(float(res[key][j]))
    return cols
