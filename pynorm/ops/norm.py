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

_FORWARD_ARRAYS = ("x", "weight", "bias", "out")
_BACKWARD_ARRAYS = ("dy", "x", "weight", "bias", "mean", "rstd")


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
        out: optional writable array of x's shape and dtype to write into (may be x; any
            strides or byte order: a result that cannot be written in place is copied in).
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


def _rows_forward(be: _array.Backend, fn: str, x: Any, weight: Any, bias: Any, out: Any, n_threads: Any):
    """The part of a row-wise forward both the norms and DyT share, after the op has read x and
    its own scalars: n_threads, weight and bias checked, y placed. Returns ``((y, copy_to),
    the kernel's description without the op's own options)``; y and copy_to go to
    ``be.deliver``."""
    threads = _array.threads_value(n_threads, "n_threads", fn)
    dtype, dim = be.dtype(x), x.shape[-1]
    w = be.parameter(weight, (dim,), dtype, "weight", fn)
    b = be.parameter(bias, (dim,), dtype, "bias", fn)
    y, y_rows, copy_to = be.output(x, out, fn)
    x_rows, x_row_stride = be.rows(x)
    description = dict(
        x=x_rows, x_row_stride=x_row_stride, y=y_rows, rows=x_rows.shape[0], dim=dim, weight=w, bias=b,
        dtype=be.code(x), threads=threads,
    )  # fmt: skip
    return (y, copy_to), description


def _rows_backward(be: _array.Backend, fn: str, dy: Any, x: Any, weight: Any, bias: Any, n_threads: Any):
    """The part of a row-wise backward both the norms and DyT share, after the op has read x,
    dy and its own scalars: n_threads, weight and bias checked, new dx, dweight and dbias (None
    without weight / bias). Returns ``((dx, dweight, dbias), the kernel's description without
    the op's own options and outputs)``."""
    threads = _array.threads_value(n_threads, "n_threads", fn)
    dtype, dim = be.dtype(x), x.shape[-1]
    w = be.parameter(weight, (dim,), dtype, "weight", fn)
    be.parameter(bias, (dim,), dtype, "bias", fn)  # checked; only its presence matters
    dx, dx_rows, _ = be.output(x, None, fn, inputs=(dy,))
    dweight = be.empty((dim,), dtype) if w is not None else None
    dbias = be.empty((dim,), dtype) if bias is not None else None
    x_rows, x_row_stride = be.rows(x)
    dy_rows, dy_row_stride = be.rows(dy)
    description = dict(
        dy=dy_rows, dy_row_stride=dy_row_stride, x=x_rows, x_row_stride=x_row_stride, weight=w, dx=dx_rows,
        dweight=dweight, dbias=dbias, rows=x_rows.shape[0], dim=dim, dtype=be.code(x), threads=threads,
    )  # fmt: skip
    return (dx, dweight, dbias), description


def _forward(fn, x, weight, bias, eps, center, scale, out, return_stats, n_threads):
    be = _array.backend(fn, _FORWARD_ARRAYS, (x, weight, bias, out))
    x = be.input(x, "x", fn)
    eps = _array.eps_value(eps, fn)
    (y, copy_to), description = _rows_forward(be, fn, x, weight, bias, out, n_threads)
    mean = rstd = None
    if return_stats:
        stats_dtype = _array.accumulate_dtype(be.dtype(x))
        mean, rstd = be.empty(x.shape[:-1], stats_dtype), be.empty(x.shape[:-1], stats_dtype)
    be.kernels.norm_forward(
        **description, mean=None if mean is None else mean.reshape(-1), rstd=None if rstd is None else rstd.reshape(-1),
        eps=eps, center=bool(center), scale=bool(scale),
    )  # fmt: skip
    y = be.deliver(y, copy_to, out)
    return (y, mean, rstd) if return_stats else y


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
    be = _array.backend(fn, _BACKWARD_ARRAYS, (dy, x, weight, bias, mean, rstd))
    x = be.input(x, "x", fn)
    dy = be.like(dy, x, "dy", fn)
    eps = _array.eps_value(eps, fn)
    grads, description = _rows_backward(be, fn, dy, x, weight, bias, n_threads)
    mean = be.row_stats(mean, x, "mean", fn) if center else None
    rstd = be.row_stats(rstd, x, "rstd", fn) if scale else None
    be.kernels.norm_backward(**description, mean=mean, rstd=rstd, eps=eps, center=bool(center), scale=bool(scale))
    return grads


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
