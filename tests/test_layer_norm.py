"""LayerNorm, its projection/scaling halves and RMSNorm against torch autograd (float64)."""

import numpy as np
import pytest
import reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import AFFINE, DTYPES, EDGE_ROW_SHAPES, REGISTER_ROW_SHAPES, make_case, np_dtype
from tolerances import UNIT_ROUNDOFF, assert_close

import pynorm

VARIANTS = {  # name: (center, scale)
    "layer_norm": (True, True),
    "projection": (True, False),
    "scaling": (False, True),
    "affine_only": (False, False),
}
SHAPES = [*REGISTER_ROW_SHAPES, (17, 1023), (6, 3001), (2, 65536), *EDGE_ROW_SHAPES]


def check_single_centred_element(y, dx, dweight, dbias, dy, bias):
    """Centring a row of one element leaves exactly 0, whatever torch's rounding noise says."""
    assert np.array_equal(y, np.broadcast_to(bias if bias is not None else 0, y.shape).astype(y.dtype))
    assert not dx.any() and (dweight is None or not dweight.any())
    if dbias is not None:
        assert_close(dbias, np.asarray(dy, np.float64).reshape(-1, 1).sum(0), y.dtype.name, "dbias")


def check_against_reference(x, dy, weight, bias, eps, center, scale, dtype_name, tol=None):
    y, mean, rstd = pynorm.layer_norm(x, weight, bias, eps, center=center, scale=scale, return_stats=True)
    dx, dweight, dbias = pynorm.layer_norm_backward(
        dy, x, weight, bias, eps, center=center, scale=scale, mean=mean, rstd=rstd
    )
    if (
        center and x.shape[-1] == 1 and not (scale and eps == 0)
    ):  # x - mean(x) is exactly 0: so are y - bias, dx, dweight
        check_single_centred_element(y, dx, dweight, dbias, dy, bias)
        return
    ref_y, ref_dx, ref_dw, ref_db = reference.layer_norm(x, weight, bias, eps, center, scale, dy)
    tol = tol or {}
    assert y.dtype == x.dtype and y.shape == x.shape and dx.dtype == x.dtype
    assert_close(y, ref_y, dtype_name, "y", **tol)
    # dx = rstd * (g - mean(g) - xhat * mean(g xhat)): its terms are of size |g| * rstd
    g = np.abs(np.asarray(dy, np.float64)) * (1.0 if weight is None else np.abs(np.asarray(weight, np.float64)))
    terms = np.max(g, initial=0.0) * np.max(rstd[np.isfinite(rstd)], initial=1.0)
    assert_close(dx, ref_dx, dtype_name, "dx", scale=terms, **tol)
    assert (dweight is None) == (weight is None) and (dbias is None) == (bias is None)
    if weight is not None:
        assert_close(dweight, ref_dw, dtype_name, "dweight", **tol)
    if bias is not None:
        assert_close(dbias, ref_db, dtype_name, "dbias", **tol)
    return y, dx, dweight, dbias


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("affine", AFFINE)
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_matches_torch(rng, shape, affine, variant, dtype_name):
    center, scale = VARIANTS[variant]
    x, dy, weight, bias = make_case(rng, shape, np_dtype(dtype_name), affine)
    check_against_reference(x, dy, weight, bias, 1e-5, center, scale, dtype_name)


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_statistics_recomputed_when_not_given(rng, dtype_name):
    x, dy, weight, bias = make_case(rng, (33, 40), np_dtype(dtype_name), "weight_bias")
    _, mean, rstd = pynorm.layer_norm(x, weight, bias, return_stats=True)
    with_stats = pynorm.layer_norm_backward(dy, x, weight, bias, mean=mean, rstd=rstd)
    without = pynorm.layer_norm_backward(dy, x, weight, bias)
    for a, b in zip(with_stats, without):
        assert np.array_equal(a, b)
    assert mean.shape == (33,) and mean.dtype == (np.float64 if dtype_name == "float64" else np.float32)


@pytest.mark.parametrize("dim", [32, 1023])
@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
@pytest.mark.parametrize("variant", ["layer_norm", "projection"])
def test_large_mean_is_numerically_sound(rng, dtype_name, variant, dim):
    """Rows with mean 1e4 and spread 1: E[x^2] - E[x]^2 would lose every digit in float32.
    The achievable accuracy is set by the conditioning |mean| / spread: the rounding of x
    and of the mean itself (~ulp(1e4)) is amplified by rstd ~ 1."""
    center, scale = VARIANTS[variant]
    x, dy, weight, bias = make_case(rng, (64, dim), np_dtype(dtype_name), "weight_bias", loc=1e4)
    u = UNIT_ROUNDOFF[dtype_name]
    bound = 64 * u * (1 + 1e4)
    check_against_reference(x, dy, weight, bias, 1e-5, center, scale, dtype_name, tol=dict(rtol=bound, atol=bound))


SCALES = {"float64": [1e-150, 1e-8, 1e8, 1e150], "float32": [1e-15, 1e-4, 1e4, 1e15], "float16": [1e-2, 1e2]}


@pytest.mark.parametrize(
    "dtype_name,spread", [(d, s) for d, scales in SCALES.items() for s in scales], ids=lambda v: str(v)
)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_tiny_and_huge_scales(rng, dtype_name, spread, variant):
    center, scale = VARIANTS[variant]
    x, dy, weight, bias = make_case(rng, (20, 300), np_dtype(dtype_name), "weight_bias", spread=spread)
    check_against_reference(x, dy, weight, bias, 1e-5, center, scale, dtype_name)


def test_rms_norm_is_the_scaling_half(rng):
    x, dy, weight, _ = make_case(rng, (9, 50), np.float64, "weight")
    y, rstd = pynorm.rms_norm(x, weight, eps=1e-6, return_stats=True)
    y2, _, rstd2 = pynorm.layer_norm(x, weight, None, 1e-6, center=False, return_stats=True)
    assert np.array_equal(y, y2) and np.array_equal(rstd, rstd2)
    dx, dweight = pynorm.rms_norm_backward(dy, x, weight, eps=1e-6, rstd=rstd)
    dx2, dweight2, _ = pynorm.layer_norm_backward(dy, x, weight, None, 1e-6, center=False)
    assert np.array_equal(dx, dx2) and np.array_equal(dweight, dweight2)
    ref = x / np.sqrt(np.mean(x**2, -1, keepdims=True) + 1e-6) * weight
    assert_close(y, ref, "float64")


def test_unit_l2_normalisation_of_p1(rng):
    """P1's token normalisation x / ||x|| is rms_norm(x, eps=0) / sqrt(dim)."""
    x = rng.standard_normal((7, 16))
    y = pynorm.rms_norm(x, eps=0.0) / np.sqrt(16)
    assert_close(y, x / np.linalg.norm(x, axis=-1, keepdims=True), "float64")


def test_non_contiguous_inputs(rng):
    base = rng.standard_normal((40, 30, 20))
    dy_base = rng.standard_normal((40, 30, 20))
    views = {
        "last_axis_strided": lambda a: a[:, :, ::2],
        "rows_strided": lambda a: a[::3],
        "transposed": lambda a: a.transpose(2, 1, 0),
        "reversed": lambda a: a[::-1, :, ::-1],
        "fortran": lambda a: np.asfortranarray(a),
    }
    for name, view in views.items():
        x, dy = view(base), view(dy_base)
        dim = x.shape[-1]
        weight, bias = rng.standard_normal(dim), rng.standard_normal(dim)
        y = pynorm.layer_norm(x, weight, bias)
        dx, dweight, dbias = pynorm.layer_norm_backward(dy, x, weight, bias)
        ref_y, ref_dx, ref_dw, ref_db = reference.layer_norm(x, weight, bias, 1e-5, True, True, dy)
        for got, ref, what in [(y, ref_y, "y"), (dx, ref_dx, "dx"), (dweight, ref_dw, "dw"), (dbias, ref_db, "db")]:
            assert_close(got, ref, "float64", f"{name}: {what}")
        assert y.flags.c_contiguous and y.shape == x.shape


def test_broadcast_input_with_zero_strides(rng):
    x = np.broadcast_to(rng.standard_normal(12), (5, 12))  # read-only, row stride 0
    y = pynorm.layer_norm(x)
    assert_close(y, reference.layer_norm(x, None, None, 1e-5, True, True, np.zeros((5, 12)))[0], "float64")


def test_torch_tensors_and_lists_are_accepted():
    import torch

    t = torch.randn(4, 6, dtype=torch.float32, requires_grad=True)
    y = pynorm.layer_norm(t)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    assert_close(y, torch.nn.functional.layer_norm(t, (6,)).detach().numpy(), "float32")
    assert np.array_equal(pynorm.layer_norm(t.detach().T), pynorm.layer_norm(t.detach().numpy().T))
    bf = torch.randn(3, 5, dtype=torch.float32).to(torch.bfloat16)
    assert pynorm.layer_norm(bf).dtype.name == "bfloat16"
    y_list = pynorm.layer_norm([[1, 2, 3], [4, 5, 7]])
    assert y_list.dtype == np.float64
    assert_close(y_list, pynorm.layer_norm(np.array([[1.0, 2, 3], [4, 5, 7]])), "float64")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_nan_and_inf_rows_match_torch_and_stay_in_their_row(rng, variant):
    center, scale = VARIANTS[variant]
    x, dy, weight, bias = make_case(rng, (6, 10), np.float64, "weight_bias")
    clean_y = pynorm.layer_norm(x, weight, bias, center=center, scale=scale)
    clean_dx = pynorm.layer_norm_backward(dy, x, weight, bias, center=center, scale=scale)[0]
    x[1, 3] = np.nan
    x[3, 0] = np.inf
    x[4, 5] = -np.inf
    y = pynorm.layer_norm(x, weight, bias, center=center, scale=scale)
    dx = pynorm.layer_norm_backward(dy, x, weight, bias, center=center, scale=scale)[0]
    ref_y, ref_dx, _, _ = reference.layer_norm(x, weight, bias, 1e-5, center, scale, dy)
    for got, ref, clean in [(y, ref_y, clean_y), (dx, ref_dx, clean_dx)]:
        for r in (1, 3, 4):
            assert np.array_equal(np.isnan(got[r]), np.isnan(ref[r])), (r, got[r], ref[r])
            assert np.array_equal(got[r][np.isinf(ref[r])], ref[r][np.isinf(ref[r])])
        for r in (0, 2, 5):
            assert np.array_equal(got[r], clean[r])


def test_in_place_output(rng):
    x = rng.standard_normal((8, 33)).astype(np.float32)
    expected = pynorm.layer_norm(x)
    out = pynorm.layer_norm(x, out=x)
    assert out is x and np.array_equal(x, expected)


def test_zero_rows_and_zero_dim():
    y, mean, rstd = pynorm.layer_norm(np.zeros((0, 5), np.float32), np.ones(5), return_stats=True)
    assert y.shape == (0, 5) and mean.shape == (0,)
    dx, dw, db = pynorm.layer_norm_backward(np.zeros((0, 5)), np.zeros((0, 5)), np.ones(5), np.zeros(5))
    assert dx.shape == (0, 5) and np.array_equal(dw, np.zeros(5)) and np.array_equal(db, np.zeros(5))
    assert pynorm.layer_norm(np.zeros((3, 0))).shape == (3, 0)
    assert pynorm.layer_norm(np.zeros((2, 0, 4))).shape == (2, 0, 4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(0, 12),
    dim=st.integers(1, 300),
    variant=st.sampled_from(list(VARIANTS)),
    affine=st.sampled_from(AFFINE),
    loc=st.floats(-1e3, 1e3),
    log_spread=st.floats(-3, 3),
    eps=st.sampled_from([0.0, 1e-12, 1e-5, 0.1]),
    seed=st.integers(0, 2**31),
)
def test_hypothesis_float64(rows, dim, variant, affine, loc, log_spread, eps, seed):
    center, scale = VARIANTS[variant]
    rng = np.random.default_rng(seed)
    x, dy, weight, bias = make_case(rng, (rows, dim), np.float64, affine, loc=loc, spread=10.0**log_spread)
    bound = 1e-9 * (1 + abs(loc) / 10.0**log_spread) if center else None  # conditioning, as above
    tol = dict(rtol=bound, atol=bound) if bound else None
    check_against_reference(x, dy, weight, bias, eps, center, scale, "float64", tol=tol)
