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
from .._core_loader import core


def _dyt_cuda(x, alpha, weight=None, bias=None, *, out=None, n_threads=None):
    fn = "pynorm.dyt"
    gpu = _array.Gpu(fn, {"x": x, "weight": weight, "bias": bias, "out": out})
    x = gpu.input(x, "x")
    a = gpu.scalar(alpha, "alpha")
    dim = x.shape[-1]
    w = gpu.vector(weight, dim, x, "weight")
    b = gpu.vector(bias, dim, x, "bias")
    y = gpu.output(x, out)
    x_rows, x_stride = gpu.rows(x)
    gpu.module.dyt_forward(
        gpu.ptr(x_rows), x_stride, gpu.ptr(y), x_rows.shape[0], dim, gpu.ptr(w), gpu.ptr(b), gpu.dtype_code(x), a,
        gpu.device, gpu.stream,
    )  # fmt: skip
    return y


def _dyt_backward_cuda(dy, x, alpha, weight=None, bias=None, *, n_threads=None):
    fn = "pynorm.dyt_backward"
    gpu = _array.Gpu(fn, {"x": x, "dy": dy, "weight": weight, "bias": bias})
    x = gpu.input(x, "x")
    dy = gpu.like(dy, x, "dy")
    a = gpu.scalar(alpha, "alpha")
    dim = x.shape[-1]
    w = gpu.vector(weight, dim, x, "weight")
    gpu.vector(bias, dim, x, "bias")  # checked; only its presence matters
    dtype = gpu.dtype(x)
    dx = gpu.empty(tuple(x.shape), dtype)
    dalpha = gpu.empty((1,), gpu.accumulate_dtype(x))
    dweight = gpu.empty((dim,), dtype) if w is not None else None
    dbias = gpu.empty((dim,), dtype) if bias is not None else None
    x_rows, x_stride = gpu.rows(x)
    dy_rows, dy_stride = gpu.rows(dy)
    gpu.module.dyt_backward(
        gpu.ptr(dy_rows), dy_stride, gpu.ptr(x_rows), x_stride, gpu.ptr(w), gpu.ptr(dx), gpu.ptr(dalpha),
        gpu.ptr(dweight), gpu.ptr(dbias), x_rows.shape[0], dim, gpu.dtype_code(x), a, gpu.device, gpu.stream,
    )  # fmt: skip
    return dx, gpu.astype(dalpha, dtype), dweight, dbias


@_array.dispatch(_dyt_cuda)
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
        out: optional C-contiguous array of x's shape and dtype (may be x).
        n_threads: threads for this call.

    Returns:
        y with x's shape and dtype.
    """
    fn = "pynorm.dyt"
    x = _array.as_input(x, "x", fn)
    a = _array.scalar(alpha, "alpha", fn)
    dim = x.shape[-1]
    w = _array.vector(weight, dim, x.dtype, "weight", fn)
    b = _array.vector(bias, dim, x.dtype, "bias", fn)
    y, y_rows = _array.output(x, out, fn)
    core().dyt_forward(
        _array.as_rows(x), y_rows, w, b, _array.dtype_code(x.dtype), a, _array.threads_value(n_threads, fn)
    )
    return y


@_array.dispatch(_dyt_backward_cuda)
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
    x = _array.as_input(x, "x", fn)
    dy = _array.like(dy, x, "dy", fn)
    a = _array.scalar(alpha, "alpha", fn)
    dim = x.shape[-1]
    w = _array.vector(weight, dim, x.dtype, "weight", fn)
    _array.vector(bias, dim, x.dtype, "bias", fn)  # checked; only its presence matters
    dx, dx_rows = _array.output(x, None, fn)
    dalpha = np.empty(1, dtype=_array.accumulate_dtype(x.dtype))
    dweight = np.empty(dim, dtype=x.dtype) if w is not None else None
    dbias = np.empty(dim, dtype=x.dtype) if bias is not None else None
    core().dyt_backward(
        _array.as_rows(dy), _array.as_rows(x), w, dx_rows, dalpha, dweight, dbias,
        _array.dtype_code(x.dtype), a, _array.threads_value(n_threads, fn),
    )  # fmt: skip
    return dx, dalpha.astype(x.dtype), dweight, dbias
