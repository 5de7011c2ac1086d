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
from .._core_loader import core


def _inputs(fn: str, q: Any, k: Any, v: Any):
    """q, k, v as arrays with consistent shapes and one dtype (errors name the problem)."""
    q = _array.as_input(q, "q", fn, min_ndim=2)
    k = _array.as_input(k, "k", fn, min_ndim=2)
    v = _array.as_input(v, "v", fn, min_ndim=2)
    _array.same_dtype({"q": q, "k": k, "v": v}, fn)
    return _check_shapes(fn, q, k, v)


def _check_shapes(fn: str, q, k, v):
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"{fn}: q and k must have the same feature size Dk (last axis), got q {q.shape} and k {k.shape}"
        )
    if k.shape[-2] != q.shape[-2] or v.shape[-2] != q.shape[-2]:
        raise ValueError(
            f"{fn}: q, k and v must have the same number of tokens N (axis -2), "
            f"got q {q.shape}, k {k.shape}, v {v.shape}"
        )
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise ValueError(
            f"{fn}: q, k and v must have the same leading (batch, head) shape, "
            f"got {q.shape[:-2]}, {k.shape[:-2]}, {v.shape[:-2]} (no broadcasting)"
        )
    return q, k, v


def _gpu_inputs(gpu, fn, q, k, v):
    q, k, v = (gpu.input(a, name, 2) for a, name in ((q, "q"), (k, "k"), (v, "v")))
    dtypes = {name: gpu.dtype(a) for name, a in (("q", q), ("k", k), ("v", v))}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{name} {d}" for name, d in dtypes.items())
        raise TypeError(f"{fn}: inputs must share one dtype, got {listed}; convert them explicitly")
    return _check_shapes(fn, q, k, v)


def _strided(gpu, a):
    """(pointer, problem stride, row stride) of a (..., n, d) GPU array, and the array to keep alive."""
    mats, problem_stride, row_stride = gpu.matrices(a)
    return (gpu.ptr(mats), problem_stride, row_stride), mats


def _linear_attention_cuda(q, k, v, *, causal=False, normalize=False, eps=1e-6, scale=1.0, n_threads=None):
    fn = "pynorm.linear_attention"
    gpu = _array.Gpu(fn, {"q": q, "k": k, "v": v})
    q, k, v = _gpu_inputs(gpu, fn, q, k, v)
    eps = _array.eps_value(eps, fn)
    scale = gpu.scalar(scale, "scale")
    batch, n, dk, dv = tuple(q.shape[:-2]), q.shape[-2], q.shape[-1], v.shape[-1]
    out = gpu.empty(batch + (n, dv), gpu.dtype(q))
    (qs, q_keep), (ks, k_keep), (vs, v_keep) = (_strided(gpu, a) for a in (q, k, v))
    gpu.module.linear_attention_forward(
        qs, ks, vs, gpu.ptr(out), math.prod(batch), n, dk, dv, gpu.dtype_code(q), scale, eps, bool(causal),
        bool(normalize), gpu.device, gpu.stream,
    )  # fmt: skip
    return out


def _linear_attention_backward_cuda(dout, q, k, v, *, causal=False, normalize=False, eps=1e-6, scale=1.0,
                                    n_threads=None):
    fn = "pynorm.linear_attention_backward"
    gpu = _array.Gpu(fn, {"q": q, "k": k, "v": v, "dout": dout})
    q, k, v = _gpu_inputs(gpu, fn, q, k, v)
    dout = gpu.input(dout, "dout", 2)
    expected = tuple(q.shape[:-1]) + tuple(v.shape[-1:])
    if tuple(dout.shape) != expected:
        raise ValueError(f"{fn}: dout must have the output's shape {expected}, got {tuple(dout.shape)}")
    dout = gpu.astype(dout, gpu.dtype(q))
    eps = _array.eps_value(eps, fn)
    scale = gpu.scalar(scale, "scale")
    batch, n, dk, dv = tuple(q.shape[:-2]), q.shape[-2], q.shape[-1], v.shape[-1]
    dtype = gpu.dtype(q)
    dq, dk_, dv_ = gpu.empty(tuple(q.shape), dtype), gpu.empty(tuple(k.shape), dtype), gpu.empty(tuple(v.shape), dtype)
    strided = [_strided(gpu, a) for a in (dout, q, k, v)]
    gpu.module.linear_attention_backward(
        *(s for s, _ in strided), gpu.ptr(dq), gpu.ptr(dk_), gpu.ptr(dv_), math.prod(batch), n, dk, dv,
        gpu.dtype_code(q), scale, eps, bool(causal), bool(normalize), gpu.device, gpu.stream,
    )  # fmt: skip
    return dq, dk_, dv_


@_array.dispatch(_linear_attention_cuda)
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
    q, k, v = _inputs(fn, q, k, v)
    eps = _array.eps_value(eps, fn)
    scale = _array.scalar(scale, "scale", fn)
    out, out_mats = _array.matrices_output(q.shape[:-2], q.shape[-2], v.shape[-1], q.dtype)
    core().linear_attention_forward(
        _array.as_matrices(q), _array.as_matrices(k), _array.as_matrices(v), out_mats,
        _array.dtype_code(q.dtype), scale, eps, bool(causal), bool(normalize), _array.threads_value(n_threads, fn),
    )  # fmt: skip
    return out


@_array.dispatch(_linear_attention_backward_cuda)
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
    q, k, v = _inputs(fn, q, k, v)
    dout = _array.as_input(dout, "dout", fn, min_ndim=2)
    expected = q.shape[:-1] + v.shape[-1:]
    if dout.shape != expected:
        raise ValueError(f"{fn}: dout must have the output's shape {expected}, got {dout.shape}")
    dout = dout.astype(q.dtype, copy=False)
    eps = _array.eps_value(eps, fn)
    scale = _array.scalar(scale, "scale", fn)
    batch, n = q.shape[:-2], q.shape[-2]
    dq, dq_mats = _array.matrices_output(batch, n, q.shape[-1], q.dtype)
    dk, dk_mats = _array.matrices_output(batch, n, k.shape[-1], q.dtype)
    dv, dv_mats = _array.matrices_output(batch, n, v.shape[-1], q.dtype)
    core().linear_attention_backward(
        _array.as_matrices(dout), _array.as_matrices(q), _array.as_matrices(k), _array.as_matrices(v),
        dq_mats, dk_mats, dv_mats, _array.dtype_code(q.dtype), scale, eps, bool(causal), bool(normalize),
        _array.threads_value(n_threads, fn),
    )  # fmt: skip
    return dq, dk, dv
