"""Softmax (scaled dot-product) attention, causal or not, forward and backward. CPU only.

For q, k of shape (..., N, Dk) and v of shape (..., N, Dv) -- every leading index (batch,
heads) an independent problem, tokens are rows -- and j running over all tokens
(non-causal) or over j <= i (causal)::

    out_i = sum_j softmax_j(scale * q_i . k_j) v_j

as ``torch.nn.functional.scaled_dot_product_attention`` computes it (the softmax shifted by
its row maximum, so large logits never overflow). The backward recomputes the probabilities
from q and k (as FlashAttention does): nothing of size N x N is kept between the calls, and
inside a call only one block of 64 query rows' scores per thread.

Arithmetic is float32 for float32/float16/bfloat16 storage and float64 for float64; exp is a
vector polynomial accurate to about an ulp. Results are bitwise identical whatever the thread
count: problems run in parallel, each computed alone in a fixed order. NaN and Inf propagate as
in torch (a NaN score makes its row NaN, a row whose scores are all -inf is NaN); masked
(causal) probabilities are exact zeros, though a NaN or Inf in v or dout at a masked position
may still reach earlier rows, as in torch's matrix products. No CUDA variant: GPU arrays are
refused (use torch's own attention there).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np

from .. import _array
from .linear_attention import _backward_description, _inputs, _matrices


def _checked(fn: str, q: Any, k: Any, v: Any, scale: Any, extra: Tuple[Tuple[str, Any], ...] = ()):
    """The CPU backend, q, k, v checked (head dims >= 1), and the scale (default 1/sqrt(Dk))."""
    names = ("q", "k", "v") + tuple(name for name, _ in extra)
    arrays = (q, k, v) + tuple(a for _, a in extra)
    be = _array.backend(fn, names, arrays, () if scale is None else (scale,))
    if be is not _array.CPU:
        raise ValueError(f"{fn}: CPU only (no CUDA variant); got GPU arrays")
    q, k, v = _inputs(be, fn, q, k, v)
    for name, a in (("q", q), ("v", v)):
        if a.shape[-1] < 1:
            raise ValueError(f"{fn}: {name} must have a head dimension (last axis) of at least 1, got {tuple(a.shape)}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else _array.real(scale, "scale", fn)
    return be, q, k, v, scale


def softmax_attention(
    q: Any,
    k: Any,
    v: Any,
    *,
    causal: bool = False,
    scale: Optional[float] = None,
    out: Any = None,
    n_threads: Optional[int] = None,
) -> np.ndarray:
    """Softmax attention ``out_i = sum_j softmax_j(scale * q_i . k_j) v_j`` (causal: j <= i).

    Args:
        q, k: array-likes of shape (..., N, Dk); v: (..., N, Dv), Dk and Dv >= 1. The leading
            axes (batch, heads) must be equal; 2-d inputs are one problem. One dtype for all
            three: float32, float64, float16 or bfloat16. CPU arrays only.
        causal: token i attends to tokens j <= i only.
        scale: multiplies the scores q_i . k_j (default ``1 / sqrt(Dk)``, torch's).
        out: optional writable array of the output's shape and dtype to write into.
        n_threads: threads for this call (default: ``pynorm.get_num_threads()``).

    Returns:
        out of shape (..., N, Dv) and the inputs' dtype.

        >>> import numpy as np, pynorm
        >>> q = k = v = np.eye(2)
        >>> np.round(pynorm.softmax_attention(q, k, v, scale=50.0), 6)
        array([[1., 0.],
               [0., 1.]])
    """
    fn = "pynorm.softmax_attention"
    be, q, k, v, scale = _checked(fn, q, k, v, scale)
    threads = _array.threads_value(n_threads, "n_threads", fn)
    # out has v's shape; a partial overlap with q or k is computed apart too, as with v
    y, _, copy_to = be.output(v, out, fn)
    if copy_to is None and out is not None and any(be._partly_overlaps(y, a) for a in (q, k)):
        y, copy_to = be.empty(tuple(v.shape), be.dtype(v)), y
    y_mats = y.reshape(math.prod(v.shape[:-2]), v.shape[-2], v.shape[-1])
    be.kernels.softmax_attention_forward(
        **_matrices(be, q, k, v), out=y_mats, scale=scale, causal=bool(causal), threads=threads
    )
    return be.deliver(y, copy_to, out)


def softmax_attention_backward(
    dout: Any,
    q: Any,
    k: Any,
    v: Any,
    *,
    causal: bool = False,
    scale: Optional[float] = None,
    n_threads: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`softmax_attention` with respect to q, k and v.

    Args:
        dout: the gradient of the loss with respect to out, shape (..., N, Dv) (converted to
            q's dtype).
        q, k, v, causal, scale: as given to the forward (nothing else is saved: the backward
            recomputes the probabilities).
        n_threads: threads for this call.

    Returns:
        ``(dq, dk, dv)`` with the shapes of q, k, v and their dtype.
    """
    fn = "pynorm.softmax_attention_backward"
    be, q, k, v, scale = _checked(fn, q, k, v, scale, (("dout", dout),))
    (dq, dk, dv), description = _backward_description(be, fn, dout, q, k, v)
    threads = _array.threads_value(n_threads, "n_threads", fn)
    be.kernels.softmax_attention_backward(**description, scale=scale, causal=bool(causal), threads=threads)
    return dq, dk, dv
