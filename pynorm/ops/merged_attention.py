"""P1's attention with its projections fused in, forward and backward (CPU).

For x of shape (..., N, d) -- every leading index an independent problem, tokens are rows --
and weights W, V of shape (d, d)::

    out = scale * Q (K^T Vv) (+ x if residual),   Q = x W^T,  K = x,  Vv = x V^T

which is ``linear_attention(x @ W.T, x, x @ V.T, scale=scale)``: the paper's ``V E E^T W E``
with E = x^T (Wu, Zhang, Cao). Fusing the projections keeps each problem's q, v and their
gradients in cache: x is read once and out written once, where the unfused form passes four
more arrays of x's size through memory. The backward returns dx and the weight gradients dW,
dV summed over all problems, bitwise identical whatever the thread count. Non-causal and
unnormalised only; float32, float64, float16 and bfloat16 (float32 arithmetic for the 16-bit
types). No CUDA version: the looped trainer it serves runs on the CPU.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from .. import _array


def _inputs(be: _array.Backend, fn: str, x: Any, W: Any, V: Any):
    x = be.input(x, "x", fn, min_ndim=2)
    d, dtype = x.shape[-1], be.dtype(x)
    return x, be.parameter(W, (d, d), dtype, "W", fn), be.parameter(V, (d, d), dtype, "V", fn)


def _describe(be: _array.Backend, x: Any, W: Any, V: Any, scale: float, residual: bool, threads: int) -> dict:
    """The description's fields forward and backward share."""
    x_mats, x_strides = be.matrices(x)
    return dict(
        x=x_mats,
        x_strides=x_strides,
        w=W,
        v=V,
        problems=x_mats.shape[0],
        n=x.shape[-2],
        d=x.shape[-1],
        dtype=be.code(x),
        scale=scale,
        residual=bool(residual),
        threads=threads,
    )


def merged_linear_attention(
    x: Any, W: Any, V: Any, *, scale: float = 1.0, residual: bool = False, n_threads: Optional[int] = None
) -> np.ndarray:
    """``scale * (x W^T) (x^T (x V^T))`` per problem, plus x with ``residual=True``.

    Args:
        x: array-like of shape (..., N, d); the leading axes are independent problems.
        W, V: (d, d) arrays (converted to x's dtype): queries ``W e``, values ``V e``.
        scale: multiplies the scores.
        residual: add x to the result (P1's ``E + V E E^T W E``).
        n_threads: threads for this call (default: ``pynorm.get_num_threads()``).

    Returns:
        out with x's shape and dtype.

    Example:
        >>> import numpy as np, pynorm
        >>> rng = np.random.default_rng(0)
        >>> x, W, V = rng.standard_normal((2, 5, 4)), rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
        >>> out = pynorm.merged_linear_attention(x, W, V)
        >>> bool(np.allclose(out, pynorm.linear_attention(x @ W.T, x, x @ V.T)))
        True
    """
    fn = "pynorm.merged_linear_attention"
    be = _array.backend(fn, ("x", "W", "V"), (x, W, V), (scale,))
    x, W, V = _inputs(be, fn, x, W, V)
    scale = _array.real(scale, "scale", fn)
    threads = _array.threads_value(n_threads, "n_threads", fn)
    out = be.empty(tuple(x.shape), be.dtype(x))
    be.kernels.merged_attention_forward(out=be.matrices(out)[0], **_describe(be, x, W, V, scale, residual, threads))
    return out


def merged_linear_attention_backward(
    dout: Any, x: Any, W: Any, V: Any, *, scale: float = 1.0, residual: bool = False, n_threads: Optional[int] = None
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`merged_linear_attention` with respect to x, W and V.

    Args:
        dout: the gradient of the loss with respect to out (x's shape; converted to x's dtype).
        x, W, V, scale, residual: as given to the forward (nothing is saved: the backward
            recomputes the projections, in cache).
        n_threads: threads for this call.

    Returns:
        ``(dx, dW, dV)``: dx with x's shape (including dout itself with ``residual=True``),
        dW and dV of shape (d, d) summed over all problems in a fixed order.
    """
    fn = "pynorm.merged_linear_attention_backward"
    be = _array.backend(fn, ("dout", "x", "W", "V"), (dout, x, W, V), (scale,))
    x, W, V = _inputs(be, fn, x, W, V)
    dout = be.like(dout, x, "dout", fn)
    scale = _array.real(scale, "scale", fn)
    threads = _array.threads_value(n_threads, "n_threads", fn)
    dtype = be.dtype(x)
    dx, dW, dV = be.empty(tuple(x.shape), dtype), be.empty(tuple(W.shape), dtype), be.empty(tuple(V.shape), dtype)
    dout_mats, dout_strides = be.matrices(dout)
    be.kernels.merged_attention_backward(
        dout=dout_mats,
        dout_strides=dout_strides,
        dx=be.matrices(dx)[0],
        dw=dW,
        dv=dV,
        **_describe(be, x, W, V, scale, residual, threads),
    )
    return dx, dW, dV
