"""Output files of the optimisation layer, each written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sim.results import write_file_atomic

__all__ = ["write_atomic", "write_dataset_file", "write_parquet_atomic"]


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all."""
    write_file_atomic(path, data)


def write_parquet_atomic(path: Path, table: pa.Table) -> None:
    """Write a Parquet file to ``path`` whole or not at all."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_file_atomic(path, sink.getvalue().to_pybytes())


def write_dataset_file(out: str | os.PathLike[str], relative: str, table: pa.Table) -> str:
    """Write ``out/relative`` (a local folder or a pyarrow filesystem URI) atomically.

    Returns:
        The final path on the dataset's filesystem.
    """
    from sim.results import _filesystem

    fs, base = _filesystem(out)
    final = f"{base}/{relative}"
    folder, leaf = final.rsplit("/", 1)
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/.{leaf}.tmp"
    pq.write_table(table, tmp, filesystem=fs)
    fs.move(tmp, final)
    return final
