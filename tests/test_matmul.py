"""pynorm.matmul (tall-by-small products, and A^T B summed over rows) against torch.matmul in
float64 on the same values, plus thread-count determinism, layouts, dtypes and bad inputs.
Tolerances: tests/tolerances.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import np_dtype
from tolerances import assert_close

import pynorm

DTYPES = ["float64", "float32", "float16", "bfloat16"]


def ref_matmul(a, b, add=None):
    """torch float64 a @ b (+ add) over a's rows, on the exact stored values."""
    a64, b64 = (torch.from_numpy(np.asarray(x, dtype=np.float64)) for x in (a, b))
    out = (a64.reshape(int(np.prod(a.shape[:-1])), a.shape[-1]) @ b64).reshape(*a.shape[:-1], b.shape[-1])
    return (out + torch.from_numpy(np.asarray(add, dtype=np.float64)) if add is not None else out).numpy()


def ref_matmul_tn(a, b):
    a64, b64 = (torch.from_numpy(np.asarray(x, dtype=np.float64)) for x in (a, b))
    rows = int(np.prod(a.shape[:-1]))
    return (a64.reshape(rows, a.shape[-1]).T @ b64.reshape(rows, b.shape[-1])).numpy()


# (shape of a, n): one row, k = 1, n = 1, n not a multiple of any vector width, zero rows,
# k = 0 (the product is zero), n = 0, 3-d a, more rows than one chunk (64), the trainer's shapes.
NN_SHAPES = [
    ((1, 1), 1),
    ((5, 3), 2),
    ((0, 4), 3),
    ((7, 0), 3),
    ((4, 3), 0),
    ((2, 3, 9), 17),
    ((130, 32), 64),
    ((301, 33), 7),
    ((4224, 32), 32),
]


@pytest.mark.parametrize("a_shape,n", NN_SHAPES)
@pytest.mark.parametrize("with_add", [False, True])
def test_matmul_float64(a_shape, n, with_add):
    rng = np.random.default_rng(sum(a_shape) + n)
    a = rng.standard_normal(a_shape)
    b = rng.standard_normal((a_shape[-1], n))
    add = rng.standard_normal(a_shape[:-1] + (n,)) if with_add else None
    got = pynorm.matmul(a, b, add=add)
    assert got.shape == a_shape[:-1] + (n,) and got.dtype == np.float64
    assert_close(got, ref_matmul(a, b, add), "float64", "a @ b")


# (rows shape, m, n): no rows (a zero result), one row, 3-d rows, several reduction blocks.
TN_SHAPES = [((0,), 3, 4), ((1,), 1, 1), ((6,), 5, 9), ((2, 7), 3, 2), ((300,), 33, 17), ((5000,), 64, 32)]


@pytest.mark.parametrize("rows,m,n", TN_SHAPES)
def test_matmul_tn_float64(rows, m, n):
    rng = np.random.default_rng(m * n)
    a, b = rng.standard_normal(rows + (m,)), rng.standard_normal(rows + (n,))
    got = pynorm.matmul(a, b, transpose_a=True)
    assert got.shape == (m, n) and got.dtype == np.float64
    assert_close(got, ref_matmul_tn(a, b), "float64", "a^T b")


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes(dtype):
    dt = np_dtype(dtype)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((200, 24)).astype(dt)
    b = rng.standard_normal((24, 40)).astype(dt)
    add = rng.standard_normal((200, 40)).astype(dt)
    got = pynorm.matmul(a, b, add=add)
    assert got.dtype == dt
    assert_close(got, ref_matmul(a, b, add), dtype, "a @ b + add")
    g = rng.standard_normal((200, 40)).astype(dt)
    got = pynorm.matmul(g, a, transpose_a=True)
    assert got.dtype == dt
    assert_close(got, ref_matmul_tn(g, a), dtype, "g^T a")


def test_non_contiguous_and_torch_inputs():
    rng = np.random.default_rng(2)
    big = rng.standard_normal((90, 70))
    a = big[::2, 5:37]  # strided rows
    b = big[:64:2, :40].T.T  # strided rows of b
    bt = big[:40, :32].T  # a transposed b: non-contiguous last axis
    add = big[:45, 30:70]
    assert_close(pynorm.matmul(a, b[:32]), ref_matmul(a, b[:32]), "float64", "strided a, b")
    assert_close(pynorm.matmul(a, bt, add=add), ref_matmul(a, bt, add), "float64", "transposed b, strided add")
    assert_close(pynorm.matmul(a, add, transpose_a=True), ref_matmul_tn(a, add), "float64", "strided tn")
    q = big[:45, :64][:, :32]  # a column slice of a wider product (the trainer's q)
    assert_close(pynorm.matmul(q, a, transpose_a=True), ref_matmul_tn(q, a), "float64", "column slice")
    got = pynorm.matmul(torch.from_numpy(a), torch.from_numpy(np.ascontiguousarray(bt)))
    assert isinstance(got, np.ndarray)
    assert_close(got, ref_matmul(a, bt), "float64", "torch inputs")


def test_nan_stays_in_its_row():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((100, 16)), rng.standard_normal((16, 8))
    a[17, 3] = np.nan
    got = pynorm.matmul(a, b)
    assert np.isnan(got[17]).all()
    assert np.isfinite(np.delete(got, 17, axis=0)).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bitwise_same_for_any_thread_count(dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((20000, 32)).astype(dtype)
    w = rng.standard_normal((32, 48)).astype(dtype)
    g = rng.standard_normal((20000, 48)).astype(dtype)
    nn = [pynorm.matmul(x, w, add=g, n_threads=t) for t in (1, 2, 3)]
    tn = [pynorm.matmul(g, x, transpose_a=True, n_threads=t) for t in (1, 2, 3)]
    for results in (nn, tn):
        for r in results[1:]:
            assert np.array_equal(r, results[0])


def test_bad_inputs():
    a, b = np.ones((4, 3)), np.ones((3, 2))
    with pytest.raises(ValueError, match="b must have shape"):
        pynorm.matmul(a, np.ones((2, 2)))
    with pytest.raises(ValueError, match="b must have shape"):
        pynorm.matmul(a, np.ones(3))
    with pytest.raises(ValueError, match="add must have"):
        pynorm.matmul(a, b, add=np.ones((4, 3)))
    with pytest.raises(ValueError, match="not supported with transpose_a"):
        pynorm.matmul(a, a, transpose_a=True, add=np.ones((3, 3)))
    with pytest.raises(ValueError, match="same leading"):
        pynorm.matmul(a, np.ones((5, 2)), transpose_a=True)
    with pytest.raises(TypeError, match="share one dtype"):
        pynorm.matmul(a.astype(np.float32), b)
    with pytest.raises(TypeError):
        pynorm.matmul("abc", b)
    with pytest.raises(TypeError, match="dtype int64"):
        pynorm.matmul(np.ones((4, 3), dtype=np.int64), b)
    with pytest.raises(ValueError, match="at least 1 dimension"):
        pynorm.matmul(np.float64(1.0), b)
    with pytest.raises(ValueError, match="n_threads"):
        pynorm.matmul(a, b, n_threads=0)
