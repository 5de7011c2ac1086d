"""FALLBACK: a plain-NumPy linear attention with exactly the contract of the C++ kernels
``pynorm.linear_attention`` / ``pynorm.linear_attention_backward`` (being added separately).
:mod:`pynorm.nn.attention` uses this only while pynorm has no such kernel.

With q, k: (..., N, Dk) and v: (..., N, Dv)::

    A_ij   = q_i . k_j                   (j <= i only when causal)
    out_i  = scale * sum_j A_ij v_j
    out_i /= scale * sum_j A_ij + eps    (only when normalize)

Non-causal attention uses the associative form ``q @ (k^T v)`` (O(N D^2)); causal attention
masks the N x N score matrix (O(N^2 D), fine for the short sequences of the experiments).
"""

from __future__ import annotations

import numpy as np


def _t(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


def _check(q, k, v):
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    if q.ndim < 2 or q.shape != k.shape or v.shape[:-1] != k.shape[:-1]:
        raise ValueError(
            f"linear_attention: need q, k of shape (..., N, Dk) and v of shape (..., N, Dv), "
            f"got q {q.shape}, k {k.shape}, v {v.shape}"
        )
    return q, k, v


def _scores(q, k):
    """The causal score matrix tril(q k^T)."""
    return np.tril(q @ _t(k))


def linear_attention(q, k, v, *, causal=False, normalize=False, eps=1e-6, scale=1.0):
    """Linear attention (see the module doc); returns out of shape (..., N, Dv)."""
    q, k, v = _check(q, k, v)
    if causal:
        scores = _scores(q, k)
        out = scale * (scores @ v)
        den = scale * scores.sum(-1) + eps
    else:
        out = scale * (q @ (_t(k) @ v))
        den = scale * (q @ k.sum(-2)[..., None])[..., 0] + eps
    if normalize:
        out /= den[..., None]
    return out


def linear_attention_backward(dout, q, k, v, *, causal=False, normalize=False, eps=1e-6, scale=1.0):
    """Gradients of :func:`linear_attention`: ``(dq, dk, dv)``."""
    q, k, v = _check(q, k, v)
    dout = np.asarray(dout)
    if causal:
        scores = _scores(q, k)
        num = scores @ v
        row_sum = scores.sum(-1)
    else:
        kv = _t(k) @ v
        k_sum = k.sum(-2)
        num = q @ kv
        row_sum = (q @ k_sum[..., None])[..., 0]
    dnum = dout
    dden = None
    if normalize:
        den = scale * row_sum + eps
        dnum = dout / den[..., None]
        dden = -(dnum * num).sum(-1) * scale / den  # d loss / d (row sum of scores), times 1/scale
    if causal:
        dscores = dnum @ _t(v)
        if dden is not None:
            dscores = dscores + dden[..., None]
        dscores = scale * np.tril(dscores)
        return dscores @ k, _t(dscores) @ q, scale * (_t(scores) @ dnum)
    dq = dnum @ _t(kv)
    dk = v @ (_t(dnum) @ q)
    if dden is not None:
        dq = dq + dden[..., None] * k_sum[..., None, :]
        dk = dk + (dden[..., None, :] @ q)
    return scale * dq, scale * dk, scale * (k @ (_t(q) @ dnum))
