"""pynorm.merged_linear_attention (P1's attention with its projections fused in) and its
backward against torch autograd of ``scale * (x W^T) (x^T (x V^T)) (+ x)`` in float64, plus
dtypes, layouts, thread-count determinism and bad inputs. Tolerances: tests/tolerances.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import np_dtype
from tolerances import assert_close

import pynorm


def reference(x, W, V, dout, scale, residual):
    """(out, dx, dW, dV) by torch autograd in float64 on the exact stored values."""
    tx, tW, tV = (torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True) for a in (x, W, V))
    out = scale * (tx @ tW.T) @ (tx.transpose(-1, -2) @ (tx @ tV.T))
    if residual:
        out = out + tx
    out.backward(torch.tensor(np.asarray(dout, dtype=np.float64)))
    return out.detach().numpy(), tx.grad.numpy(), tW.grad.numpy(), tV.grad.numpy()


def inputs(rng, shape, dtype=np.float64):
    d = shape[-1]
    x, dout = rng.standard_normal(shape), rng.standard_normal(shape)
    W, V = 0.5 * rng.standard_normal((d, d)), 0.5 * rng.standard_normal((d, d))
    return tuple(a.astype(dtype) for a in (x, W, V, dout))


def check(x, W, V, dout, scale, residual, dtype_name="float64", **kw):
    out = pynorm.merged_linear_attention(x, W, V, scale=scale, residual=residual, **kw)
    grads = pynorm.merged_linear_attention_backward(dout, x, W, V, scale=scale, residual=residual, **kw)
    for name, got, want in zip(("out", "dx", "dW", "dV"), (out,) + grads, reference(x, W, V, dout, scale, residual)):
        assert got.dtype == np.asarray(x).dtype, name
        assert_close(got, want, dtype_name, name)


# (batch..., N, d): one token, d = 1, d not a multiple of any vector width, 2-d input (one
# problem), 4-d input, N above the linear-attention chunk (64), the trainer's shape.
SHAPES = [(1, 1, 1), (3, 5, 7), (4, 9), (2, 3, 6, 5), (2, 70, 9), (128, 33, 32), (3, 17, 40)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("residual", [False, True])
def test_against_torch_float64(shape, residual):
    check(*inputs(np.random.default_rng(sum(shape)), shape), scale=0.7, residual=residual)


def test_equals_linear_attention_of_the_projections():
    x, W, V, _ = inputs(np.random.default_rng(0), (4, 12, 8))
    want = pynorm.linear_attention(x @ W.T, x, x @ V.T, scale=0.5)
    assert_close(pynorm.merged_linear_attention(x, W, V, scale=0.5), want, "float64", "out")


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_dtypes(dtype):
    x, W, V, dout = inputs(np.random.default_rng(1), (6, 11, 16), np_dtype(dtype))
    check(x, W, V, dout, scale=0.25, residual=True, dtype_name=dtype)


@pytest.mark.parametrize("shape", [(0, 4, 3), (4, 0, 3)])
def test_empty(shape):
    x, W, V, dout = inputs(np.random.default_rng(2), shape)
    assert pynorm.merged_linear_attention(x, W, V).shape == shape
    dx, dW, dV = pynorm.merged_linear_attention_backward(dout, x, W, V)
    assert dx.shape == shape and np.array_equal(dW, np.zeros((3, 3))) and np.array_equal(dV, np.zeros((3, 3)))


def test_non_contiguous_inputs():
    rng = np.random.default_rng(3)
    big = rng.standard_normal((5, 20, 30))
    x = big[:, ::2, 3:15]  # strided rows and problems
    dout = big[:, 1::2, 10:22]
    W = rng.standard_normal((12, 12)).T  # a transposed (Fortran-ordered) weight
    V = rng.standard_normal((12, 12))
    check(x, W, V, dout, scale=1.0, residual=True)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bitwise_same_for_any_thread_count(dtype):
    x, W, V, dout = inputs(np.random.default_rng(4), (300, 33, 32), np.dtype(dtype))
    runs = [
        (pynorm.merged_linear_attention(x, W, V, residual=True, n_threads=t),)
        + pynorm.merged_linear_attention_backward(dout, x, W, V, residual=True, n_threads=t)
        for t in (1, 2, 3)
    ]
    for run in runs[1:]:
        for got, first in zip(run, runs[0]):
            assert np.array_equal(got, first)


def test_nan_stays_in_its_problem():
    x, W, V, dout = inputs(np.random.default_rng(5), (4, 6, 5))
    x[2, 3, 1] = np.nan
    out = pynorm.merged_linear_attention(x, W, V)
    assert np.isnan(out[2]).all() and np.isfinite(np.delete(out, 2, axis=0)).all()


def test_bad_inputs():
    x, W, V, dout = inputs(np.random.default_rng(6), (2, 3, 4))
    with pytest.raises(ValueError, match="W must have shape"):
        pynorm.merged_linear_attention(x, W[:3], V)
    with pytest.raises(ValueError, match="V must have shape"):
        pynorm.merged_linear_attention_backward(dout, x, W, np.ones(4))
    with pytest.raises(ValueError, match="dout has shape"):
        pynorm.merged_linear_attention_backward(dout[:1], x, W, V)
    with pytest.raises(ValueError, match="at least 2 dimension"):
        pynorm.merged_linear_attention(x[0, 0], W, V)
    with pytest.raises(TypeError):
        pynorm.merged_linear_attention("x", W, V)
    with pytest.raises(TypeError, match="dtype int64"):
        pynorm.merged_linear_attention(np.ones((2, 3, 4), dtype=np.int64), W, V)
    with pytest.raises(ValueError, match="n_threads"):
        pynorm.merged_linear_attention(x, W, V, n_threads=-1)
