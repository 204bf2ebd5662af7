"""Attribution with ground truth: what each touchpoint is worth.

:func:`attribute` answers "what is each touchpoint worth?" twice on one journey:

* from the *truth* the simulator knows — the journey run with each touchpoint (and
  each enabled intervention) switched off, on common random numbers (removal
  effects), and the Shapley values of the touchpoints (exact over every subset, or
  sampled over orders), per KPI and segment, with 95% confidence intervals and the
  cost per incremental unit;
* as the industry computes it from observed paths — Markov-chain removal effects
  (exact, from the absorbing chain), last touch and first touch — on the simulated
  customers' touchpoint sequences (the events table's exposure rows);

and sets them side by side, so the places where the data-driven answer misleads
show. :func:`attribute_paths` runs the path methods on a user's paths file, with no
scenario.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import sim
from optimise._attribute._counterfactual import (
    ALL,
    Coalition,
    CoalitionStore,
    Values,
    evaluate,
    identity,
)
from optimise._attribute._effects import (
    difference_bounds,
    exact_shapley,
    prefix_masks,
    sampled_orders,
    sampled_shapley,
    summarise_effect,
)
from optimise._attribute._paths import (
    PathSet,
    path_attribution,
    path_tables,
    paths_from_events,
    read_paths,
)
from sim import Scenario, SimError, kpi_names, load_scenario, unknown_name
from sim.metrics import SEGMENT_KPIS, kpi_bounds
from sim.model import compile_scenario
from sim.results import ATTRIBUTION_FILES, attribution_folder, write_files
from sim.stats import too_few

__all__ = ["DEFAULT_KPIS", "METHODS", "Attribution", "PathAttribution", "attribute",
           "attribute_paths"]

METHODS = ("removal", "shapley", "both")
DEFAULT_KPIS = ("acquired", "revenue", "retention_365", "clv")
EXACT_UP_TO = 10
"""Exact Shapley values up to this many touchpoints (2**10 = 1,024 coalitions); beyond,
sampled over orders."""
DEFAULT_ORDERS = 20
"""Orders of the players sampled by default (10 antithetic pairs)."""


@dataclass
class Attribution:
    """What :func:`attribute` found; every table is also written under ``folder``."""

    scenario: Scenario
    removal: pa.Table
    """Per touchpoint / intervention, KPI and segment: ``kind``, ``name``, ``kpi``,
    ``segment`` (null: every segment; per segment for the KPIs of
    :data:`sim.metrics.SEGMENT_KPIS` when the scenario has several), ``base``,
    ``without``, ``effect`` (base - without: what it adds),
    ``ci_low``, ``ci_high``, ``share`` (of the touchpoints' summed effects), ``cost``
    (its own cost in the base run), ``cost_per_unit`` (cost / effect),
    ``replicates``, ``few``."""
    shapley: pa.Table | None
    """Per touchpoint, KPI and segment: ``name``, ``kpi``, ``segment``, ``value``,
    ``ci_low``, ``ci_high``, ``share``, ``method`` (exact / sampled), ``orders``,
    ``total`` (v(all) - v(none), which the values add up to)."""
    paths: pa.Table
    """Markov (order ``order``), last-touch and first-touch attribution of the
    simulated prospects' paths: ``channel``, ``removal_effect``, ``share``,
    ``conversions``, ``last_touch``, ``first_touch`` (conversions for the full
    population of one run)."""
    path_counts: pa.Table
    """The simulated paths in ChannelAttribution's format (``path``,
    ``total_conversions``, ``total_null``; full population of one run)."""
    side_by_side: pa.Table
    """Per touchpoint, in acquired customers: the true removal effect with its CI, the
    Shapley value with its CI, and the Markov, last-touch and first-touch estimates."""
    summary: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None
    written: list[str] = field(default_factory=list)


@dataclass
class PathAttribution:
    """What :func:`attribute_paths` found."""

    table: pa.Table
    paths: PathSet
    conversion_probability: float
    written: list[str] = field(default_factory=list)


def _choose(kind: str, given: Sequence[str] | None, known: Sequence[str]) -> list[str]:
    if given is None:
        return list(known)
    out = []
    for name in given:
        if name not in known:
            raise SimError(unknown_name(kind, name, known))
        if name not in out:
            out.append(name)
    return out


def _metadata(table: pa.Table, meta: dict[str, str]) -> pa.Table:
    return table.replace_schema_metadata({f"journey.{k}": v for k, v in meta.items()})


def attribute(scenario: Scenario | str | os.PathLike[str], *,
              kpis: Sequence[str] | None = None, touchpoints: Sequence[str] | None = None,
              replicates: int = 4, population_scale: float = 1.0, method: str = "both",
              orders: int | None = None, exact_up_to: int = EXACT_UP_TO,
              engine: str = "fast", seed: int | None = None, order: int = 1,
              collapse: bool = False, out: str | os.PathLike[str] | None = None,
              name: str | None = None, threads: int | None = None,
              progress: Callable[[int, int], None] | None = None) -> Attribution:
    """What each touchpoint is worth: counterfactual truth and path-based estimates.

    Args:
        scenario: a :class:`~sim.Scenario`, or a path / YAML text to load.
        kpis: KPIs to attribute (default :data:`DEFAULT_KPIS`); the side-by-side table
            is always in acquired customers, the unit of the path methods.
        touchpoints: the touchpoints to attribute (default: all); the others stay on.
        replicates: replicates of every run (common seeds across runs).
        population_scale: the speed knob of :func:`sim.run`; KPIs are for the full
            population.
        method: ``removal``, ``shapley`` or ``both``.
        orders: sample the Shapley values over this many orders (rounded up to an even
            number: antithetic pairs); default: exact up to ``exact_up_to`` touchpoints,
            else :data:`DEFAULT_ORDERS` orders.
        exact_up_to: the most touchpoints for exact Shapley values (2**n coalitions).
        engine: ``fast`` or ``des``.
        seed: base seed (default: the scenario's).
        order: the Markov chain's order for the path methods.
        collapse: count repeated consecutive touchpoints of a path once.
        out: results root: the files go to ``OUT/attribute/<name>/``; the simulated
            coalitions are stored there as they finish, and a run of the same
            attribution resumes from them.
        name: the folder's name (default: the scenario's name).
        threads: numba threads.
        progress: called with (runs done, runs in all).

    Raises:
        SimError: an unknown KPI, touchpoint or method, or bad numbers.
    """
    started = time.perf_counter()
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    if method not in METHODS:
        raise SimError(f"method {method!r} is not one of {', '.join(METHODS)}")
    if replicates < 1:
        raise SimError("replicates must be at least 1")
    if order < 1:
        raise SimError("the Markov order must be at least 1")
    if orders is not None and orders < 2:
        raise SimError("orders must be at least 2 (one antithetic pair)")
    chosen_kpis = _choose("KPI", kpis if kpis is not None else DEFAULT_KPIS, kpi_names(scenario))
    players = _choose("touchpoint", touchpoints, list(scenario.touchpoints))
    if not players:
        raise SimError(f"{scenario.name} has no touchpoints to attribute")
    enabled = [n for n, iv in scenario.interventions.items() if iv.enabled]
    base_seed = int(scenario.seed if seed is None else seed)
    ident = identity(scenario, engine=engine, population_scale=population_scale,
                     seed=base_seed, replicates=replicates)
    folder = attribution_folder(out, name or scenario.name) if out is not None else None
    store = CoalitionStore(folder / ATTRIBUTION_FILES.coalitions if folder else None, ident)

    n = len(players)
    shapley_on = method in ("shapley", "both")
    exact = shapley_on and orders is None and n <= exact_up_to
    sample: list[np.ndarray] = []
    if shapley_on and not exact:
        pairs = max(1, math.ceil((orders or DEFAULT_ORDERS) / 2))
        sample = sampled_orders(n, pairs, np.random.default_rng([base_seed, n, pairs]))

    def off(mask: int) -> Coalition:
        return Coalition.of(p for i, p in enumerate(players) if not (mask >> i) & 1)

    full = (1 << n) - 1
    wanted: list[Coalition] = [Coalition()]
    wanted += [Coalition.of([p]) for p in players]
    wanted += [Coalition.of(interventions=[iv]) for iv in enabled]
    masks: list[int] = []
    if exact:
        masks = list(range(1 << n))
    elif sample:
        masks = sorted({m for o in sample for m in prefix_masks(o)})
    wanted += [off(m) for m in masks]
    wanted = list(dict.fromkeys(wanted))                  # each coalition once
    total_runs = len(wanted) + 1                          # + the run with exposure rows

    def step(done: int, _total: int) -> None:
        if progress is not None:
            progress(done, total_runs)

    reused = sum(c in store.values for c in wanted)
    values = evaluate(scenario, wanted, store, seed=base_seed, replicates=replicates,
                      population_scale=population_scale, engine=engine, threads=threads,
                      progress=step)
    bounds = kpi_bounds(compile_scenario(scenario, population_scale))
    base = values[Coalition()]
    segments = [ALL, *(scenario.segments if len(scenario.segments) > 1 else [])]

    def keys() -> list[tuple[str | None, str]]:
        return [(g, k) for k in chosen_kpis for g in segments
                if g is ALL or k in SEGMENT_KPIS]

    removal = _removal_table(players, enabled, values, base, keys(), bounds, replicates)
    shapley = None
    if shapley_on:
        value_of = {m: values[off(m)] for m in masks}
        shapley = _shapley_table(players, value_of, keys(), bounds, exact, sample, full)
    # the paths: the base run again with exposure rows, one replicate at a time (the
    # events of a large population are big), on the seeds every coalition ran
    kinds = {s: stage.kind for s, stage in scenario.stages.items()}
    counts: dict[tuple[str, ...], list[float]] = {}
    untouched_conv = untouched_null = 0.0
    weight = 1.0 / (replicates * population_scale)
    for r in range(replicates):
        one = sim.run(scenario, seed=base_seed, replicates=1, first_replicate=r,
                      population_scale=population_scale, engine=engine, exposures=True,
                      threads=threads)
        part, conv, null = paths_from_events(one.events, kinds, list(scenario.touchpoints),
                                             weight)
        del one
        for path, c, n in zip(part.paths, part.conversions, part.nulls, strict=True):
            got = counts.setdefault(path, [0.0, 0.0])
            got[0] += float(c)
            got[1] += float(n)
        untouched_conv += conv
        untouched_null += null
    step(total_runs, total_runs)
    path_set = PathSet.from_counts(counts)
    path_counts = path_set.table()
    paths = path_attribution(path_set, order, collapse, channels=list(scenario.touchpoints))
    side = _side_by_side(players, removal, shapley, paths)
    summary: dict[str, Any] = {
        "scenario": scenario.name, "identity": ident, "method": method,
        "touchpoints": players, "interventions": enabled, "kpis": chosen_kpis,
        "replicates": replicates, "population_scale": population_scale, "engine": engine,
        "shapley": None if not shapley_on else ("exact" if exact else "sampled"),
        "orders": len(sample) if sample else None,
        "coalitions": len(wanted), "reused_coalitions": reused,
        "replaced_coalitions": store.replaced,
        "markov_order": order, "collapse_repeats": collapse,
        "prospects_without_touchpoint": {"conversions": untouched_conv,
                                         "nulls": untouched_null},
        "seconds": round(time.perf_counter() - started, 3),
    }
    attribution = Attribution(scenario=scenario, removal=removal, shapley=shapley, paths=paths,
                              path_counts=path_counts, side_by_side=side,
                              summary=summary, folder=folder)
    if folder is not None:
        meta = {"scenario_hash": scenario.content_hash, "run_id": ident["run_id"],
                "population_scale": repr(float(population_scale)), "engine": engine,
                "base_seed": str(base_seed), "replicates": str(replicates),
                "version": ident["version"]}
        attribution.written = write_files(folder, {
            ATTRIBUTION_FILES.removal: _metadata(removal, meta),
            ATTRIBUTION_FILES.shapley: None if shapley is None else _metadata(shapley, meta),
            ATTRIBUTION_FILES.paths: _metadata(paths, meta),
            ATTRIBUTION_FILES.path_counts: _metadata(path_counts, meta),
            ATTRIBUTION_FILES.side_by_side: _metadata(side, meta),
            ATTRIBUTION_FILES.summary: (json.dumps(summary, indent=2) + "\n").encode(),
        })
    return attribution


def _removal_table(players: list[str], enabled: list[str], values: dict[Coalition, Values],
                   base: Values, keys: list[tuple[str | None, str]],
                   bounds: dict[str, tuple[float, float]], replicates: int) -> pa.Table:
    rows: list[dict[str, Any]] = []
    things = [("touchpoint", p, Coalition.of([p])) for p in players]
    things += [("intervention", iv, Coalition.of(interventions=[iv])) for iv in enabled]
    totals: dict[tuple[str | None, str], float] = {}
    for segment, kpi in keys:
        effects = [float(np.nanmean(base[segment, kpi] - values[Coalition.of([p])][segment, kpi]))
                   for p in players]
        totals[segment, kpi] = float(np.nansum(effects))
    for kind, name, coalition in things:
        cost_values = base.get((ALL, f"cost:{name}"))
        cost = float(np.mean(cost_values)) if cost_values is not None else 0.0
        for segment, kpi in keys:
            diff = base[segment, kpi] - values[coalition][segment, kpi]
            mean, low, high = summarise_effect(diff, difference_bounds(bounds[kpi]))
            total = totals[segment, kpi]
            rows.append({
                "kind": kind, "name": name, "kpi": kpi, "segment": segment,
                "base": float(np.nanmean(base[segment, kpi])),
                "without": float(np.nanmean(values[coalition][segment, kpi])),
                "effect": mean, "ci_low": low, "ci_high": high,
                "share": mean / total if kind == "touchpoint" and total else math.nan,
                "cost": cost if segment is ALL else math.nan,
                "cost_per_unit": cost / mean if segment is ALL and mean > 0 else math.nan,
                "replicates": replicates, "few": too_few(replicates),
            })
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("kind", pa.string()), ("name", pa.string()), ("kpi", pa.string()),
        ("segment", pa.string()), ("base", pa.float64()), ("without", pa.float64()),
        ("effect", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
        ("share", pa.float64()), ("cost", pa.float64()), ("cost_per_unit", pa.float64()),
        ("replicates", pa.int64()), ("few", pa.bool_())]))


def _shapley_table(players: list[str], value_of: dict[int, Values],
                   keys: list[tuple[str | None, str]], bounds: dict[str, tuple[float, float]],
                   exact: bool, sample: list[np.ndarray], full: int) -> pa.Table:
    rows: list[dict[str, Any]] = []
    for segment, kpi in keys:
        v = {m: vals[segment, kpi] for m, vals in value_of.items()}
        total = float(np.nanmean(v[full] - v[0]))
        diff_bounds = difference_bounds(bounds[kpi])
        if exact:
            matrix = np.stack([v[m] for m in range(len(v))])
            phi = exact_shapley(matrix)
            stats = [summarise_effect(phi[i], diff_bounds) for i in range(len(players))]
        else:
            mean, half, _ = sampled_shapley(v, sample)
            lo, hi = diff_bounds
            stats = [(float(mean[i]), float(max(lo, mean[i] - half[i])),
                      float(min(hi, mean[i] + half[i]))) for i in range(len(players))]
        for i, name in enumerate(players):
            value, low, high = stats[i]
            rows.append({"name": name, "kpi": kpi, "segment": segment, "value": value,
                         "ci_low": low, "ci_high": high,
                         "share": value / total if total else math.nan,
                         "method": "exact" if exact else "sampled",
                         "orders": None if exact else len(sample), "total": total})
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("name", pa.string()), ("kpi", pa.string()), ("segment", pa.string()),
        ("value", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
        ("share", pa.float64()), ("method", pa.string()), ("orders", pa.int64()),
        ("total", pa.float64())]))


def _side_by_side(players: list[str], removal: pa.Table, shapley: pa.Table | None,
                  paths: pa.Table) -> pa.Table:
    def pick(table: pa.Table | None, extra: dict[str, str]) -> dict[str, dict[str, Any]]:
        if table is None:
            return {}
        return {r["name"]: r for r in table.to_pylist()
                if r["kpi"] == "acquired" and r["segment"] is ALL
                and all(r.get(k) == v for k, v in extra.items())}

    true = pick(removal, {"kind": "touchpoint"})
    shap = pick(shapley, {})
    by_channel = {r["channel"]: r for r in paths.to_pylist()}
    rows = []
    for name in players:
        t, s, p = true.get(name, {}), shap.get(name, {}), by_channel.get(name, {})
        rows.append({
            "touchpoint": name,
            "removal_effect": t.get("effect", math.nan), "removal_low": t.get("ci_low", math.nan),
            "removal_high": t.get("ci_high", math.nan),
            "shapley": s.get("value", math.nan), "shapley_low": s.get("ci_low", math.nan),
            "shapley_high": s.get("ci_high", math.nan),
            "markov": p.get("conversions", 0.0), "markov_removal_effect":
                p.get("removal_effect", 0.0),
            "last_touch": p.get("last_touch", 0.0), "first_touch": p.get("first_touch", 0.0),
        })
    return pa.Table.from_pylist(rows, schema=pa.schema(
        [("touchpoint", pa.string())] + [(c, pa.float64()) for c in (
            "removal_effect", "removal_low", "removal_high", "shapley", "shapley_low",
            "shapley_high", "markov", "markov_removal_effect", "last_touch",
            "first_touch")]))


def attribute_paths(file: str | os.PathLike[str], *, order: int = 1, collapse: bool = False,
                    out: str | os.PathLike[str] | None = None,
                    name: str | None = None) -> PathAttribution:
    """Markov removal effects (exact), their shares and attributed conversions, with last-
    and first-touch conversions, of a user's paths file (no scenario needed).

    Args:
        file: CSV or Parquet with ``path`` (``a > b > c``), ``total_conversions`` and
            optionally ``total_null``.
        order: the Markov chain's order.
        collapse: count repeated consecutive channels once.
        out: results root: writes ``OUT/attribute/<name>/paths.parquet`` (default name:
            the file's stem).

    Raises:
        DataError: a bad paths file (one located line per problem).
        SimError: a bad order.
    """
    if order < 1:
        raise SimError("the Markov order must be at least 1")
    path_set = read_paths(file)
    table, probability = path_tables(path_set, order, collapse)
    result = PathAttribution(table=table, paths=path_set, conversion_probability=probability)
    if out is not None:
        folder = attribution_folder(out, name or Path(file).stem)
        meta = {"paths_file": os.fspath(file), "order": str(order),
                "collapse_repeats": str(collapse).lower()}
        result.written = write_files(folder, {ATTRIBUTION_FILES.paths: _metadata(table, meta)})
    return result
