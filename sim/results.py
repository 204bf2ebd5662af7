"""Parquet results: tables of a run and the dataset layout on disk.

A dataset is a folder (or any pyarrow filesystem URI) with one subfolder per
table, hive-partitioned by scenario, variant and replicate::

    results/kpis/scenario=dental_clinic/variant=base/replicate=0/part-<seed>.parquet

The partition columns live in the paths (readers add them to every row), the
seed in every row. Each file carries in its schema metadata the canonical
scenario text and hash, the seed, engine, RNG scheme and package version.
Files appear atomically (written under a hidden temporary name, then
renamed), and writing the same run key again replaces the file.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = ["TABLES", "RunKey", "is_complete", "open_dataset", "read_table", "run_metadata",
           "write_dataset_table", "write_file_atomic", "write_run_table"]

TABLES = ("occupancy", "flows", "kpis", "retention", "ledger", "events", "queues")
"""Tables a run writes (``events`` only on request; ``queues`` from the event engine
on a scenario with capacity-limited touchpoints)."""

PARTITIONING = ds.partitioning(pa.schema([("scenario", pa.string()), ("variant", pa.string()),
                                          ("replicate", pa.int32())]), flavor="hive")


@dataclass(frozen=True)
class RunKey:
    """What identifies one run: rerunning the same key replaces its files."""

    scenario: str
    variant: str
    replicate: int
    seed: int

    def columns(self, rows: int) -> dict[str, pa.Array]:
        """The run-key columns stored in each row (partition keys live in the path)."""
        return {"seed": pa.array(np.full(rows, self.seed, dtype=np.uint64))}


def run_metadata(*, scenario_yaml: str, scenario_hash: str, seed: int, base_seed: int,
                 replicate: int, engine: str, rng: str, version: str,
                 population_scale: float) -> dict[str, str]:
    """Schema metadata written into every file of a run."""
    return {
        "journey.scenario_yaml": scenario_yaml,
        "journey.scenario_hash": scenario_hash,
        "journey.seed": str(seed),
        "journey.base_seed": str(base_seed),
        "journey.replicate": str(replicate),
        "journey.engine": engine,
        "journey.rng": rng,
        "journey.version": version,
        "journey.population_scale": repr(population_scale),
    }


def with_keys(table: pa.Table, key: RunKey, metadata: Mapping[str, str]) -> pa.Table:
    """Prepend the run-key columns and attach the run's metadata."""
    cols = key.columns(table.num_rows)
    for i, (name, arr) in enumerate(cols.items()):
        table = table.add_column(i, name, arr)
    meta = dict(table.schema.metadata or {})
    meta.update({k.encode(): v.encode() for k, v in metadata.items()})
    return table.replace_schema_metadata(meta)


def _filesystem(root: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    text = os.fspath(root)
    if "://" in text:
        fs, path = pafs.FileSystem.from_uri(text)
        return fs, path
    return pafs.LocalFileSystem(), os.path.abspath(text)


def _relative(table: str, key: RunKey) -> str:
    return (f"{table}/scenario={key.scenario}/variant={key.variant}/"
            f"replicate={key.replicate}/part-{key.seed}.parquet")


def table_path(root: str | os.PathLike[str], table: str, key: RunKey) -> str:
    """Where ``table`` of run ``key`` lives under dataset ``root``."""
    _, base = _filesystem(root)
    return f"{base}/{_relative(table, key)}"


def is_complete(root: str | os.PathLike[str], key: RunKey, scenario_hash: str,
                names: Iterable[str], **expect: str) -> bool:
    """Whether every table of run ``key`` is stored, written for the scenario of that hash.

    The ``kpis`` file is written last, so its presence marks a finished run.
    ``expect`` names further metadata the run must have been written with
    (``engine="des"`` checks ``journey.engine``).
    """
    fs, _ = _filesystem(root)
    kpis = table_path(root, "kpis", key)
    paths = [kpis, *(table_path(root, n, key) for n in names)]
    if any(info.type != pafs.FileType.File for info in fs.get_file_info(paths)):
        return False
    meta = pq.read_schema(kpis, filesystem=fs).metadata or {}
    wanted = {"scenario_hash": scenario_hash, **expect}
    return all(meta.get(f"journey.{k}".encode(), b"").decode() == v for k, v in wanted.items())


def write_run_table(root: str | os.PathLike[str], name: str, table: pa.Table,
                    key: RunKey) -> str:
    """Write one table of one run atomically; returns the final path."""
    return write_dataset_table(root, _relative(name, key), table)


def write_dataset_table(root: str | os.PathLike[str], relative: str, table: pa.Table) -> str:
    """Write ``root/relative`` as Parquet, whole or not at all, on the dataset's filesystem.

    Args:
        root: a dataset folder or pyarrow filesystem URI.
        relative: the file's path below ``root`` (``/``-separated).

    Returns:
        The final path on the dataset's filesystem.
    """
    fs, base = _filesystem(root)
    final = f"{base}/{relative}"
    folder, leaf = final.rsplit("/", 1)
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/.{leaf}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(table, tmp, filesystem=fs, compression="zstd")
        fs.move(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.delete_file(tmp)
        raise
    return final


def write_file_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a local file whole or not at all: a unique hidden temporary beside it, renamed.

    Concurrent writers of the same file never see each other's half-written
    bytes; a failed write leaves no temporary behind.
    """
    final = os.fspath(path)
    folder, leaf = os.path.split(os.path.abspath(final))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{leaf}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def open_dataset(root: str | os.PathLike[str], table: str) -> ds.Dataset:
    """A pyarrow dataset over one table of a results folder (hive partitions)."""
    fs, base = _filesystem(root)
    return ds.dataset(f"{base}/{table}", format="parquet", filesystem=fs,
                      partitioning=PARTITIONING)


def read_table(root: str | os.PathLike[str], table: str, **filters: Any) -> pa.Table:
    """Read one table of a results folder, optionally filtered by equality on columns.

    Example:
        >>> read_table("results", "kpis", scenario="dental_clinic")  # doctest: +SKIP
    """
    dataset = open_dataset(root, table)
    expr = None
    for col, value in filters.items():
        term = ds.field(col) == value
        expr = term if expr is None else expr & term
    return dataset.to_table(filter=expr)
