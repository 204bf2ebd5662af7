"""Output files of the optimisation layer, each written whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sim.results import write_file_atomic

__all__ = ["write_parquet_atomic"]


def write_parquet_atomic(path: Path, table: pa.Table) -> None:
    """Write a local Parquet file to ``path`` whole or not at all."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_file_atomic(path, sink.getvalue().to_pybytes())
