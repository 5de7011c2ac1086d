"""Float64 NumPy references for the fuzz campaign (tests/test_fuzz.py) where tests/reference.py
has none, or where its form does not fit the campaign's sizes.

* Linear attention: tests/reference.py forms the whole N x N score matrix under torch autograd;
  at the campaign's N = 5000 that is a 25M-element matrix, several times over. Here the same
  quadratic definition runs over blocks of query rows with its gradients written out, so memory
  is O(block * N). The causal mask *selects* (``np.where``) rather than multiplies: a NaN in a
  later token must not reach an earlier one (0 * NaN would be NaN).
* P1's merged attention and the tall-by-small matmul: the definitions, in float64.
* The per-row statistics LayerNorm returns with ``return_stats=True`` (two-pass).

tests/test_fuzz.py checks these against torch autograd (tests/reference.py) on small cases.
Every function takes arrays of any float dtype (widened exactly) and returns float64 arrays.
"""

from __future__ import annotations

import math

import numpy as np

BLOCK = 256  # query rows per block of the quadratic linear-attention reference


def _f64(*arrays):
    return tuple(np.asarray(a, dtype=np.float64) for a in arrays)


def linear_attention(q, k, v, dout, causal, normalize, eps=1e-6, scale=1.0, magnitudes=False):
    """(out, dq, dk, dv) of ``out_i = scale sum_j (q_i . k_j) v_j`` over j (j <= i when causal),
    divided by ``scale sum_j q_i . k_j + eps`` when normalising; gradients of sum(out * dout).

    ``magnitudes=True``: the same sums over the absolute values of their terms instead (the
    size of what cancels in each result, e.g. in the normalised backward's g . v - g . out)."""
    q, k, v, dout = _f64(q, k, v, dout)
    if magnitudes:
        q, k, v, dout, scale = np.abs(q), np.abs(k), np.abs(v), np.abs(dout), abs(scale)
    batch, n, d_k, d_v = q.shape[:-2], q.shape[-2], q.shape[-1], v.shape[-1]
    problems = math.prod(batch)
    q, k = q.reshape(problems, n, d_k), k.reshape(problems, n, d_k)
    v, dout = v.reshape(problems, n, d_v), dout.reshape(problems, n, d_v)
    out, dq = np.zeros((problems, n, d_v)), np.zeros((problems, n, d_k))
    dk, dv = np.zeros((problems, n, d_k)), np.zeros((problems, n, d_v))
    k_t, v_t = k.transpose(0, 2, 1), v.transpose(0, 2, 1)
    for start in range(0, n, BLOCK):  # every problem at once, one block of query rows at a time
        rows = slice(start, min(n, start + BLOCK))
        scores = scale * (q[:, rows] @ k_t)  # (problems, block, n)
        mask = None
        if causal:
            mask = np.arange(n)[None, :] <= np.arange(start, rows.stop)[:, None]
            scores = np.where(mask, scores, 0.0)
        numerator = scores @ v
        g = dout[:, rows]
        if normalize:
            denominator = scores.sum(-1, keepdims=True) + eps
            out[:, rows] = numerator / denominator
            h = (1 if magnitudes else -1) * (g * out[:, rows]).sum(-1, keepdims=True) / denominator  # d loss / d den
            g = g / denominator  # d loss / d numerator
            dscores = g @ v_t + h
        else:
            out[:, rows] = numerator
            dscores = g @ v_t
        if causal:
            dscores = np.where(mask, dscores, 0.0)
        dv += scores.transpose(0, 2, 1) @ g
        dq[:, rows] = scale * (dscores @ k)
        dk += scale * (dscores.transpose(0, 2, 1) @ q[:, rows])
    shapes = (batch + (n, d_v), batch + (n, d_k), batch + (n, d_k), batch + (n, d_v))
    return tuple(a.reshape(s) for a, s in zip((out, dq, dk, dv), shapes))


def merged_linear_attention(x, W, V, dout, scale=1.0, residual=False):
    """(out, dx, dW, dV) of ``scale (x W^T) (x^T (x V^T)) (+ x)`` per problem (the leading axes
    of x), i.e. non-causal linear attention with q = x W^T, k = x, v = x V^T; dW and dV are summed
    over the problems."""
    x, W, V, dout = _f64(x, W, V, dout)
    q, values = x @ W.T, x @ V.T
    out, dq, dk, dvalues = linear_attention(q, x, values, dout, causal=False, normalize=False, scale=scale)
    rows = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731 - all tokens of all problems as rows
    dx = dq @ W + dk + dvalues @ V
    if residual:
        out, dx = out + x, dx + dout
    return out, dx, rows(dq).T @ rows(x), rows(dvalues).T @ rows(x)


def matmul(a, b, add=None):
    """``a @ b (+ add)`` over a's leading (row) axes."""
    a, b = _f64(a, b)
    out = a @ b
    return out if add is None else out + np.asarray(add, dtype=np.float64)


def matmul_tn(a, b):
    """``A^T B`` of the row matrices of a (..., m) and b (..., n): shape (m, n)."""
    a, b = _f64(a, b)
    return a.reshape(-1, a.shape[-1]).T @ b.reshape(-1, b.shape[-1])


def norm_stats(x, eps, center, scale):
    """LayerNorm's per-row (mean, rstd): mean 0 without centring, rstd 1 without scaling. A row
    holding an Inf or NaN has mean NaN when centring (torch's native_layer_norm says the same;
    the mean is only there to be passed to the backward, whose results are NaN there anyway)."""
    (x,) = _f64(x)
    mean = np.zeros(x.shape[:-1])
    if center:
        with np.errstate(invalid="ignore"):
            mean = np.where(np.isfinite(x).all(-1), x.mean(-1), np.nan)
    if not scale:
        return mean, np.ones(x.shape[:-1])
    centred = x - mean[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):  # eps = 0 on a constant row: rstd = inf
        return mean, 1.0 / np.sqrt((centred * centred).mean(-1) + eps)
