"""Linear attention (attention without softmax), causal or not, optionally normalised.

For q, k of shape (..., N, Dk) and v of shape (..., N, Dv) -- every leading index (batch,
heads) an independent problem, tokens are rows -- and j running over all tokens
(non-causal) or over j <= i (causal)::

    out_i = scale * sum_j (q_i . k_j) v_j
    out_i = out_i / (scale * sum_j (q_i . k_j) + eps)          if normalize

The N x N score matrix is never formed. Non-causal attention is ``out = scale * q (k^T v)``:
two small products per problem, the Dk x Dv one summed over a fixed partition of the rows.
Causal attention is a chunked scan (chunks of 64 rows): inside a chunk the masked
``(q k^T) v``, across chunks a running Dk x Dv state, so the scratch memory per problem is
O(Dk * Dv), never O(N^2) or O(N * Dk * Dv). The backward runs two scans: dq with the forward
running state (the sum of k_j v_j^T over earlier tokens, used transposed), dk and dv with a
reverse running state (the sum of q_i g_i^T over later tokens, g = dout or, normalised,
dout / denominator). Normalised causal backward keeps two numbers per token (denominator and
its gradient term), the only O(N) scratch.

Arithmetic is float32 for float32/float16/bfloat16 storage and float64 for float64. Results
are bitwise identical whatever the thread count: problems or, when there are fewer problems
than threads, fixed segments of rows are processed in parallel, and every sum over rows has a
fixed partition and order.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np

from .. import _array


def _inputs(be: _array.Backend, fn: str, q: Any, k: Any, v: Any):
    """q, k, v as arrays with consistent shapes and one dtype (errors name the problem)."""
    q = be.input(q, "q", fn, min_ndim=2)
    k = be.input(k, "k", fn, min_ndim=2)
    v = be.input(v, "v", fn, min_ndim=2)
    be.same_dtype({"q": q, "k": k, "v": v}, fn)
    qs, ks, vs = tuple(q.shape), tuple(k.shape), tuple(v.shape)
    if ks[-1] != qs[-1]:
        raise ValueError(f"{fn}: q and k must have the same feature size Dk (last axis), got q {qs} and k {ks}")
    if ks[-2] != qs[-2] or vs[-2] != qs[-2]:
        raise ValueError(
            f"{fn}: q, k and v must have the same number of tokens N (axis -2), got q {qs}, k {ks}, v {vs}"
        )
    if not (qs[:-2] == ks[:-2] == vs[:-2]):
        raise ValueError(
            f"{fn}: q, k and v must have the same leading (batch, head) shape, "
            f"got {qs[:-2]}, {ks[:-2]}, {vs[:-2]} (no broadcasting)"
        )
    return q, k, v


def _outputs(be: _array.Backend, q: Any, *dims: int):
    """New contiguous arrays of q's batch shape, token count and dtype, one per last-axis size
    in ``dims``, each with its [problems, n, dim] view."""
    batch, n, dtype = tuple(q.shape[:-2]), q.shape[-2], be.dtype(q)
    arrays = [be.empty(batch + (n, d), dtype) for d in dims]
    return [(a, a.reshape(math.prod(batch), n, d)) for a, d in zip(arrays, dims)]


def _matrices(be: _array.Backend, q: Any, k: Any, v: Any) -> dict:
    """The part of an attention kernel's description both attention ops share: q, k, v as
    [problems, n, d] with their strides, the sizes and the dtype code."""
    (q_mats, q_strides), (k_mats, k_strides), (v_mats, v_strides) = (be.matrices(a) for a in (q, k, v))
    return dict(
        q=q_mats, q_strides=q_strides, k=k_mats, k_strides=k_strides, v=v_mats, v_strides=v_strides,
        problems=q_mats.shape[0], n=q.shape[-2], key_dim=q.shape[-1], value_dim=v.shape[-1], dtype=be.code(q),
    )  # fmt: skip


def _backward_description(be: _array.Backend, fn: str, dout: Any, q: Any, k: Any, v: Any):
    """dout checked against the output's shape and cast to q's dtype, and new dq, dk, dv:
    ``((dq, dk, dv), the backward kernel's description without the op's own options)``."""
    dout = be.input(dout, "dout", fn, min_ndim=2)
    expected = tuple(q.shape[:-1]) + tuple(v.shape[-1:])
    if tuple(dout.shape) != expected:
        raise ValueError(f"{fn}: dout must have the output's shape {expected}, got {tuple(dout.shape)}")
    dout_mats, dout_strides = be.matrices(be.cast(dout, be.dtype(q)))
    (dq, dq_mats), (dk, dk_mats), (dv, dv_mats) = _outputs(be, q, q.shape[-1], k.shape[-1], v.shape[-1])
    description = dict(_matrices(be, q, k, v), dout=dout_mats, dout_strides=dout_strides, dq=dq_mats, dk=dk_mats,
                       dv=dv_mats)  # fmt: skip
    return (dq, dk, dv), description


def linear_attention(
    q: Any,
    k: Any,
    v: Any,
    *,
    causal: bool = False,
    normalize: bool = False,
    eps: float = 1e-6,
    scale: float = 1.0,
    n_threads: Optional[int] = None,
) -> np.ndarray:
    """Linear attention ``out_i = scale * sum_j (q_i . k_j) v_j`` over j (causal: j <= i).

    Args:
        q, k: array-likes of shape (..., N, Dk); v: (..., N, Dv). The leading axes (batch,
            heads) must be equal; 2-d inputs are one problem. One dtype for all three:
            float32, float64, float16 or bfloat16.
        causal: token i attends to tokens j <= i only.
        normalize: divide each row by ``scale * sum_j (q_i . k_j) + eps`` (over the same j);
            use positive features (e.g. elu(x) + 1) so that the denominator stays positive.
        eps: added to the denominator when normalising (>= 0; ignored otherwise).
        scale: multiplies the scores q_i . k_j.
        n_threads: threads for this call (default: ``pynorm.get_num_threads()``).

    Returns:
        out of shape (..., N, Dv) and the inputs' dtype.

    Example -- the attention of P1 (Wu, Zhang, Cao), ``V E E^T W E``, is non-causal,
    unnormalised linear attention with queries ``W E``, keys ``E`` and values ``V E``. The
    paper's tokens are the columns of E; pynorm's are rows, so pass transposes:

        >>> import numpy as np, pynorm
        >>> d, n = 3, 5
        >>> rng = np.random.default_rng(0)
        >>> E = rng.standard_normal((2 * d, n + 1))        # tokens are columns (paper)
        >>> W, V = rng.standard_normal((2, 2 * d, 2 * d))
        >>> X = E.T                                         # tokens are rows (pynorm)
        >>> out = pynorm.linear_attention(X @ W.T, X, X @ V.T)
        >>> bool(np.allclose(out.T, V @ E @ E.T @ W @ E))
        True
    """
    fn = "pynorm.linear_attention"
    be = _array.backend(fn, ("q", "k", "v"), (q, k, v), (scale,))
    q, k, v = _inputs(be, fn, q, k, v)
    eps = _array.eps_value(eps, fn)
    scale = _array.real(scale, "scale", fn)
    threads = _array.threads_value(n_threads, "n_threads", fn)
    ((out, out_mats),) = _outputs(be, q, v.shape[-1])
    be.kernels.linear_attention_forward(
        **_matrices(be, q, k, v), out=out_mats, scale=scale, eps=eps, causal=bool(causal), normalize=bool(normalize),
        threads=threads,
    )  # fmt: skip
    return out


def linear_attention_backward(
    dout: Any,
    q: Any,
    k: Any,
    v: Any,
    *,
    causal: bool = False,
    normalize: bool = False,
    eps: float = 1e-6,
    scale: float = 1.0,
    n_threads: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`linear_attention` with respect to q, k and v.

    Args:
        dout: the gradient of the loss with respect to out, shape (..., N, Dv) (converted to
            q's dtype).
        q, k, v, causal, normalize, eps, scale: as given to the forward (nothing else is
            saved: the backward recomputes what it needs).
        n_threads: threads for this call.

    Returns:
        ``(dq, dk, dv)`` with the shapes of q, k, v and their dtype.
    """
    fn = "pynorm.linear_attention_backward"
    be = _array.backend(fn, ("q", "k", "v", "dout"), (q, k, v, dout), (scale,))
    q, k, v = _inputs(be, fn, q, k, v)
    (dq, dk, dv), description = _backward_description(be, fn, dout, q, k, v)
    eps = _array.eps_value(eps, fn)
    scale = _array.real(scale, "scale", fn)
    threads = _array.threads_value(n_threads, "n_threads", fn)
    be.kernels.linear_attention_backward(
        **description, scale=scale, eps=eps, causal=bool(causal), normalize=bool(normalize), threads=threads
    )
    return dq, dk, dv
