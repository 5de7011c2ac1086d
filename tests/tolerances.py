"""Every tolerance the tests use, in one place, with the reason for it.

Comparisons are "normwise with an elementwise floor": |a - b| <= RTOL * |b| + ATOL * max|b|,
so an element that cancels to ~0 is judged against the size of the whole tensor (its
absolute error is what matters), while the large elements are held to RTOL. Where a whole
result cancels (LayerNorm's dx when dim = 1 is exactly 0), "the size of the tensor" is the
size of the terms that cancel, which the caller passes as ``scale``: a backward-stable
algorithm is accurate relative to those, not to the (zero) result.
"""

import numpy as np

# float64: both sides compute in float64; differences come from summation order only
# (~dim * 1e-16 in the worst case for the longest rows tested here, 65536).
# float32: pynorm accumulates in float32 like torch; ~sqrt(dim) * 6e-8 for the reductions,
# a few ulp for the elementwise part; 2e-5 leaves room for dim = 65536 rows.
# float16 / bfloat16: storage only; the result is rounded once to the storage type
# (half an ulp: 2^-11 resp. 2^-8 relative) after float32 arithmetic, and the 16-bit
# gradients are sums rounded to 16 bits.
TOLERANCES = {
    "float64": dict(rtol=1e-9, atol=1e-9),
    "float32": dict(rtol=2e-5, atol=2e-5),
    "float16": dict(rtol=2e-3, atol=2e-3),
    "bfloat16": dict(rtol=1.6e-2, atol=1.6e-2),
}

# Linear attention, normalised, float64: the backward's g . v + h nearly cancels (h is minus the
# row's weighted mean of g . v) and the quotient by the denominator loses a few more digits.
LINEAR_ATTENTION_NORMALIZED_FLOAT64 = dict(rtol=1e-6, atol=1e-6)

# Unit roundoff of each type, for tolerances that scale with a problem's conditioning
# (e.g. LayerNorm of rows whose mean is 1e4 times their spread).
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}


def assert_close(actual, expected, dtype_name, what="", rtol=None, atol=None, scale=None):
    """Asserts actual ~= expected (float64 reference) to the tolerance of ``dtype_name``."""
    tol = TOLERANCES[dtype_name]
    rtol = tol["rtol"] if rtol is None else rtol
    atol = tol["atol"] if atol is None else atol
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    if b.size == 0:
        return
    assert np.array_equal(np.isnan(a), np.isnan(b)), f"{what}: NaN in different places"
    finite = ~np.isnan(b)
    a, b = a[finite], b[finite]
    if b.size == 0:
        return
    scale = max(np.max(np.abs(b[np.isfinite(b)]), initial=0.0), scale or 0.0)
    err = np.abs(a - b)
    bound = rtol * np.abs(b) + atol * scale
    bad = ~(err <= bound) & ~(a == b)  # equal infinities are fine
    assert not bad.any(), (
        f"{what} ({dtype_name}): {bad.sum()} of {b.size} elements out of tolerance; "
        f"worst |err| = {err[bad].max():.3e} (rtol={rtol}, atol={atol} * max|ref| = {atol * scale:.3e})"
    )
