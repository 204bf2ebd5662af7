"""Counterfactual attribution: the journey run with touchpoints switched off, on common
random numbers.

A *coalition* is what is switched off: some touchpoints (nobody is exposed to them,
their costs are gone; :func:`sim.model.switch_off`) and some enabled interventions
(disabled). Every coalition runs the same replicates on the same seeds, and every
touchpoint draws from its own random stream, so two coalitions differ only by what
the switched-off things did: the paired difference of a KPI is their effect, with no
noise from anything else (a touchpoint that changes nothing gets exactly zero).

Each coalition's KPIs (per replicate, for all and per segment) and the costs of
every touchpoint and intervention are written to its own file as soon as it is
simulated (:class:`CoalitionStore`), so an interrupted attribution resumes where it
stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import sim
from sim import KPI_NAMES, Scenario, __version__
from sim.metrics import ledger
from sim.results import write_dataset_table

__all__ = ["ALL", "Coalition", "CoalitionStore", "Values", "evaluate"]

ALL = None
"""The segment of KPIs over every segment (null in the tables)."""

Values = dict[tuple[str | None, str], np.ndarray]
"""(segment, name) -> float64[R]: a coalition's KPIs per replicate (segment
:data:`ALL` for every KPI, each segment for :data:`sim.metrics.SEGMENT_KPIS` when
there are several), and under ``cost:<item>`` (segment :data:`ALL`) each
touchpoint's and intervention's cost."""


@dataclass(frozen=True)
class Coalition:
    """What a counterfactual run switches off."""

    touchpoints: tuple[str, ...] = ()
    interventions: tuple[str, ...] = ()

    @classmethod
    def of(cls, touchpoints: Iterable[str] = (), interventions: Iterable[str] = ()
           ) -> Coalition:
        return cls(tuple(sorted(touchpoints)), tuple(sorted(interventions)))

    @property
    def key(self) -> str:
        """A file name for the coalition (a hash of what it switches off)."""
        text = json.dumps([self.touchpoints, self.interventions])
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _values(counts: sim.RunCounts) -> Values:
    out: Values = {(ALL, name): counts.kpis[name] for name in KPI_NAMES}
    if len(counts.scenario.segments) > 1:
        for segment, kpis in counts.segment_kpis.items():
            for name, values in kpis.items():
                out[segment, name] = values
    items: dict[str, list[float]] = {}
    for raw in counts.raw:
        money = ledger(raw)
        spend = money["kind"] != "revenue"
        names = money["item"][spend]
        amounts = money["amount"][spend]
        for item in dict.fromkeys(names.tolist()):
            items.setdefault(item, []).append(float(amounts[names == item].sum()))
    for item, costs in items.items():
        out[ALL, f"cost:{item}"] = np.array(costs)
    return out


@dataclass
class CoalitionStore:
    """The simulated coalitions of one attribution, one Parquet file each under
    ``folder`` (None: kept in memory only).

    The files hold the identity of the runs (scenario, engine, scale, seed,
    replicates, RNG scheme, engine version); files of another identity are removed
    when the store opens, and :attr:`replaced` says how many.
    """

    folder: Path | None
    identity: dict[str, str]
    values: dict[Coalition, Values] = field(default_factory=dict)
    replaced: int = 0

    def __post_init__(self) -> None:
        if self.folder is None or not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("*.parquet")):
            try:
                table = pq.read_table(path)
            except Exception:  # a file that is not ours, or torn: simulate it again
                path.unlink(missing_ok=True)
                continue
            meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
            if json.loads(meta.get("journey.identity", "{}")) != self.identity:
                path.unlink(missing_ok=True)
                self.replaced += 1
                continue
            off = json.loads(meta["journey.coalition"])
            coalition = Coalition(tuple(off[0]), tuple(off[1]))
            self.values[coalition] = self._read(table)

    @staticmethod
    def _read(table: pa.Table) -> Values:
        reps = table.column("replicate").to_numpy()
        n = int(reps.max()) + 1
        out: Values = {}
        segments = table.column("segment").to_pylist()
        names = table.column("name").to_pylist()
        values = table.column("value").to_numpy()
        for i, (segment, name) in enumerate(zip(segments, names, strict=True)):
            out.setdefault((segment, name), np.full(n, math.nan))[reps[i]] = values[i]
        return out

    def put(self, coalition: Coalition, values: Values) -> None:
        self.values[coalition] = values
        if self.folder is None:
            return
        rows: dict[str, list[object]] = {"replicate": [], "segment": [], "name": [],
                                         "value": []}
        for (segment, name), arr in values.items():
            for r, v in enumerate(arr.tolist()):
                rows["replicate"].append(r)
                rows["segment"].append(segment)
                rows["name"].append(name)
                rows["value"].append(v)
        table = pa.table({"replicate": pa.array(rows["replicate"], pa.int32()),
                          "segment": pa.array(rows["segment"], pa.string()),
                          "name": pa.array(rows["name"], pa.string()),
                          "value": pa.array(rows["value"], pa.float64())})
        table = table.replace_schema_metadata({
            "journey.identity": json.dumps(self.identity, sort_keys=True),
            "journey.coalition": json.dumps([coalition.touchpoints, coalition.interventions]),
        })
        write_dataset_table(os.fspath(self.folder), f"{coalition.key}.parquet", table)


def identity(scenario: Scenario, *, engine: str, population_scale: float, seed: int,
             replicates: int) -> dict[str, str]:
    """What decides the numbers of an attribution's runs."""
    run_id, fields = sim.run_identity(scenario, engine=engine,
                                      population_scale=population_scale, base_seed=seed)
    return {**fields, "run_id": run_id, "replicates": str(replicates), "version": __version__}


def evaluate(scenario: Scenario, coalitions: Sequence[Coalition], store: CoalitionStore, *,
             seed: int, replicates: int, population_scale: float, engine: str,
             threads: int | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict[Coalition, Values]:
    """The values of every coalition: those in the store as they are, the others
    simulated (and stored one by one).

    Returns:
        coalition -> its values, for every coalition asked for.
    """
    wanted = list(dict.fromkeys(coalitions))
    todo = [c for c in wanted if c not in store.values]
    done = len(wanted) - len(todo)
    if progress is not None:
        progress(done, len(wanted))
    for coalition in todo:
        variant = scenario
        if coalition.interventions:
            variant = scenario.apply(overrides={f"interventions.{name}.enabled": False
                                                for name in coalition.interventions})
        counts = sim.simulate(variant, seed=seed, replicates=replicates,
                              population_scale=population_scale, engine=engine,
                              threads=threads, off=coalition.touchpoints)
        store.put(coalition, _values(counts))
        done += 1
        if progress is not None:
            progress(done, len(wanted))
    return {c: store.values[c] for c in wanted}
