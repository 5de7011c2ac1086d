"""pynorm.linear_attention and its backward against torch autograd of the direct (quadratic,
masked) formulation in float64, plus thread-count determinism, layouts, dtypes and bad inputs.
Tolerances: tests/tolerances.py."""

from __future__ import annotations

import numpy as np
import pytest
import reference
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import np_dtype
from tolerances import LINEAR_ATTENTION_NORMALIZED_FLOAT64, assert_close

import pynorm


def positive(x):
    """elu(x) + 1: the positive feature map used with normalize=True."""
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0)))


def make_inputs(rng, batch, n, dk, dv, normalize, dtype=np.float64):
    q = rng.standard_normal(batch + (n, dk))
    k = rng.standard_normal(batch + (n, dk))
    v = rng.standard_normal(batch + (n, dv))
    dout = rng.standard_normal(batch + (n, dv))
    if normalize:
        q, k = positive(q), positive(k)
    return tuple(np.asarray(x).astype(dtype) for x in (q, k, v, dout))


def run_pynorm(q, k, v, dout, causal, normalize, eps=1e-6, scale=1.0, n_threads=None):
    kw = dict(causal=causal, normalize=normalize, eps=eps, scale=scale, n_threads=n_threads)
    out = pynorm.linear_attention(q, k, v, **kw)
    dq, dk, dv = pynorm.linear_attention_backward(dout, q, k, v, **kw)
    return out, dq, dk, dv


def check_against_torch(q, k, v, dout, causal, normalize, eps=1e-6, scale=1.0):
    dtype_name = np.asarray(q).dtype.name
    got = run_pynorm(q, k, v, dout, causal, normalize, eps, scale)
    want = reference.linear_attention(q, k, v, dout, causal, normalize, eps, scale)
    tol = LINEAR_ATTENTION_NORMALIZED_FLOAT64 if normalize and dtype_name == "float64" else {}
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        assert g.dtype == np.asarray(q).dtype, name
        assert_close(g, w, dtype_name, name, **tol)


# (batch shape, N, Dk, Dv): one problem as 2-d input, N = 1, N not a multiple of the chunk
# (64), Dk != Dv, Dk = 1, 4-d input, several segments (N > 256) with fewer problems than
# threads (the within-problem parallel path).
SHAPES = [
    ((), 1, 4, 3),
    ((2,), 1, 1, 1),
    ((3,), 65, 8, 5),
    ((2, 3), 130, 1, 7),
    ((2,), 200, 33, 17),
    ((1,), 700, 16, 12),
]


@pytest.mark.parametrize("normalize", [False, True], ids=["plain", "normalized"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}x{s[2]}x{s[3]}")
def test_float64_matches_torch(rng, shape, causal, normalize):
    batch, n, dk, dv = shape
    q, k, v, dout = make_inputs(rng, batch, n, dk, dv, normalize)
    check_against_torch(q, k, v, dout, causal, normalize, scale=0.7)


def test_long_causal_sequence(rng):
    q, k, v, dout = make_inputs(rng, (1,), 4096, 16, 8, False)
    check_against_torch(q, k, v, dout, True, False, scale=0.25)


@pytest.mark.parametrize("normalize", [False, True], ids=["plain", "normalized"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_float32_matches_torch(rng, causal, normalize):
    q, k, v, dout = make_inputs(rng, (2, 2), 300, 32, 24, normalize, dtype=np.float32)
    check_against_torch(q, k, v, dout, causal, normalize, scale=0.125)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_16bit_storage(rng, dtype, causal):
    q, k, v, dout = make_inputs(rng, (2,), 130, 16, 8, False, dtype=np_dtype(dtype))
    check_against_torch(q, k, v, dout, causal, False, scale=0.25)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_non_contiguous_inputs(rng, causal):
    q, k, v, dout = reference.strided_attention_inputs(rng)
    check_against_torch(q, k, v, dout, causal, False)
    # the same numbers, contiguous: the same bits
    got = run_pynorm(q, k, v, dout, causal, False)
    contiguous = run_pynorm(*(np.ascontiguousarray(x) for x in (q, k, v, dout)), causal, False)
    for a, c in zip(got, contiguous):
        assert a.tobytes() == c.tobytes()


# (batch, N, Dk, Dv, dtype): many problems (parallel over problems) and one or two problems
# with many chunks (parallel inside a problem: segments), in both dtypes.
DETERMINISM_CASES = [
    ((5,), 300, 16, 16, np.float32),
    ((1,), 1100, 24, 20, np.float32),
    ((2,), 700, 8, 33, np.float64),
]


@pytest.mark.parametrize("normalize", [False, True], ids=["plain", "normalized"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("case", DETERMINISM_CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}x{c[3]}-{c[4].__name__}")
def test_bitwise_identical_for_any_thread_count(rng, case, causal, normalize):
    batch, n, dk, dv, dtype = case
    q, k, v, dout = make_inputs(rng, batch, n, dk, dv, normalize, dtype=dtype)
    results = [run_pynorm(q, k, v, dout, causal, normalize, n_threads=t) for t in (1, 2, 3)]
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.tobytes() == b.tobytes()


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple),
    n=st.integers(1, 150),
    dk=st.integers(1, 20),
    dv=st.integers(1, 20),
    causal=st.booleans(),
    normalize=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_hypothesis_shapes(batch, n, dk, dv, causal, normalize, seed):
    q, k, v, dout = make_inputs(np.random.default_rng(seed), batch, n, dk, dv, normalize)
    check_against_torch(q, k, v, dout, causal, normalize)


def test_paper_p1_attention_example():
    """P1's V E E^T W E: queries W E, keys E, values V E, tokens as rows (E transposed)."""
    d, n = 3, 5
    rng = np.random.default_rng(0)
    E = rng.standard_normal((2 * d, n + 1))
    W, V = rng.standard_normal((2, 2 * d, 2 * d))
    X = E.T
    out = pynorm.linear_attention(X @ W.T, X, X @ V.T)
    np.testing.assert_allclose(out.T, V @ E @ E.T @ W @ E, rtol=1e-12, atol=1e-12)


def test_torch_tensors_are_accepted(rng):
    torch = pytest.importorskip("torch")
    q, k, v, dout = make_inputs(rng, (2,), 10, 4, 3, False, dtype=np.float32)
    out = pynorm.linear_attention(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), causal=True)
    assert isinstance(out, np.ndarray)
    assert out.tobytes() == pynorm.linear_attention(q, k, v, causal=True).tobytes()


@pytest.mark.parametrize(
    "batch, n, dk, dv",
    [((2,), 0, 4, 3), ((0,), 5, 4, 3), ((), 0, 2, 2), ((2,), 7, 0, 3), ((2,), 7, 3, 0)],
)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_empty_sizes(rng, batch, n, dk, dv, causal):
    q, k, v, dout = make_inputs(rng, batch, n, dk, dv, False)
    out, dq, dk_, dv_ = run_pynorm(q, k, v, dout, causal, False)
    assert out.shape == batch + (n, dv)
    assert (dq.shape, dk_.shape, dv_.shape) == (q.shape, k.shape, v.shape)
    want = reference.linear_attention(q, k, v, dout, causal, False)
    for g, w in zip((out, dq, dk_, dv_), want):
        np.testing.assert_array_equal(g, w)


BAD_INPUTS = [
    # (q shape, k shape, v shape, message fragment of the ValueError)
    ((4, 3), (4, 5), (4, 2), "feature size Dk"),
    ((4, 3), (5, 3), (5, 2), "number of tokens N"),
    ((4, 3), (4, 3), (6, 2), "number of tokens N"),
    ((2, 4, 3), (3, 4, 3), (3, 4, 2), "leading"),
    ((2, 4, 3), (4, 3), (4, 2), "leading"),
    ((3,), (3,), (3,), "at least 2 dimension"),
]


@pytest.mark.parametrize("q_shape, k_shape, v_shape, message", BAD_INPUTS)
def test_bad_shapes(q_shape, k_shape, v_shape, message):
    reference.check_bad_attention_shapes(
        pynorm.linear_attention, pynorm.linear_attention_backward, q_shape, k_shape, v_shape, message
    )


def test_bad_dtypes():
    x = np.ones((4, 3))
    with pytest.raises(TypeError, match="dtype"):
        pynorm.linear_attention(x.astype(np.int64), x, x)
    with pytest.raises(TypeError, match="one dtype"):
        pynorm.linear_attention(x.astype(np.float32), x, x)
    with pytest.raises(TypeError, match="complex|dtype"):
        pynorm.linear_attention(x, x.astype(np.complex128), x)
    with pytest.raises(TypeError):
        pynorm.linear_attention("q", x, x)


def test_bad_dout_and_options():
    q = np.ones((2, 4, 3))
    with pytest.raises(ValueError, match="dout"):
        pynorm.linear_attention_backward(np.ones((2, 4, 5)), q, q, q)
    with pytest.raises(ValueError, match="eps"):
        pynorm.linear_attention(q, q, q, normalize=True, eps=-1.0)
    with pytest.raises(ValueError, match="n_threads"):
        pynorm.linear_attention(q, q, q, n_threads=0)
