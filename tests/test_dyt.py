"""DyT = weight * tanh(alpha * x) + bias against torch autograd (float64)."""

import numpy as np
import pytest
import reference
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import AFFINE, DTYPES, EDGE_ROW_SHAPES, REGISTER_ROW_SHAPES, make_case, np_dtype
from tolerances import assert_close

import pynorm

SHAPES = [*REGISTER_ROW_SHAPES, (17, 1023), (2, 65536), (9, 3001), (11, 5000), *EDGE_ROW_SHAPES]


def check_against_reference(x, dy, alpha, weight, bias, dtype_name):
    y = pynorm.dyt(x, alpha, weight, bias)
    dx, dalpha, dweight, dbias = pynorm.dyt_backward(dy, x, alpha, weight, bias)
    ref_y, ref_dx, ref_da, ref_dw, ref_db = reference.dyt(x, alpha, weight, bias, dy)
    assert y.dtype == x.dtype and dx.dtype == x.dtype and dalpha.shape == (1,)
    assert_close(y, ref_y, dtype_name, "y")
    # torch's s = 1 - tanh^2 has an absolute error ~eps (it cancels in saturation, where
    # pynorm's form does not), so dx = dy * weight * alpha * s is judged against |dy w alpha|
    g = np.abs(np.asarray(dy, np.float64))
    if weight is not None:
        g = g * np.abs(np.asarray(weight, np.float64))
    assert_close(dx, ref_dx, dtype_name, "dx", scale=abs(alpha) * np.max(g, initial=0.0))
    # dalpha sums dy * weight * s * x over every element: judge it against the size of the terms
    terms = g * np.abs(np.asarray(x, np.float64))
    assert_close(dalpha, ref_da, dtype_name, "dalpha", scale=terms.sum())
    assert (dweight is None) == (weight is None) and (dbias is None) == (bias is None)
    if weight is not None:
        assert_close(
            dweight,
            ref_dw,
            dtype_name,
            "dweight",
            scale=np.abs(np.asarray(dy, np.float64)).reshape(-1, x.shape[-1]).sum(0).max(initial=0),
        )
    if bias is not None:
        assert_close(
            dbias,
            ref_db,
            dtype_name,
            "dbias",
            scale=np.abs(np.asarray(dy, np.float64)).reshape(-1, x.shape[-1]).sum(0).max(initial=0),
        )
    return dx, dalpha


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("affine", AFFINE)
@pytest.mark.parametrize("alpha", [0.5, 1.7, -0.3])
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_matches_torch(rng, shape, affine, alpha, dtype_name):
    x, dy, weight, bias = make_case(rng, shape, np_dtype(dtype_name), affine)
    check_against_reference(x, dy, alpha, weight, bias, dtype_name)


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("spread", [1e-30, 1e-6, 1e-2, 3.0, 30.0, 1e4])
def test_small_and_saturated_arguments(rng, dtype_name, spread):
    """tanh near 0 (relative accuracy of the odd function) and in saturation, where
    1 - tanh^2 underflows in the textbook formula."""
    dtype = np_dtype(dtype_name)
    if dtype.itemsize == 2 and spread < 1e-6:
        spread = 1e-4 if dtype_name == "float16" else 1e-30  # float16 has no 1e-30
    x, dy, weight, bias = make_case(rng, (16, 100), dtype, "weight_bias", spread=spread)
    check_against_reference(x, dy, 0.8, weight, bias, dtype_name)


def test_tanh_is_accurate_to_a_few_ulp():
    x = np.concatenate([np.logspace(-40, 1.5, 4000), -np.logspace(-40, 1.5, 4000), [0.0, -0.0]])
    for dtype, ulps in [(np.float64, 4), (np.float32, 4)]:
        xd = x.astype(dtype)
        got = pynorm.dyt(xd, 1.0).astype(np.float64)
        exact = np.tanh(xd.astype(np.float64))
        rel = np.abs(got - exact) / np.maximum(np.abs(exact), np.finfo(dtype).tiny)
        assert rel.max() <= ulps * np.finfo(dtype).eps, (dtype, rel.max())
    assert np.signbit(pynorm.dyt(np.array([-0.0]), 1.0)[0])
    for dtype in (np.float64, np.float32):  # never beyond +-1 (float32's rational form is clipped)
        dense = np.linspace(-12, 12, 400001).astype(dtype)
        assert np.abs(pynorm.dyt(dense, 1.0)).max() <= 1


def test_alpha_times_dalpha_equals_sum_x_dx(rng):
    x, dy, weight, bias = make_case(rng, (50, 77), np.float64, "weight_bias")
    dx, dalpha, _, _ = pynorm.dyt_backward(dy, x, 1.3, weight, bias)
    assert np.isclose(1.3 * dalpha[0], np.sum(x * dx), rtol=1e-12)


def test_alpha_forms():
    x = np.linspace(-2, 2, 12).reshape(3, 4)
    expected = np.tanh(0.7 * x)
    for alpha in [0.7, np.float32(0.7), np.array([0.7]), np.array(0.7), [0.7]]:
        assert_close(pynorm.dyt(x, alpha), expected, "float32" if isinstance(alpha, np.float32) else "float64")


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
def test_nan_and_inf_match_torch_and_stay_elementwise(rng, dtype_name):
    x, dy, weight, bias = make_case(rng, (4, 9), np.dtype(dtype_name), "weight_bias")
    x[1, 2], x[2, 5], x[3, 0] = np.nan, np.inf, -np.inf
    y = pynorm.dyt(x, 0.9, weight, bias)
    dx, dalpha, dweight, dbias = pynorm.dyt_backward(dy, x, 0.9, weight, bias)
    ref_y, ref_dx, ref_da, ref_dw, ref_db = reference.dyt(x, 0.9, weight, bias, dy)
    assert_close(y, ref_y, dtype_name, "y")
    assert_close(dx, ref_dx, dtype_name, "dx")
    assert_close(dweight, ref_dw, dtype_name, "dweight")
    assert dx[2, 5] == 0 and dx[3, 0] == 0 and y[2, 5] == weight[5] + bias[5]  # tanh(+-inf) is exactly +-1
    assert np.isnan(dalpha[0]) and np.isnan(ref_da[0])  # 0 * inf in torch, and here
    assert np.isfinite(y[0]).all() and np.isfinite(dx[0]).all()


def test_non_contiguous_and_torch_inputs(rng):
    import torch

    base = rng.standard_normal((30, 40))
    dy = rng.standard_normal((40, 30))
    x = base.T
    y = pynorm.dyt(x, 0.5)
    dx, dalpha, _, _ = pynorm.dyt_backward(dy, x, 0.5)
    ref_y, ref_dx, ref_da, _, _ = reference.dyt(x, 0.5, None, None, dy)
    assert_close(y, ref_y, "float64")
    assert_close(dx, ref_dx, "float64")
    assert_close(dalpha, ref_da, "float64")
    t = torch.tensor(base, dtype=torch.float32)
    assert np.array_equal(pynorm.dyt(t[:, ::2], torch.tensor([0.5])), pynorm.dyt(base.astype(np.float32)[:, ::2], 0.5))


@settings(max_examples=50, deadline=None)
@given(
    rows=st.integers(0, 10),
    dim=st.integers(1, 200),
    alpha=st.floats(-5, 5),
    log_spread=st.floats(-4, 3),
    affine=st.sampled_from(AFFINE),
    seed=st.integers(0, 2**31),
)
def test_hypothesis_float64(rows, dim, alpha, log_spread, affine, seed):
    rng = np.random.default_rng(seed)
    x, dy, weight, bias = make_case(rng, (rows, dim), np.float64, affine, spread=10.0**log_spread)
    check_against_reference(x, dy, alpha, weight, bias, "float64")


def test_long_rows_with_a_row_stride_go_in_groups_unchanged(rng):
    """Rows over 8 KiB go eight at a time (dyt.cpp); in place with a row stride larger than
    dim (a column slice), every row must still match the reference."""
    base = rng.standard_normal((9, 3100))
    dy = rng.standard_normal((9, 3001))
    w, b = rng.standard_normal(3001), rng.standard_normal(3001)
    x = base[:, :3001]
    ref_y, ref_dx, ref_da, ref_dw, ref_db = reference.dyt(x, 0.7, w, b, dy)
    assert_close(pynorm.dyt(x, 0.7, w, b), ref_y, "float64")
    for got, want in zip(pynorm.dyt_backward(dy, x, 0.7, w, b), (ref_dx, ref_da, ref_dw, ref_db)):
        assert_close(got, want, "float64")
