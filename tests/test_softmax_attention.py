"""pynorm.softmax_attention and its backward against torch autograd of
F.scaled_dot_product_attention in float64 on the same values, plus the vector exp behind it,
thread-count determinism, layouts, dtypes, NaN/Inf and bad inputs. Tolerances:
tests/tolerances.py. Run the file with PYNORM_SIMD=avx2 and PYNORM_SIMD=baseline too (the exp
test visits every level itself)."""

from __future__ import annotations

import numpy as np
import pytest
import reference
from reference import np_dtype
from tolerances import assert_close

import pynorm
from pynorm._core_loader import core


def make_inputs(rng, batch, n, dk, dv, dtype=np.float64, scale=1.0):
    q, k = (scale * rng.standard_normal(batch + (n, dk)) for _ in range(2))
    v, dout = (rng.standard_normal(batch + (n, dv)) for _ in range(2))
    return tuple(np.asarray(x).astype(dtype) for x in (q, k, v, dout))


def run_pynorm(q, k, v, dout, causal, scale=None, n_threads=None):
    kw = dict(causal=causal, scale=scale, n_threads=n_threads)
    out = pynorm.softmax_attention(q, k, v, **kw)
    return (out,) + pynorm.softmax_attention_backward(dout, q, k, v, **kw)


def check_against_torch(q, k, v, dout, causal, scale=None):
    dtype_name = np.asarray(q).dtype.name
    got = run_pynorm(q, k, v, dout, causal, scale)
    want = reference.softmax_attention(q, k, v, dout, causal, scale)
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        assert g.dtype == np.asarray(q).dtype, name
        assert_close(g, w, dtype_name, name)


# (batch shape, N, head dim): 1-3 leading axes, N around the vector widths and the 64-row
# block, head dims off the vector width. Dv = Dk here; Dk != Dv below.
SHAPES = [
    (b, n, d)
    for b, n, d in [
        ((1,), 1, 1),
        ((2,), 2, 3),
        ((3,), 7, 8),
        ((2, 2), 50, 8),
        ((2,), 64, 16),
        ((1, 2, 1), 65, 33),
        ((1,), 300, 64),
        ((2,), 7, 64),
        ((2, 1), 65, 1),
        ((1,), 300, 3),
    ]
]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}x{s[2]}")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matches_torch(rng, shape, causal, dtype):
    batch, n, d = shape
    check_against_torch(*make_inputs(rng, batch, n, d, d, np.dtype(dtype)), causal)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_value_dim_and_scale(rng, causal):
    q, k, v, dout = make_inputs(rng, (2, 3), 65, 8, 5)
    check_against_torch(q, k, v, dout, causal, scale=0.3)
    check_against_torch(q, k, v, dout, causal, scale=0.0)  # uniform weights


def test_two_dimensional_input_is_one_problem(rng):
    q, k, v, dout = make_inputs(rng, (), 20, 6, 4)
    check_against_torch(q, k, v, dout, False)
    np.testing.assert_array_equal(
        pynorm.softmax_attention(q, k, v), pynorm.softmax_attention(q[None], k[None], v[None])[0]
    )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_16bit_storage(rng, dtype, causal):
    check_against_torch(*make_inputs(rng, (2,), 70, 16, 8, np_dtype(dtype)), causal)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_large_logits(rng, dtype, causal):
    """Scores in the hundreds: exp of them overflows (float32 beyond 88.7), the shifted softmax
    does not. Integer q and k make the scores exact in float32 too, so only the softmax's own
    rounding is judged."""
    q, k = (rng.integers(-12, 13, (2, 50, 8)).astype(dtype) for _ in range(2))
    v, dout = (rng.standard_normal((2, 50, 8)).astype(dtype) for _ in range(2))
    assert np.abs(q[0] @ k[0].T).max() > 200
    check_against_torch(q, k, v, dout, causal, scale=1.0)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_non_contiguous_inputs(rng, causal):
    q, k, v, dout = reference.strided_attention_inputs(rng)
    check_against_torch(q, k, v, dout, causal)
    got = run_pynorm(q, k, v, dout, causal)
    contiguous = run_pynorm(*(np.ascontiguousarray(x) for x in (q, k, v, dout)), causal)
    for a, c in zip(got, contiguous):
        assert a.tobytes() == c.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_bitwise_identical_for_any_thread_count(rng, dtype, causal):
    q, k, v, dout = make_inputs(rng, (40,), 65, 16, 16, dtype)
    one = run_pynorm(q, k, v, dout, causal, n_threads=1)
    two = run_pynorm(q, k, v, dout, causal, n_threads=2)
    for a, b in zip(one, two):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("batch, n", [((2,), 0), ((0,), 5), ((), 0), ((0, 3), 0)])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_empty_sizes(rng, batch, n, causal):
    q, k, v, dout = make_inputs(rng, batch, n, 4, 3)
    got = run_pynorm(q, k, v, dout, causal)
    assert tuple(g.shape for g in got) == (v.shape, q.shape, k.shape, v.shape)
    for g, w in zip(got, reference.softmax_attention(q, k, v, dout, causal)):
        np.testing.assert_array_equal(g, w)


def test_out_argument(rng):
    q, k, v, _ = make_inputs(rng, (3,), 10, 4, 4)
    want = pynorm.softmax_attention(q, k, v)
    out = np.empty_like(v)
    assert pynorm.softmax_attention(q, k, v, out=out) is out
    np.testing.assert_array_equal(out, want)
    strided = np.empty((3, 10, 8))[..., ::2]
    pynorm.softmax_attention(q, k, v, out=strided)
    np.testing.assert_array_equal(strided, want)
    q2 = q.copy()  # in place over q (same shape): each problem's q is read before its out is written
    pynorm.softmax_attention(q2, k, v, out=q2)
    np.testing.assert_array_equal(q2, want)
    qk = np.concatenate([q, k], axis=1)  # out partly overlapping k: computed apart, then copied
    pynorm.softmax_attention(qk[:, :10], qk[:, 10:], v, out=qk[:, 5:15])
    np.testing.assert_array_equal(qk[:, 5:15], want)


def test_torch_tensors_are_accepted(rng):
    torch = pytest.importorskip("torch")
    q, k, v, dout = make_inputs(rng, (2,), 9, 4, 4)
    got = pynorm.softmax_attention(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), causal=True)
    np.testing.assert_array_equal(got, pynorm.softmax_attention(q, k, v, causal=True))


# ------------------------------------------------------------------ NaN and Inf
def test_nan_and_inf_propagate_like_torch(rng):
    q, k, v, dout = make_inputs(rng, (2,), 12, 5, 5)
    q[0, 11, 1] = np.nan  # the last query row NaN (it attends to every key, masked or not)
    # Infinities at token 0, which no causal mask hides: torch's causal path lets a masked +inf
    # score reach its row (NaN), pynorm's masked scores never do. Key 0 scores +-inf against
    # every query: NaN rows where +inf - inf, the key dropped where -inf (causal row 0: all -inf,
    # weights 0 as in torch).
    k[1, 0, 0] = np.inf
    v[1, 0, 4] = -np.inf
    for causal in (False, True):
        got = run_pynorm(q, k, v, dout, causal)
        want = reference.softmax_attention(q, k, v, dout, causal)
        for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
            if causal:  # torch's masked probabilities of a NaN row are NaN, pynorm's exactly 0
                assert not (np.isnan(g) & ~np.isnan(w)).any(), (causal, name)
            else:
                assert np.array_equal(np.isnan(g), np.isnan(w)), (causal, name)
            finite = np.isfinite(w)
            assert np.array_equal(finite, np.isfinite(g) & ~np.isnan(w)), (causal, name)
            assert_close(g[finite], w[finite], "float64", name)


def test_nan_query_does_not_reach_masked_keys(rng):
    """A NaN query makes its output row and the gradients of the values it attends to NaN; under
    the causal mask the later values' gradients stay finite (torch's masked softmax spreads the
    NaN to them too: its masked probabilities are NaN). The keys' gradients dK = dS^T Q take
    0 * NaN from the query itself, so they are not checked here."""
    q, k, v, dout = make_inputs(rng, (1,), 10, 3, 4)
    q[0, 3, 1] = np.nan
    out, dq, dk, dv = run_pynorm(q, k, v, dout, True)
    assert np.isnan(out[0, 3]).all() and np.isfinite(np.delete(out[0], 3, 0)).all()
    assert np.isnan(dv[0, :4]).all() and np.isfinite(dv[0, 4:]).all()
    clean = q.copy()
    clean[0, 3] = 0  # the other rows' outputs do not depend on query 3
    want = run_pynorm(clean, k, v, dout, True)
    np.testing.assert_array_equal(np.delete(out[0], 3, 0), np.delete(want[0][0], 3, 0))
    np.testing.assert_array_equal(dv[0, 4:], want[3][0, 4:])


def test_masked_and_all_masked_rows():
    """exp(-inf) is exactly 0: a -inf score drops its key; a row of -inf scores gets weights 0
    (torch's scaled_dot_product_attention; its explicit softmax form gives NaN)."""
    q = np.array([[[1.0], [1.0]]])
    k = np.array([[[-np.inf], [0.0]]])
    v = np.array([[[5.0], [7.0]]])
    got = pynorm.softmax_attention(q, k, v, scale=1.0)
    np.testing.assert_array_equal(got, [[[7.0], [7.0]]])
    causal = run_pynorm(q, k, v, np.ones_like(v), True, 1.0)
    np.testing.assert_array_equal(causal[0], [[[0.0], [7.0]]])
    for g, w in zip(causal, reference.softmax_attention(q, k, v, np.ones_like(v), True, 1.0)):
        np.testing.assert_array_equal(g, w)


# ------------------------------------------------------------------ the vector exp
def exp_through_softmax(x, dtype):
    """exp(x) as the kernel computes it, for finite x <= 0 with 1 + exp(x) == 1: problem i has
    the queries [x_i, 0] and the keys [1, 0], so its first row's scores are [x_i, 0], its
    weights [exp(x_i), 1] / 1, and with the values [1, 0] out = exp(x_i) * 1 + 1 * 0 exactly."""
    q = np.stack([x, np.zeros_like(x)], axis=-1).astype(dtype)[..., None]
    k = v = np.broadcast_to(np.array([[1.0], [0.0]], dtype=dtype), q.shape)
    return pynorm.softmax_attention(q, k, v, scale=1.0)[:, 0, 0]


def each_simd_level():
    original = core().simd_level()
    try:
        for level in core().supported_simd_levels():
            core().set_simd_level(level)
            yield level
    finally:
        core().set_simd_level(original)


@pytest.mark.parametrize(
    "dtype, lo, hi, subnormal_lo",
    [
        (np.float32, -87.0, -17.0, -103.9),
        (np.float64, -708.0, -37.0, -745.0),
    ],
)
def test_exp_is_accurate_at_every_simd_level(dtype, lo, hi, subnormal_lo):
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(lo, hi, 100_000), np.linspace(lo, hi, 20_001)]).astype(dtype)
    exact = np.exp(x.astype(np.longdouble))
    tiny = np.finfo(dtype).tiny
    sub = np.linspace(subnormal_lo, lo, 5_001).astype(dtype)
    for level in each_simd_level():
        got = exp_through_softmax(x, dtype)
        ulps = np.abs(got.astype(np.longdouble) - exact) / np.spacing(got)
        assert ulps.max() <= 2.0, (level, float(ulps.max()), x[np.argmax(ulps)])
        # subnormal results: within 2 ulp of the result, or of the smallest subnormal
        got_sub = exp_through_softmax(sub, dtype).astype(np.longdouble)
        err = np.abs(got_sub - np.exp(sub.astype(np.longdouble)))
        bound = 2 * np.maximum(np.spacing(np.maximum(got_sub, tiny).astype(dtype)), np.spacing(dtype(0)))
        assert (err <= bound).all(), level
        edge = exp_through_softmax(np.array([2 * subnormal_lo, -1e30, -np.finfo(dtype).max]), dtype)
        np.testing.assert_array_equal(edge, [0, 0, 0])


def test_exp_broken_would_fail():
    """The exp test's premise: out_i is exp(x_i) itself, not merely close (checked in float64
    against np.exp to the last bits)."""
    x = np.array([-40.0, -50.5, -700.25])
    np.testing.assert_allclose(exp_through_softmax(x, np.float64), np.exp(x), rtol=4e-16)


# ------------------------------------------------------------------ bad input
BAD_INPUTS = [
    ((4, 3), (4, 5), (4, 2), "feature size Dk"),
    ((4, 3), (5, 3), (5, 2), "number of tokens N"),
    ((4, 3), (4, 3), (6, 2), "number of tokens N"),
    ((2, 4, 3), (3, 4, 3), (3, 4, 2), "leading"),
    ((3,), (3,), (3,), "at least 2 dimension"),
    ((4, 0), (4, 0), (4, 2), "q must have a head dimension"),
    ((4, 3), (4, 3), (4, 0), "v must have a head dimension"),
]


@pytest.mark.parametrize("q_shape, k_shape, v_shape, message", BAD_INPUTS)
def test_bad_shapes(q_shape, k_shape, v_shape, message):
    reference.check_bad_attention_shapes(
        pynorm.softmax_attention, pynorm.softmax_attention_backward, q_shape, k_shape, v_shape, message
    )


def test_bad_dtypes_and_options():
    x = np.ones((2, 4, 3))
    with pytest.raises(TypeError, match="dtype"):
        pynorm.softmax_attention(x.astype(np.int64), x, x)
    with pytest.raises(TypeError, match="one dtype"):
        pynorm.softmax_attention(x.astype(np.float32), x, x)
    with pytest.raises(ValueError, match="dout"):
        pynorm.softmax_attention_backward(np.ones((2, 4, 5)), x, x, x)
    with pytest.raises(TypeError, match="scale"):
        pynorm.softmax_attention(x, x, x, scale="1")
    with pytest.raises(ValueError, match="n_threads"):
        pynorm.softmax_attention(x, x, x, n_threads=0)
    with pytest.raises(ValueError, match="out"):
        pynorm.softmax_attention(x, x, x, out=np.ones((2, 4, 4)))
    with pytest.raises(ValueError, match="read-only"):
        ro = np.ones((2, 4, 3))
        ro.flags.writeable = False
        pynorm.softmax_attention(x, x, x, out=ro)
