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
from .norm import _rows_backward, _rows_forward


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
    (y, copy_to), description = _rows_forward(be, fn, x, weight, bias, out, n_threads)
    be.kernels.dyt_forward(**description, alpha=a)
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
    (dx, dweight, dbias), description = _rows_backward(be, fn, dy, x, weight, bias, n_threads)
    dtype = be.dtype(x)
    dalpha = be.empty((1,), _array.accumulate_dtype(dtype))
    be.kernels.dyt_backward(**description, dalpha=dalpha, alpha=a)
    return dx, be.cast(dalpha, dtype), dweight, dbias
