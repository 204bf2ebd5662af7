"""Columns built from their buffers are the arrays ``pa.array`` builds from the same input."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from sim._arrow import column, labelled, table


def same(got: pa.Array, want: pa.Array) -> bool:
    """Same type, nulls and values (NaN equal to NaN; ``equals`` holds NaN unequal)."""
    got.validate(full=True)
    return (got.type == want.type and got.null_count == want.null_count
            and repr(got.to_pylist()) == repr(want.to_pylist()))


NUMPY_INPUTS = [
    np.arange(7, dtype=np.int64),
    np.arange(7, dtype=np.int32),
    np.arange(7, dtype=np.uint64) * np.uint64(2**61),
    np.array([0.5, np.nan, -np.inf, 1e300]),
    np.array([0.25, np.nan], dtype=np.float32),
    np.array([True, False, True, True, False, False, True, True, False]),
    np.arange(24, dtype=np.int64).reshape(4, 6)[:, ::2],  # not contiguous (raveled by the caller)
    np.arange(12.0)[::3],
    np.zeros(0, dtype=np.int64),
    np.zeros(0, dtype=bool),
]


@pytest.mark.parametrize("values", NUMPY_INPUTS, ids=lambda v: f"{v.dtype}-{v.shape}")
def test_numpy_columns_are_pa_array_s(values: np.ndarray) -> None:
    flat = values.ravel() if values.ndim > 1 else values
    got = column(flat)
    assert same(got, pa.array(flat))
    assert got.null_count == 0


@pytest.mark.parametrize(("values", "type"), [
    (np.arange(5, dtype=np.int64), pa.int32()),
    (np.arange(5, dtype=np.int32), pa.int64()),
    (np.array([1.0, 2.0]), pa.int64()),
    (np.arange(3, dtype=np.uint64), pa.uint64()),
])
def test_numpy_columns_of_a_given_type(values: np.ndarray, type: pa.DataType) -> None:
    got = column(values, type)
    assert got.type == type
    assert same(got, pa.array(values, type))


def test_a_conversion_that_changes_a_value_is_refused_as_pyarrow_refuses_it() -> None:
    values = np.array([1, 2**40], dtype=np.int64)
    with pytest.raises(pa.ArrowInvalid):
        pa.array(values, pa.int32())
    with pytest.raises(pa.ArrowInvalid):
        column(values, pa.int32())
    with pytest.raises(pa.ArrowInvalid):
        column(np.array([1.5]), pa.int64())


def test_dates() -> None:
    days = np.datetime64("2024-02-27", "D") + np.arange(5).astype("timedelta64[D]")
    got = column(days, pa.date32())
    assert same(got, pa.array(days, pa.date32()))
    assert got.to_pylist()[-1] == dt.date(2024, 3, 2)


SEQUENCES: list[Any] = [
    [1.5],
    [3],
    [True],
    [None],
    [],
    [float("nan")],
    [1, 2.5],
    [1, None, 3],
    [0.5, None],
    [True, None, False],
    [np.float64(0.25)],
    [np.int64(7)],
    [np.int32(7), np.int32(8)],
    [np.bool_(True)],
    ["a", None, "ünïcode", ""],
    np.array(["x", None, "yy"], dtype=object),
    np.full(3, None),
    [None, None],
    np.array(["a", "bb", "ç"]),
    np.array([], dtype=object),
]


@pytest.mark.parametrize("values", SEQUENCES, ids=repr)
def test_sequences_infer_pa_array_s_type(values: Any) -> None:
    assert same(column(values), pa.array(values))


@pytest.mark.parametrize("values", [["a", None], np.full(4, None), [], ["é"] * 3])
def test_strings_of_a_given_type(values: Any) -> None:
    assert same(column(values, pa.string()), pa.array(values, pa.string()))


def test_labelled_gathers_labels_by_code() -> None:
    labels = ["prospect", "ça", None, ""]
    rng = np.random.default_rng(3)
    codes = rng.integers(-1, len(labels), size=1000)
    got = labelled(labels, codes)
    assert same(got, pa.array(np.array(labels, dtype=object)[codes], pa.string()))
    assert got.null_count == int(np.isin(codes, (-2, 2)).sum())
    assert labelled(labels, np.zeros(0, dtype=np.int64)).equals(pa.array([], pa.string()))


def test_table_keeps_names_order_and_arrow_arrays() -> None:
    kept = pa.array([1, 2], pa.int16())
    got = table({"b": np.array([0.5, 1.0]), "a": ["x", "y"], "c": kept})
    assert got.column_names == ["b", "a", "c"]
    assert got.equals(pa.table({"b": np.array([0.5, 1.0]), "a": ["x", "y"], "c": kept}))
    assert got.schema.metadata is None
