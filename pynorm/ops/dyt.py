"""Dynamic Tanh (DyT, Zhu et al. 2025): ``y = weight * tanh(alpha * x) + bias``.

alpha is one scalar; weight and bias are per channel (the last axis) and optional. The
backward recomputes tanh from x (nothing else is saved). float32 (and 16-bit inputs, computed
in float32) use a rational tanh accurate to < 3.2 x 2^-23 relative, exactly +-1 in saturation,
and 1 - tanh^2 rounded once, as torch's backward; float64 uses an expm1-based tanh whose
1 - tanh^2 keeps its relative accuracy where tanh saturates.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .. import _array


def dyt(
    x: Any,
    alpha: Any,
    weight: Any = None,
    bias: Any = None,
    *,
    out: Optional[np.ndarray] = None,
    n_threads: Optional[int] = None,
) -> np.ndarray:
    """DyT over the last axis of ``x``: ``weight * tanh(alpha * x) + bias``.

    Args:
        x: array-like of shape (..., dim).
        alpha: a number or a one-element array (the learnable scalar).
        weight, bias: optional arrays of shape (dim,).
        out: optional writable array of x's shape and dtype (may be x; see layer_norm).
        n_threads: threads for this call.

    Returns:
        y with x's shape and dtype.
    """
    fn = "pynorm.dyt"
    be = _array.backend(fn, ("x", "weight", "bias", "out"), (x, weight, bias, out), (alpha,))
    x = be.input(x, "x", fn)
    a = _array.real(alpha, "alpha", fn)
    threads = _array.threads_value(n_threads, "n_threads", fn)
    dtype, dim = be.dtype(x), x.shape[-1]
    w = be.parameter(weight, (dim,), dtype, "weight", fn)
    b = be.parameter(bias, (dim,), dtype, "bias", fn)
    y, y_rows, copy_to = be.output(x, out, fn)
    x_rows, x_row_stride = be.rows(x)
    be.kernels.dyt_forward(
        x=x_rows, x_row_stride=x_row_stride, y=y_rows, rows=x_rows.shape[0], dim=dim, weight=w, bias=b,
        dtype=be.code(x), alpha=a, threads=threads,
    )  # fmt: skip
    return be.deliver(y, copy_to, out)


def dyt_backward(
    dy: Any,
    x: Any,
    alpha: Any,
    weight: Any = None,
    bias: Any = None,
    *,
    n_threads: Optional[int] = None,
):
    """Gradients of :func:`dyt`.

    Returns:
        ``(dx, dalpha, dweight, dbias)``: dx with x's shape; dalpha of shape (1,);
        dweight / dbias of shape (dim,), or None when weight / bias is None. All in x's
        dtype; the sums over rows are accumulated in float32 (float64 for float64) over a
        fixed partition of rows, so they do not depend on the thread count.
    """
    fn = "pynorm.dyt_backward"
    be = _array.backend(fn, ("dy", "x", "weight", "bias"), (dy, x, weight, bias), (alpha,))
    x = be.input(x, "x", fn)
    dy = be.like(dy, x, "dy", fn)
    a = _array.real(alpha, "alpha", fn)
    threads = _array.threads_value(n_threads, "n_threads", fn)
    dtype, dim = be.dtype(x), x.shape[-1]
    w = be.parameter(weight, (dim,), dtype, "weight", fn)
    be.parameter(bias, (dim,), dtype, "bias", fn)  # checked; only its presence matters
    dx, dx_rows, _ = be.output(x, None, fn, inputs=(dy,))
    dalpha = be.empty((1,), _array.accumulate_dtype(dtype))
    dweight = be.empty((dim,), dtype) if w is not None else None
    dbias = be.empty((dim,), dtype) if bias is not None else None
    x_rows, x_row_stride = be.rows(x)
    dy_rows, dy_row_stride = be.rows(dy)
    be.kernels.dyt_backward(
        dy=dy_rows, dy_row_stride=dy_row_stride, x=x_rows, x_row_stride=x_row_stride, weight=w, dx=dx_rows,
        dalpha=dalpha, dweight=dweight, dbias=dbias, rows=x_rows.shape[0], dim=dim, dtype=be.code(x), alpha=a,
        threads=threads,
    )  # fmt: skip
    return dx, be.cast(dalpha, dtype), dweight, dbias
