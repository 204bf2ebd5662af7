"""Arrays from long tables (replicates along the first axis).

Intervals over replicates come from :mod:`sim.stats`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["cube"]


def cube(table: pa.Table, dims: Sequence[tuple[str, Sequence[object]]], value: str,
         replicates: Sequence[int]) -> np.ndarray:
    """Sum a long table's ``value`` into an array indexed by replicate and ``dims``.

    Args:
        table: rows with a ``replicate`` column, each of ``dims``' columns and ``value``.
        dims: (column, labels) pairs; rows whose label is not listed are dropped.
        value: the column to add up.
        replicates: replicate numbers, in the order of the first axis.

    Returns:
        ndarray(float, ndim=1 + len(dims)): zeros where no row falls.
    """
    shape = (len(replicates), *(len(labels) for _, labels in dims))
    out = np.zeros(shape, dtype=float)
    if table.num_rows == 0:
        return out
    idx = [_positions(table.column("replicate"), list(replicates))]
    idx.extend(_positions(table.column(col), list(labels)) for col, labels in dims)
    keep = np.all([i >= 0 for i in idx], axis=0)
    values = np.asarray(table.column(value).to_numpy(zero_copy_only=False), dtype=float)
    np.add.at(out, tuple(i[keep] for i in idx), values[keep])
    return out


def _positions(column: pa.ChunkedArray, labels: list[object]) -> np.ndarray:
    """Index of each value in ``labels`` (-1 where it is not one of them)."""
    value_set = pa.array(labels).cast(column.type)
    found = pc.index_in(column, value_set=value_set)
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
