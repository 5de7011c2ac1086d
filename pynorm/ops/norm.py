"""LayerNorm, its projection and scaling halves, and RMSNorm: forward and backward.

One kernel serves all of them. Over the last axis of x (``dim`` elements)::

    mu   = mean(x)                          if center else 0
    rstd = 1 / sqrt(mean((x - mu)^2) + eps)  if scale  else 1
    y    = (x - mu) * rstd * weight + bias

* ``center=True,  scale=True``  -- LayerNorm (torch.nn.functional.layer_norm).
* ``center=True,  scale=False`` -- the projection half of Brody et al. (P2): x - mean(x),
  the projection onto the hyperplane orthogonal to the all-ones vector.
* ``center=False, scale=True``  -- the scaling half: x / RMS(x), i.e. RMSNorm (rms_norm
  calls exactly this). P1's column normalisation x / ||x||_2 is
  ``rms_norm(x, eps=0) / sqrt(dim)``.
* ``center=False, scale=False`` -- only the affine part (weight, bias), if any.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .. import _array
from .._core_loader import core


def _layer_norm_cuda(x, weight=None, bias=None, eps=1e-5, *, center=True, scale=True, out=None,
                     return_stats=False, n_threads=None):
    return _forward_cuda("pynorm.layer_norm", x, weight, bias, eps, center, scale, out, return_stats)


def _layer_norm_backward_cuda(dy, x, weight=None, bias=None, eps=1e-5, *, center=True, scale=True, mean=None,
                              rstd=None, n_threads=None):
    return _backward_cuda("pynorm.layer_norm_backward", dy, x, weight, bias, eps, center, scale, mean, rstd)


def _rms_norm_cuda(x, weight=None, eps=1e-6, *, out=None, return_stats=False, n_threads=None):
    result = _forward_cuda("pynorm.rms_norm", x, weight, None, eps, False, True, out, return_stats)
    return (result[0], result[2]) if return_stats else result


def _rms_norm_backward_cuda(dy, x, weight=None, eps=1e-6, *, rstd=None, n_threads=None):
    dx, dweight, _ = _backward_cuda("pynorm.rms_norm_backward", dy, x, weight, None, eps, False, True, None, rstd)
    return dx, dweight


def _forward_cuda(fn, x, weight, bias, eps, center, scale, out, return_stats):
    gpu = _array.Gpu(fn, {"x": x, "weight": weight, "bias": bias, "out": out})
    x = gpu.input(x, "x")
    eps = _array.eps_value(eps, fn)
    dim = x.shape[-1]
    w = gpu.vector(weight, dim, x, "weight")
    b = gpu.vector(bias, dim, x, "bias")
    y = gpu.output(x, out)
    x_rows, x_stride = gpu.rows(x)
    stats_shape, stats_dtype = tuple(x.shape[:-1]), gpu.accumulate_dtype(x)
    mean = gpu.empty(stats_shape, stats_dtype) if return_stats else None
    rstd = gpu.empty(stats_shape, stats_dtype) if return_stats else None
    gpu.module.norm_forward(
        gpu.ptr(x_rows), x_stride, gpu.ptr(y), x_rows.shape[0], dim, gpu.ptr(w), gpu.ptr(b), gpu.ptr(mean),
        gpu.ptr(rstd), gpu.dtype_code(x), eps, bool(center), bool(scale), gpu.device, gpu.stream,
    )  # fmt: skip
    return (y, mean, rstd) if return_stats else y


def _backward_cuda(fn, dy, x, weight, bias, eps, center, scale, mean, rstd):
    gpu = _array.Gpu(fn, {"x": x, "dy": dy, "weight": weight, "bias": bias, "mean": mean, "rstd": rstd})
    x = gpu.input(x, "x")
    dy = gpu.like(dy, x, "dy")
    eps = _array.eps_value(eps, fn)
    dim = x.shape[-1]
    w = gpu.vector(weight, dim, x, "weight")
    gpu.vector(bias, dim, x, "bias")  # checked; only its presence matters
    mean = gpu.row_stats(mean, x, "mean") if center else None
    rstd = gpu.row_stats(rstd, x, "rstd") if scale else None
    dtype = gpu.dtype(x)
    dx = gpu.empty(tuple(x.shape), dtype)
    dweight = gpu.empty((dim,), dtype) if w is not None else None
    dbias = gpu.empty((dim,), dtype) if bias is not None else None
    x_rows, x_stride = gpu.rows(x)
    dy_rows, dy_stride = gpu.rows(dy)
    gpu.module.norm_backward(
        gpu.ptr(dy_rows), dy_stride, gpu.ptr(x_rows), x_stride, gpu.ptr(w), gpu.ptr(mean), gpu.ptr(rstd),
        gpu.ptr(dx), gpu.ptr(dweight), gpu.ptr(dbias), x_rows.shape[0], dim, gpu.dtype_code(x), eps,
        bool(center), bool(scale), gpu.device, gpu.stream,
    )  # fmt: skip
    return dx, dweight, dbias


@_array.dispatch(_layer_norm_cuda)
def layer_norm(
    x: Any,
    weight: Any = None,
    bias: Any = None,
    eps: float = 1e-5,
    *,
    center: bool = True,
    scale: bool = True,
    out: Optional[np.ndarray] = None,
    return_stats: bool = False,
    n_threads: Optional[int] = None,
):
    """Layer normalisation over the last axis of ``x``.

    Args:
        x: array-like of shape (..., dim); float32, float64, float16 or bfloat16.
        weight, bias: optional arrays of shape (dim,) (converted to x's dtype).
        eps: added to the variance (or mean square) before the square root; >= 0.
        center: subtract the row mean (the projection half).
        scale: divide by the row's standard deviation (the scaling half).
        out: optional C-contiguous array of x's shape and dtype to write into (may be x).
        return_stats: also return ``(mean, rstd)``, one value per row (shape x.shape[:-1],
            float64 for float64 input, float32 otherwise); pass them to layer_norm_backward.
        n_threads: threads for this call (default: ``pynorm.get_num_threads()``).

    Returns:
        y with x's shape and dtype, or ``(y, mean, rstd)`` when ``return_stats``.
        Without centring mean is 0; without scaling rstd is 1.

    Example:
        >>> import numpy as np, pynorm
        >>> x = np.random.randn(4, 8).astype(np.float32)
        >>> y = pynorm.layer_norm(x, np.ones(8), np.zeros(8))
        >>> bool(np.allclose(y.mean(-1), 0, atol=1e-6))
        True
    """
    return _forward("pynorm.layer_norm", x, weight, bias, eps, center, scale, out, return_stats, n_threads)


def _forward(fn, x, weight, bias, eps, center, scale, out, return_stats, n_threads):
    x = _array.as_input(x, "x", fn)
    eps = _array.eps_value(eps, fn)
    dim = x.shape[-1]
    w = _array.vector(weight, dim, x.dtype, "weight", fn)
    b = _array.vector(bias, dim, x.dtype, "bias", fn)
    y, y_rows = _array.output(x, out, fn)
    stats_dtype = _array.accumulate_dtype(x.dtype)
    mean = np.empty(x.shape[:-1], dtype=stats_dtype) if return_stats else None
    rstd = np.empty(x.shape[:-1], dtype=stats_dtype) if return_stats else None
    core().norm_forward(
        _array.as_rows(x), y_rows, w, b,
        None if mean is None else mean.reshape(-1), None if rstd is None else rstd.reshape(-1),
        _array.dtype_code(x.dtype), eps, bool(center), bool(scale), _array.threads_value(n_threads, fn),
    )  # fmt: skip
    return (y, mean, rstd) if return_stats else y


@_array.dispatch(_layer_norm_backward_cuda)
def layer_norm_backward(
    dy: Any,
    x: Any,
    weight: Any = None,
    bias: Any = None,
    eps: float = 1e-5,
    *,
    center: bool = True,
    scale: bool = True,
    mean: Any = None,
    rstd: Any = None,
    n_threads: Optional[int] = None,
):
    """Gradients of :func:`layer_norm` with respect to x, weight and bias.

    Args:
        dy: the gradient of the loss with respect to y (x's shape).
        x, weight, bias, eps, center, scale: as given to the forward.
        mean, rstd: the statistics ``layer_norm(..., return_stats=True)`` returned; recomputed
            from x when not given (bitwise the same values).
        n_threads: threads for this call.

    Returns:
        ``(dx, dweight, dbias)``; dweight is None when weight is None, dbias when bias is None.
        dweight and dbias are summed over all rows in fixed blocks, so they are bitwise
        identical whatever the thread count.
    """
    return _backward("pynorm.layer_norm_backward", dy, x, weight, bias, eps, center, scale, mean, rstd, n_threads)


def _backward(fn, dy, x, weight, bias, eps, center, scale, mean, rstd, n_threads):
    x = _array.as_input(x, "x", fn)
    dy = _array.like(dy, x, "dy", fn)
    eps = _array.eps_value(eps, fn)
    dim = x.shape[-1]
    w = _array.vector(weight, dim, x.dtype, "weight", fn)
    _array.vector(bias, dim, x.dtype, "bias", fn)  # checked; only its presence matters
    dx, dx_rows = _array.output(x, None, fn)
    dweight = np.empty(dim, dtype=x.dtype) if w is not None else None
    dbias = np.empty(dim, dtype=x.dtype) if bias is not None else None
    core().norm_backward(
        _array.as_rows(dy), _array.as_rows(x), w,
        _array.row_stats(mean, x, "mean", fn) if center else None,
        _array.row_stats(rstd, x, "rstd", fn) if scale else None,
        dx_rows, dweight, dbias, _array.dtype_code(x.dtype), eps, bool(center), bool(scale),
        _array.threads_value(n_threads, fn),
    )  # fmt: skip
    return dx, dweight, dbias


@_array.dispatch(_rms_norm_cuda)
def rms_norm(
    x: Any,
    weight: Any = None,
    eps: float = 1e-6,
    *,
    out: Optional[np.ndarray] = None,
    return_stats: bool = False,
    n_threads: Optional[int] = None,
):
    """RMSNorm over the last axis: ``x / sqrt(mean(x^2) + eps) * weight``.

    The same kernel as ``layer_norm(x, weight, None, eps, center=False, scale=True)``.
    P1's normalisation of a token to unit l2 norm, x / ||x||, is
    ``rms_norm(x, eps=0) / sqrt(x.shape[-1])``.

    Returns y, or ``(y, rstd)`` when ``return_stats``.
    """
    result = _forward("pynorm.rms_norm", x, weight, None, eps, False, True, out, return_stats, n_threads)
    return (result[0], result[2]) if return_stats else result


@_array.dispatch(_rms_norm_backward_cuda)
def rms_norm_backward(
    dy: Any,
    x: Any,
    weight: Any = None,
    eps: float = 1e-6,
    *,
    rstd: Any = None,
    n_threads: Optional[int] = None,
):
    """Gradients of :func:`rms_norm`: ``(dx, dweight)``, dweight None without weight."""
    dx, dweight, _ = _backward("pynorm.rms_norm_backward", dy, x, weight, None, eps, False, True, None, rstd, n_threads)
    return dx, dweight
