"""Arrow columns built from their buffers, so that a run never imports pandas.

``pa.array`` and ``pa.scalar`` ask pyarrow's pandas shim whether their input is a
pandas object, and the shim imports pandas (when it is installed, with
``pyarrow.compute`` under it) the first time it is asked: about a quarter of a
second of every ``journey run``, for tables that hold nothing from pandas. The
columns here are laid out in Arrow's columnar format by NumPy and wrapped with
:meth:`pyarrow.Array.from_buffers`, which asks no such question. Each gives the
array ``pa.array`` gives for the same input — type, values, nulls — which
``tests/sim/test_arrow.py`` checks against ``pa.array`` itself; a NumPy array of
fixed-width numbers is wrapped without a copy, as ``pa.array`` wraps it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["column", "labelled", "table"]

_NUMPY = {pa.from_numpy_dtype(np.dtype(d)): np.dtype(d)
          for d in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                    "float32", "float64", "bool")}
"""NumPy's dtype of each fixed-width Arrow type these columns hold."""


def table(columns: Mapping[str, Any]) -> pa.Table:
    """``pa.table(columns)``, each column made by :func:`column` (Arrow arrays kept)."""
    return pa.table({name: column(values) for name, values in columns.items()})


def column(values: Any, type: pa.DataType | None = None) -> pa.Array:
    """``pa.array(values, type)`` for a NumPy array or a sequence of Python values.

    Args:
        values: a NumPy array of numbers, booleans or ``datetime64[D]`` (to
            ``date32``); or a sequence (list, object or ``str`` array) of strings
            and None, or of numbers, booleans and None (one column type, inferred
            as ``pa.array`` infers it unless ``type`` is given).
        type: the column's Arrow type, or None to infer it.
    """
    if isinstance(values, pa.Array):
        return values if type is None or values.type == type else values.cast(type)
    if isinstance(values, np.ndarray) and values.dtype.kind not in "OUS":
        return _numeric(values, type)
    items = values.tolist() if isinstance(values, np.ndarray) else list(values)
    if (type is not None and pa.types.is_string(type)) or (
            type is None and any(isinstance(v, str) for v in items)):
        return labelled(items, np.arange(len(items)))
    return _scalars(items, type)


def labelled(labels: Sequence[str | None], codes: np.ndarray) -> pa.Array:
    """The string column ``labels[codes]`` (a None label gives a null).

    Args:
        labels: the distinct values.
        codes: ndarray(int): an index into ``labels`` per row (negative from the
            end, as NumPy indexes).
    """
    labels = list(labels)
    codes = np.asarray(codes, dtype=np.int64).ravel()
    encoded = [b"" if label is None else label.encode() for label in labels]
    sizes = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    starts = np.zeros(len(encoded), dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    pool = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    each = sizes[codes]
    offsets = np.zeros(codes.size + 1, dtype=np.int64)
    np.cumsum(each, out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise ValueError("a string column of 2 GiB or more needs pa.large_string()")
    # byte j of row i is pool[starts[code_i] + j]: each row's bytes are a run of the pool
    data = pool[np.arange(offsets[-1]) + np.repeat(starts[codes] - offsets[:-1], each)]
    missing = np.fromiter((label is None for label in labels), dtype=bool,
                          count=len(labels))[codes] if None in labels else None
    return pa.Array.from_buffers(pa.string(), codes.size, [
        _validity(missing), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)])


def _numeric(values: np.ndarray, type: pa.DataType | None) -> pa.Array:
    if values.dtype.kind == "M":
        if (type is not None and type != pa.date32()) or values.dtype != "datetime64[D]":
            raise TypeError(f"no column of {type} from {values.dtype} here")
        if np.isnat(values).any():
            raise ValueError("a date column without NaT (nulls) here")
        days = values.view(np.int64)
        return _wrap(pa.date32(), _exact(days, np.dtype(np.int32)))
    arrow = pa.from_numpy_dtype(values.dtype) if type is None else type
    if arrow not in _NUMPY:
        raise TypeError(f"no column of {arrow} from {values.dtype} here")
    return _wrap(arrow, _exact(values, _NUMPY[arrow]))


def _exact(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` as ``dtype``, refusing a conversion that changes a value (a safe cast)."""
    if values.dtype == dtype:
        return values
    out = values.astype(dtype)
    if not np.array_equal(out, values, equal_nan=values.dtype.kind == "f"):
        raise pa.ArrowInvalid(f"{values.dtype} values do not fit {dtype}")
    return out


def _wrap(arrow: pa.DataType, values: np.ndarray) -> pa.Array:
    values = np.ascontiguousarray(values.ravel())
    if values.dtype == np.bool_:
        data = pa.py_buffer(np.packbits(values, bitorder="little"))
    else:
        data = pa.py_buffer(values)
    return pa.Array.from_buffers(arrow, values.size, [None, data])


def _validity(missing: np.ndarray | None) -> pa.Buffer | None:
    """Arrow's validity bitmap (bit set = a value), or None when nothing is missing."""
    if missing is None or not missing.any():
        return None
    return pa.py_buffer(np.packbits(~missing, bitorder="little"))


def _scalars(items: list[Any], type: pa.DataType | None) -> pa.Array:
    missing = np.fromiter((v is None for v in items), dtype=bool, count=len(items))
    present = [v for v in items if v is not None]
    if type is None:
        if not present:
            return pa.nulls(len(items))
        type = _infer(present)
    if type == pa.null():
        return pa.nulls(len(items))
    if type not in _NUMPY:
        raise TypeError(f"no column of {type} from Python values here")
    dtype = _NUMPY[type]
    values = np.zeros(len(items), dtype=dtype)
    values[~missing] = _exact(np.asarray(present), dtype) if present else []
    arr = _wrap(type, values)
    if not missing.any():
        return arr
    return pa.Array.from_buffers(type, len(items), [_validity(missing), arr.buffers()[1]])


def _infer(present: list[Any]) -> pa.DataType:
    """The type ``pa.array`` infers for non-null Python numbers and booleans."""
    if all(isinstance(v, (bool, np.bool_)) for v in present):
        return pa.bool_()
    if any(isinstance(v, (bool, np.bool_)) for v in present):
        raise TypeError("booleans mixed with numbers")
    kinds = {type(v) for v in present}
    if len(kinds) == 1 and issubclass(next(iter(kinds)), np.generic):
        return pa.from_numpy_dtype(np.asarray(present).dtype)
    if all(isinstance(v, (int, np.integer)) for v in present):
        return pa.int64()
    if all(isinstance(v, (int, float, np.integer, np.floating)) for v in present):
        return pa.float64()
    raise TypeError(f"no column inferred from {sorted(k.__name__ for k in kinds)}")
