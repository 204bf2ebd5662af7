"""JIT flags of every numba kernel, in one place (STYLE.md point 4).

``cache=True`` stores compiled kernels beside the modules so a second process
starts in a fraction of a second; ``fastmath`` stays off because reordered
float arithmetic would break bit-for-bit reproducibility.
"""

from __future__ import annotations

import numba

__all__ = ["kernel", "parallel_kernel"]

kernel = numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy")
"""Serial kernel: a pure function over arrays."""

parallel_kernel = numba.njit(cache=True, nogil=True, fastmath=False, parallel=True,
                             error_model="numpy")
"""Parallel kernel: ``prange`` over fixed chunks of agents."""
