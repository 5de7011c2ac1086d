"""Independent references: torch autograd on the textbook formulas, in float64.

Every op is written the way a user would write it in torch (F.layer_norm where torch has
it, the composite formula otherwise), run in float64 on the very values pynorm sees (16-bit
inputs are widened exactly), and differentiated by autograd. Also the inputs the op tests
share: row shapes, norm/DyT cases, attention inputs and bad attention shapes.
"""

import numpy as np
import pytest
import torch

try:
    import ml_dtypes

    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # the test extra installs it; without it bfloat16 cases are skipped
    BFLOAT16 = None

DTYPES = ["float64", "float32", "float16", "bfloat16"]


def np_dtype(name):
    """The NumPy dtype called ``name`` (skips the test when bfloat16 is unavailable)."""
    if name == "bfloat16":
        if BFLOAT16 is None:
            pytest.skip("ml_dtypes is not installed")
        return BFLOAT16
    return np.dtype(name)


torch.set_default_dtype(torch.float64)

#: dims 1-32: rows whose backward keeps the column partials in registers (one or two vectors,
#: whole or with a tail, at every SIMD level); 13 rows leave a group remainder
REGISTER_ROW_SHAPES = [(5, 1), (5, 3), (6, 7), (4, 8), (3, 9), (9, 16), (11, 24), (13, 32)]
#: no rows, one row, many short rows, a 3-d input
EDGE_ROW_SHAPES = [(0, 8), (1, 8), (300, 64), (2, 3, 9)]
AFFINE = ["none", "weight", "bias", "weight_bias"]  # "bias": the kernels pair it with a weight of ones


def make_case(rng, shape, dtype, affine, loc=0.0, spread=1.0):
    """x (``loc`` + ``spread`` * N(0, 1)), dy, weight, bias in ``dtype`` for a row-wise op
    (weight/bias None as ``affine`` says)."""
    dim = shape[-1]
    x = (loc + spread * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    weight = (1 + 0.5 * rng.standard_normal(dim)).astype(dtype) if affine in ("weight", "weight_bias") else None
    bias = rng.standard_normal(dim).astype(dtype) if affine in ("bias", "weight_bias") else None
    return x, dy, weight, bias


def to_torch(a):
    """float64 torch tensor (requires_grad) holding exactly the values of array a."""
    if a is None:
        return None
    return torch.tensor(np.array(a, dtype=np.float64), requires_grad=True)


def grads(y, dy, *inputs):
    """Gradients of sum(y * dy) with respect to each input (None for absent ones)."""
    present = [t for t in inputs if t is not None]
    got = iter(torch.autograd.grad(y, present, torch.tensor(np.array(dy, dtype=np.float64))))
    return [None if t is None else next(got).numpy() for t in inputs]


def layer_norm(x, weight, bias, eps, center, scale, dy):
    """Forward and gradients of the four LayerNorm variants; returns (y, dx, dweight, dbias)."""
    xt, wt, bt = to_torch(x), to_torch(weight), to_torch(bias)
    if center and scale:
        dim = xt.shape[-1]
        y = torch.nn.functional.layer_norm(xt, (dim,), wt, bt, eps)
    else:
        y = xt - xt.mean(-1, keepdim=True) if center else xt
        if scale:
            y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + eps)
        if wt is not None:
            y = y * wt
        if bt is not None:
            y = y + bt
    dx, dw, db = grads(y, dy, xt, wt, bt)
    return y.detach().numpy(), dx, dw, db


def dyt(x, alpha, weight, bias, dy):
    """DyT forward and gradients; returns (y, dx, dalpha, dweight, dbias)."""
    xt, wt, bt = to_torch(x), to_torch(weight), to_torch(bias)
    at = torch.tensor([float(alpha)], requires_grad=True)
    y = torch.tanh(at * xt)
    if wt is not None:
        y = y * wt
    if bt is not None:
        y = y + bt
    dx, da, dw, db = grads(y, dy, xt, at, wt, bt)
    return y.detach().numpy(), dx, da, dw, db


def linear_attention(q, k, v, dout, causal, normalize, eps=1e-6, scale=1.0):
    """Linear attention by its quadratic definition -- scores = scale q k^T, masked to j <= i
    when causal, times v, divided by the masked row sums + eps when normalising -- and its
    gradients; returns (out, dq, dk, dv)."""
    qt, kt, vt = to_torch(q), to_torch(k), to_torch(v)
    scores = scale * (qt @ kt.transpose(-1, -2))
    if causal:
        n = scores.shape[-1]
        scores = scores * torch.tril(torch.ones(n, n, dtype=torch.float64))
    out = scores @ vt
    if normalize:
        out = out / (scores.sum(-1, keepdim=True) + eps)
    dq, dk, dv = grads(out, dout, qt, kt, vt)
    return out.detach().numpy(), dq, dk, dv


def softmax_attention(q, k, v, dout, causal, scale=None):
    """Softmax attention by torch.nn.functional.scaled_dot_product_attention (float64, CPU)
    and its gradients; returns (out, dq, dk, dv)."""
    qt, kt, vt = to_torch(q), to_torch(k), to_torch(v)
    out = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, scale=scale)
    if out.numel() == 0:  # autograd of an empty output: zero gradients of the inputs' shapes
        return out.detach().numpy(), *(np.zeros(t.shape) for t in (qt, kt, vt))
    dq, dk, dv = grads(out, dout, qt, kt, vt)
    return out.detach().numpy(), dq, dk, dv


def cross_entropy(logits, labels, dloss):
    """Per-position cross-entropy by torch.nn.functional.cross_entropy(reduction="none") in
    float64, and its gradient for dloss; returns (loss, dlogits)."""
    x = to_torch(logits)
    classes = x.shape[-1]
    loss = torch.nn.functional.cross_entropy(
        x.reshape(-1, classes), torch.as_tensor(np.asarray(labels).reshape(-1)), reduction="none"
    ).reshape(x.shape[:-1])
    if loss.numel() == 0:
        return loss.detach().numpy(), np.zeros(x.shape)
    (dx,) = grads(loss, np.broadcast_to(np.asarray(dloss, np.float64), loss.shape), x)
    return loss.detach().numpy(), dx


def strided_attention_inputs(rng):
    """Attention inputs (batch 2, heads 3, 90 tokens, Dk 8, Dv 5) in awkward layouts: q a
    transposed view with strided rows and problems, k every other row, v and dout with
    non-contiguous last axes."""
    n, b, h, d = 90, 2, 3, 8
    base = rng.standard_normal((n, b, h, 2 * d))
    q = base[..., :d].transpose(1, 2, 0, 3)  # (b, h, n, d) view with strided rows and problems
    k = rng.standard_normal((b, h, 2 * n, d))[:, :, ::2]  # every other row
    v = rng.standard_normal((b, h, n, 2 * 5))[..., ::2]  # non-contiguous last axis (copied)
    dout = rng.standard_normal((b, h, d, n)).swapaxes(-1, -2)[..., :5]
    assert not (q.flags.c_contiguous or k.flags.c_contiguous or v.flags.c_contiguous)
    return q, k, v, dout


def check_bad_attention_shapes(forward, backward, q_shape, k_shape, v_shape, message):
    """``forward(q, k, v)`` and ``backward(dout, q, k, v)`` on arrays of ones of those shapes
    (dout of the output's shape) both raise a ValueError matching ``message``."""
    q, k, v = (np.ones(s) for s in (q_shape, k_shape, v_shape))
    with pytest.raises(ValueError, match=message):
        forward(q, k, v)
    dout = np.ones(q_shape[:-1] + v_shape[-1:])
    with pytest.raises(ValueError, match=message):
        backward(dout, q, k, v)
