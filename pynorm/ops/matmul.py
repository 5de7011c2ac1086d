"""Products of a tall matrix (many rows) with a small one, on pynorm's threads.

These are the projections and weight gradients of the trainer's attention layers
(:mod:`pynorm.nn`): a few thousand rows by a few dozen columns. NumPy's BLAS runs them on one
thread there, because its threads and pynorm's OpenMP threads fight for the cores when both
are awake (see :func:`pynorm.nn.train.single_blas_thread`); here they run on pynorm's pool.
CPU only. Arithmetic is float32 for float32/float16/bfloat16 storage and float64 for float64,
and results are bitwise identical whatever the thread count.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .. import _array


def matmul(
    a: Any, b: Any, *, transpose_a: bool = False, add: Any = None, n_threads: Optional[int] = None
) -> np.ndarray:
    """``a @ b`` (+ ``add``) for a with many rows, or ``a^T @ b`` summed over rows.

    Args:
        a: array-like of shape (..., k); its leading axes are rows.
        b: transpose_a=False: shape (k, n), the small matrix. transpose_a=True: shape
            (..., n) with a's leading axes.
        transpose_a: compute ``sum over rows r of outer(a_r, b_r)``, i.e. ``A^T B`` for the
            row matrices A (rows x m), B (rows x n): the (m, n) weight gradient of a
            projection. The rows are summed in a fixed partition and order.
        add: optional (..., n) array added to ``a @ b`` (not with transpose_a).
        n_threads: threads for this call (default: ``pynorm.get_num_threads()``).

    One dtype for a and b (float32, float64, float16 or bfloat16); add is converted to it.

    Returns:
        transpose_a=False: shape (..., n); transpose_a=True: shape (m, n); a's dtype.

    Example:
        >>> import numpy as np, pynorm
        >>> x, w = np.ones((4, 3)), np.arange(6.0).reshape(3, 2)
        >>> pynorm.matmul(x, w, add=np.ones((4, 2)))[0].tolist()
        [7.0, 10.0]
        >>> pynorm.matmul(x, x, transpose_a=True).shape
        (3, 3)
    """
    fn = "pynorm.matmul"
    be = _array.backend(fn, ("a", "b", "add"), (a, b, add))
    a = be.input(a, "a", fn)
    b = be.input(b, "b", fn)
    dtype = be.same_dtype({"a": a, "b": b}, fn)
    threads = _array.threads_value(n_threads, "n_threads", fn)
    a_shape, b_shape = tuple(a.shape), tuple(b.shape)
    if transpose_a:
        if add is not None:
            raise ValueError(f"{fn}: add is not supported with transpose_a=True")
        if b_shape[:-1] != a_shape[:-1]:
            raise ValueError(
                f"{fn}: with transpose_a=True, a and b must have the same leading (row) axes, "
                f"got a {a_shape} and b {b_shape}"
            )
    elif len(b_shape) != 2 or b_shape[0] != a_shape[-1]:
        raise ValueError(f"{fn}: b must have shape ({a_shape[-1]}, n) to multiply a of shape {a_shape}, got {b_shape}")
    # what both kernels are told: a and b as rows, the result's column count, dtype, threads
    a_rows, a_row_stride = be.rows(a)
    b_rows, b_row_stride = be.rows(b)
    operands = dict(
        a=a_rows, a_row_stride=a_row_stride, b=b_rows, b_row_stride=b_row_stride, n=b_shape[-1], dtype=be.code(a),
        threads=threads,
    )  # fmt: skip
    if transpose_a:
        out = be.empty((a_shape[-1], b_shape[-1]), dtype)
        be.kernels.matmul_tn(**operands, out=out, rows=a_rows.shape[0], m=a_shape[-1])
        return out
    shape = a_shape[:-1] + b_shape[-1:]
    add_rows, add_row_stride = None, 0
    if add is not None:
        add = be.convert(add, "add", fn)
        if tuple(add.shape) != shape:
            raise ValueError(f"{fn}: add must have the result's shape {shape}, got {tuple(add.shape)}")
        add_rows, add_row_stride = be.rows(be.cast(add, dtype))
    out = be.empty(shape, dtype)
    be.kernels.matmul(
        **operands, add=add_rows, add_row_stride=add_row_stride, out=out.reshape(a_rows.shape[0], shape[-1]),
        m=a_rows.shape[0], k=a_shape[-1],
    )  # fmt: skip
    return out
