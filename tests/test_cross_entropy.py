"""pynorm.cross_entropy and its backward against torch autograd of
F.cross_entropy(reduction="none") in float64 on the same values: classes around the vector
widths and very long rows, 0-3 leading axes, zero positions, every dtype, strided logits,
large and -inf logits, NaN, thread-count determinism and bad inputs. Tolerances:
tests/tolerances.py. Run the file with PYNORM_SIMD=avx2 and PYNORM_SIMD=baseline too."""

from __future__ import annotations

import numpy as np
import pytest
import reference
from reference import np_dtype
from tolerances import assert_close

import pynorm


def check(logits, labels, dloss):
    dtype_name = np.asarray(logits).dtype.name
    dloss = np.asarray(dloss).astype(np.asarray(logits).dtype)  # the value the op computes with
    loss = pynorm.cross_entropy(logits, labels)
    dlogits = pynorm.cross_entropy_backward(dloss, logits, labels)
    want_loss, want_dlogits = reference.cross_entropy(logits, labels, dloss)
    for name, got, want, shape in (
        ("loss", loss, want_loss, np.shape(labels)),
        ("dlogits", dlogits, want_dlogits, np.shape(logits)),
    ):
        assert got.dtype == np.asarray(logits).dtype and got.shape == shape, name
        assert_close(got, want, dtype_name, name)


def inputs(rng, leading, classes, dtype, spread=3.0, mean=0.0):
    logits = (mean + spread * rng.standard_normal(leading + (classes,))).astype(dtype)
    labels = rng.integers(0, classes, leading)
    return logits, labels, rng.standard_normal(leading)


SHAPES = [
    ((5,), 1),
    ((7,), 2),
    ((3, 4), 7),
    ((64,), 16),
    ((2, 33), 17),
    ((300,), 20),
    ((2, 3, 5), 33),
    ((9,), 64),
    ((4,), 1000),
    ((2,), 70001),
    ((), 20),
    ((0,), 20),
    ((3, 0), 5),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype_name", ["float64", "float32", "float16", "bfloat16"])
def test_matches_torch(rng, shape, dtype_name):
    leading, classes = shape
    check(*inputs(rng, leading, classes, np_dtype(dtype_name)))


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
def test_one_gradient_for_every_position(rng, dtype_name):
    """A number as dloss (a mean's 1 / positions) is every position's gradient."""
    logits, labels, _ = inputs(rng, (6, 50), 20, np.dtype(dtype_name))
    check(logits, labels, np.full((6, 50), 1 / 300))
    got = pynorm.cross_entropy_backward(1 / 300, logits, labels)
    assert np.array_equal(got, pynorm.cross_entropy_backward(np.full((6, 50), 1 / 300), logits, labels))


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
def test_large_logits_are_shifted(rng, dtype_name):
    """Logits far beyond exp's range (a mean of 1e4, spread 1; 80 in float32, past exp's
    overflow at 88 for the sum) give the shift-invariant answer."""
    check(*inputs(rng, (40,), 20, np.dtype(dtype_name), spread=1.0, mean=1e4 if dtype_name == "float64" else 80.0))
    check(*inputs(rng, (40,), 20, np.dtype(dtype_name), spread=30.0))


def test_minus_inf_logits_are_excluded_classes(rng):
    logits, labels, dloss = inputs(rng, (30,), 21, np.float64)
    logits[:, ::3] = -np.inf
    labels = np.where(labels % 3 == 0, labels + 1, labels)
    check(logits, labels, dloss)
    loss = pynorm.cross_entropy(logits, np.zeros(30, np.int64))  # a label on a -inf logit: loss inf
    assert np.isposinf(loss).all()


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
def test_nan_stays_in_its_position(rng, dtype_name):
    logits, labels, dloss = inputs(rng, (10, 20), 19, np.dtype(dtype_name))
    logits[3, 4, 7] = np.nan
    loss, dlogits = pynorm.cross_entropy(logits, labels), pynorm.cross_entropy_backward(dloss, logits, labels)
    nan_positions = np.zeros((10, 20), bool)
    nan_positions[3, 4] = True
    assert np.array_equal(np.isnan(loss), nan_positions)
    assert np.array_equal(np.isnan(dlogits).any(-1), nan_positions) and np.isnan(dlogits[3, 4]).all()
    check(logits, labels, dloss)  # the rest as torch


@pytest.mark.parametrize("layout", ["sliced_rows", "transposed", "reversed", "strided_classes"])
def test_strided_logits(rng, layout):
    base = rng.standard_normal((12, 10, 40))
    logits = {
        "sliced_rows": base[::2, 1:],
        "transposed": base.transpose(1, 0, 2),
        "reversed": base[::-1, :, ::-1],
        "strided_classes": base[..., ::2],
    }[layout]
    before = base.copy()
    labels = rng.integers(0, logits.shape[-1], logits.shape[:-1])
    check(logits, labels, rng.standard_normal(logits.shape[:-1]))
    assert np.array_equal(base, before)  # inputs untouched


def test_torch_and_list_inputs_and_label_dtypes(rng):
    logits, labels, dloss = inputs(rng, (9,), 5, np.float64)
    want = pynorm.cross_entropy(logits, labels)
    assert np.array_equal(pynorm.cross_entropy(logits.tolist(), labels.astype(np.uint8)), want)
    assert np.array_equal(pynorm.cross_entropy(reference.torch.tensor(logits), labels.astype(np.int32)), want)


def test_thread_count_does_not_change_the_bits(rng):
    logits, labels, dloss = inputs(rng, (4000,), 20, np.float32)
    one = (
        pynorm.cross_entropy(logits, labels, n_threads=1),
        pynorm.cross_entropy_backward(dloss, logits, labels, n_threads=1),
    )
    for threads in (2, 3):
        assert np.array_equal(pynorm.cross_entropy(logits, labels, n_threads=threads), one[0])
        assert np.array_equal(pynorm.cross_entropy_backward(dloss, logits, labels, n_threads=threads), one[1])


def test_bad_inputs_name_the_argument():
    x, y = np.zeros((4, 3)), np.zeros(4, np.int64)
    with pytest.raises(ValueError, match=r"pynorm.cross_entropy: labels must lie in \[0, 3\), got \[0, 3\]"):
        pynorm.cross_entropy(x, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got \[-1, 0\]"):
        pynorm.cross_entropy_backward(1.0, x, np.array([0, -1, 0, 0]))
    with pytest.raises(TypeError, match="labels must be integers, got dtype float64"):
        pynorm.cross_entropy(x, np.zeros(4))
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        pynorm.cross_entropy(x, np.zeros((4, 1), np.int64))
    with pytest.raises(ValueError, match="at least one class"):
        pynorm.cross_entropy(np.zeros((4, 0)), y)
    with pytest.raises(ValueError, match=r"dloss must be one number or have the losses' shape \(4,\)"):
        pynorm.cross_entropy_backward(np.ones(3), x, y)
    with pytest.raises(TypeError, match="logits has dtype int64"):
        pynorm.cross_entropy(np.zeros((4, 3), np.int64), y)
    with pytest.raises(ValueError, match="n_threads"):
        pynorm.cross_entropy(x, y, n_threads=0)


def test_core_refuses_labels_outside_the_classes():
    """The binding checks the labels itself: a direct call cannot make the kernel read outside a row."""
    core = pynorm._core_loader.core()
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="labels must lie in"):
        core.cross_entropy_forward(
            logits=x,
            logits_row_stride=3,
            labels=np.array([0, 3]),
            loss=np.empty(2, np.float32),
            rows=2,
            classes=3,
            dtype=0,
            threads=1,
        )
