"""Fuzz campaign: every public op against a float64 reference over dtypes, shapes, strides,
``out=`` and extreme values, with hypothesis.

Each case draws a dtype, a shape (last axis 1..70000, 0..5000 rows over 0-4 leading axes, the
element count bounded by MAX_ELEMENTS), a memory layout for every array (contiguous, sliced
with steps, transposed, reversed, zero-stride broadcast, an unaligned start, and combinations),
value kinds (normal, a large mean such as 1e4 + N(0, 1), huge, tiny, denormal, rows of very
different scales) with NaN, +-Inf, zeros, denormals or huge elements sprinkled in, an ``out=``
(None, a fresh array, the input itself) and a thread count; runs the forward and the backward;
and compares each result with the float64 reference of tests/reference.py (torch autograd of the
textbook formulas) or tests/fuzz_reference.py (NumPy), with the tolerances of tests/tolerances.py.
NaN and Inf positions must match the reference exactly: the reference evaluates the op's
definition in IEEE float64, so a NaN in a row makes that row NaN for the norms, a NaN in token j
reaches the outputs that attend to j, and so on.

Gaps between the elements of a strided input hold NaN, so a kernel that reads outside the view
returns NaN where the reference does not. Inputs must be left untouched, and the backward must
give the same bits with one thread.

Default suite: DEFAULT_CASES_PER_TARGET cases per target (a few hundred in all). The campaign:
``PYNORM_FUZZ_CASES=10000 python3 -m pytest -q tests/test_fuzz.py`` spreads that many cases over
the targets (bigger arrays too: PYNORM_FUZZ_MAX_ELEMENTS); ``PYNORM_FUZZ_REPORT=path.json`` writes
the cases run per target and what they covered. See docs/fuzzing.md.
"""

from __future__ import annotations

import collections
import json
import math
import os
from dataclasses import dataclass, field

import fuzz_reference
import numpy as np
import pytest
import reference
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tolerances import LINEAR_ATTENTION_NORMALIZED_FLOAT64, TOLERANCES, UNIT_ROUNDOFF, assert_close

import pynorm

# The references meet NaN, Inf and overflow on purpose: their floating-point warnings are noise.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

# ------------------------------------------------------------------------------------------
# How much: the default suite and the campaign
# ------------------------------------------------------------------------------------------

NORM_VARIANTS = {  # target: (center, scale); rms_norm runs pynorm.rms_norm, the others layer_norm
    "layer_norm": (True, True),
    "projection": (True, False),
    "scaling": (False, True),
    "affine_only": (False, False),
    "rms_norm": (False, True),
}
TARGETS = list(NORM_VARIANTS) + [
    "dyt",
    "linear_attention",
    "linear_attention_causal",
    "merged_linear_attention",
    "matmul",
    "matmul_transpose_a",
]

DEFAULT_CASES_PER_TARGET = 30
CAMPAIGN_CASES = int(os.environ.get("PYNORM_FUZZ_CASES", "0"))  # total over TARGETS; 0: the default suite
CASES_PER_TARGET = -(-CAMPAIGN_CASES // len(TARGETS)) if CAMPAIGN_CASES else DEFAULT_CASES_PER_TARGET
# Elements of one array at most (the campaign's are 4x the default suite's, small enough for
# 10,000 cases on two shared cores), and the multiply-adds of the quadratic attention references.
MAX_ELEMENTS = int(os.environ.get("PYNORM_FUZZ_MAX_ELEMENTS", str(2**18 if CAMPAIGN_CASES else 2**16)))
MAX_REFERENCE_FLOPS = 64 * MAX_ELEMENTS
MAX_DIM, MAX_ROWS = 70000, 5000

settings.register_profile(
    "pynorm-fuzz",
    max_examples=CASES_PER_TARGET,
    deadline=None,
    derandomize=True,  # the same cases on every run (CI reproducibility)
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
FUZZ = settings.get_profile("pynorm-fuzz")  # applied per test: loading it would change other modules' tests

DTYPE_NAMES = ["float64", "float32", "float16"] + (["bfloat16"] if reference.BFLOAT16 is not None else [])


def np_dtype(name):
    return reference.BFLOAT16 if name == "bfloat16" else np.dtype(name)


def accumulate_name(dtype_name):
    """pynorm's arithmetic type for a storage type: float64 for float64, float32 otherwise."""
    return "float64" if dtype_name == "float64" else "float32"


# ------------------------------------------------------------------------------------------
# Capability probes: what pynorm accepts today decides what the strategies draw
# ------------------------------------------------------------------------------------------


def _accepts(call, refusals):
    """True when ``call()`` runs; False when it raises a TypeError/ValueError saying one of
    ``refusals`` (the refusal of a feature not supported yet); anything else propagates."""
    try:
        call()
    except (TypeError, ValueError) as e:
        if any(word in str(e) for word in refusals):
            return False
        raise
    return True


_probe_x = np.arange(8.0, dtype=np.float32).reshape(2, 4)
# Non-contiguous out= views (issue 19 section 3): drawn from once pynorm takes them.
NONCONTIGUOUS_OUT = _accepts(
    lambda: pynorm.layer_norm(_probe_x, out=np.empty((2, 8), np.float32)[:, ::2]), ["contiguous"]
)
# Big-endian inputs (issue 19 section 3): drawn from once pynorm takes them.
BIG_ENDIAN_INPUTS = _accepts(lambda: pynorm.layer_norm(_probe_x.astype(">f4")), [">f4", "byte order"])


# ------------------------------------------------------------------------------------------
# Values
# ------------------------------------------------------------------------------------------

KINDS = ["normal", "large_mean", "huge", "tiny", "denormal", "row_scales"]
SPECIALS = ["nan", "inf", "-inf", "nan_and_inf", "zero", "denormal", "huge", "nan_row", "inf_row"]
INF_SPECIALS = {"inf", "-inf", "nan_and_inf", "inf_row"}
# The bilinear ops (attention, matmul) get the finite specials only: their float64 references
# multiply masked-out zeros into NaN/Inf, and where an Inf enters, the IEEE result depends on
# the association ((q k^T) v or q (k^T v)). test_linear_attention_nan_reaches_what_attends_to_it
# checks their NaN propagation directly.
FINITE_SPECIALS = ["zero", "denormal", "huge"]
SMALL_KINDS = {"tiny", "denormal", "zero", "row_scales"}

# float64 stays where the float64 reference itself is exact: torch's autograd of rsqrt(mean(x^2))
# raises the mean square to the power -1.5, which leaves the normal range beyond |x| ~ 1e103.
HUGE = {"float64": 1e100, "float32": 1e30, "bfloat16": 1e30, "float16": 1e4}
TINY = {"float64": 1e-100, "float32": 1e-30, "bfloat16": 1e-30, "float16": 1e-3}
DENORMAL = {"float64": 1e-310, "float32": 1e-40, "bfloat16": 1e-40, "float16": 1e-6}
LARGE_MEAN = {"float64": 1e4, "float32": 1e4, "bfloat16": 1e2, "float16": 1e2}


def magnitudes(dtype_name, family, degree=1, count=1, eps=None):
    """(huge, tiny, denormal) scales for one array of ``family`` (norm, dyt, bilinear).

    For the bilinear ops (attention, matmul) the result is a sum of ``count`` products of
    ``degree`` factors from the array: huge and tiny are capped so that the result and every
    partial sum stay normal numbers of pynorm's arithmetic type and of the storage type (an
    overflow there is float32's range, not a wrong answer)."""
    huge, tiny, denormal = HUGE[dtype_name], TINY[dtype_name], DENORMAL[dtype_name]
    if family == "norm" and eps == 0 and dtype_name == "float64":
        denormal = tiny  # the reference's own x^2 would underflow
    if family == "bilinear":
        store, acc = np.finfo(np_dtype(dtype_name)), np.finfo(np_dtype(accumulate_name(dtype_name)))
        # 1e-12: room for the other arrays' row scales (up to 1e3 each) and the partial sums
        huge = min(huge, (1e-12 * min(float(store.max), float(acc.max)) / max(count, 1)) ** (1.0 / degree))
        tiny = max(tiny, (1e6 * float(acc.tiny)) ** (1.0 / degree))
        denormal = max(denormal, tiny) if degree > 1 else denormal
    return huge, tiny, denormal


def make_values(rng, shape, dtype_name, kind, scales, positive=False):
    """float64 values of ``kind`` (already representable in the dtype: rounded and kept finite)."""
    huge, tiny, denormal = scales
    z = rng.standard_normal(shape)
    if kind == "large_mean":
        z = LARGE_MEAN[dtype_name] + z
    elif kind in ("huge", "tiny", "denormal"):
        z = {"huge": huge, "tiny": tiny, "denormal": denormal}[kind] * z
    elif kind == "row_scales" and len(shape) > 0:
        z = z * 10.0 ** rng.uniform(-3, 3, shape[:-1] + (1,))
    if positive:  # normalised attention: positive features keep the denominators away from 0
        z = np.abs(z)
    limit = float(np.finfo(np_dtype(dtype_name)).max) / 4
    return np.clip(z, -limit, limit).astype(np_dtype(dtype_name)).astype(np.float64)


def sprinkle(rng, values, special, count, scales):
    """Puts ``count`` special elements (or one whole row) into ``values`` in place."""
    if values.size == 0:
        return
    flat = values.reshape(-1)
    if special in ("nan_row", "inf_row"):
        dim = values.shape[-1] if values.ndim else 1
        row = rng.integers(0, values.size // dim)
        flat[row * dim : (row + 1) * dim] = np.nan if special == "nan_row" else np.inf
        return
    positions = rng.integers(0, values.size, count)
    choices = {
        "nan": [np.nan], "inf": [np.inf], "-inf": [-np.inf], "nan_and_inf": [np.nan, np.inf, -np.inf],
        "zero": [0.0], "denormal": [scales[2], -scales[2]], "huge": [scales[0], -scales[0]],
    }[special]  # fmt: skip
    flat[positions] = rng.choice(choices, count)


# ------------------------------------------------------------------------------------------
# Layouts: how an array lies in memory
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """A view of ``shape``: storage axes in the order ``perm`` (perm[i] is the view axis that
    storage axis i holds), each view axis taking every ``steps[a]``-th element (negative:
    reversed), the axes in ``broadcast`` of stride 0, and the data ``offset`` elements into the
    buffer (unaligned)."""

    perm: tuple
    steps: tuple
    broadcast: tuple = ()
    offset: int = 0
    big_endian: bool = False

    def kind(self):
        parts = [name for name, on in (
            ("transposed", self.perm != tuple(sorted(self.perm))), ("sliced", any(abs(s) > 1 for s in self.steps)),
            ("reversed", any(s < 0 for s in self.steps)), ("broadcast", bool(self.broadcast)),
            ("unaligned", self.offset > 0), ("big_endian", self.big_endian),
        ) if on]  # fmt: skip
        return "+".join(parts) or "contiguous"


@st.composite
def layouts(draw, ndim, allow_broadcast=True, allow_big_endian=True):
    kind = draw(st.sampled_from(["contiguous", "contiguous", "sliced", "transposed", "reversed", "broadcast", "mixed"]))
    axes = st.sets(st.integers(0, max(ndim - 1, 0)), min_size=1, max_size=max(ndim, 1)) if ndim else st.just(set())
    perm, steps, broadcast = tuple(range(ndim)), [1] * ndim, ()
    if kind in ("transposed", "mixed") and ndim > 1:
        perm = tuple(draw(st.permutations(range(ndim))))
    if kind in ("sliced", "mixed"):
        for a in draw(axes):
            steps[a] = draw(st.sampled_from([2, 3]))
    if kind in ("reversed", "mixed"):
        for a in draw(axes):
            steps[a] = -steps[a]
    if kind in ("broadcast", "mixed") and allow_broadcast:
        broadcast = tuple(sorted(draw(axes)))
    offset = draw(st.sampled_from([0, 0, 1]))
    big_endian = allow_big_endian and BIG_ENDIAN_INPUTS and draw(st.booleans())
    return Layout(perm, tuple(steps), broadcast, offset, big_endian)


def materialize(values, shape, layout, dtype_name, gap):
    """(view, buffer): an array of ``shape`` lying in memory as ``layout`` says, holding
    ``values`` (of the broadcast base's shape), with ``gap`` in every element of the buffer
    outside the view."""
    dtype = np_dtype(dtype_name)
    if layout.big_endian:
        dtype = dtype.newbyteorder(">")
    base_shape = tuple(1 if a in layout.broadcast else n for a, n in enumerate(shape))
    steps = layout.steps
    if math.prod(n * abs(s) for n, s in zip(base_shape, steps)) > 4 * MAX_ELEMENTS:
        steps = tuple(1 if s > 0 else -1 for s in steps)  # too big a buffer: keep the directions only
    buffer_shape = tuple(base_shape[a] * abs(steps[a]) for a in layout.perm)
    buffer = np.full(math.prod(buffer_shape) + layout.offset, gap, dtype=dtype)
    view = buffer[layout.offset :].reshape(buffer_shape).transpose(np.argsort(layout.perm))
    view = view[tuple(slice(None, None, s) for s in steps)]
    view[...] = values
    return (np.broadcast_to(view, shape) if layout.broadcast else view), buffer


@dataclass
class ArraySpec:
    """How one input array is made: shape, layout, value kind, specials, seed."""

    shape: tuple
    layout: Layout
    kind: str = "normal"
    special: str = ""
    special_count: int = 0
    seed: int = 0
    positive: bool = False
    degree: int = 1  # for the bilinear ops' magnitude caps
    count: int = 1


@dataclass
class Case:
    """One fuzz case: the op's scalar arguments and how to make each array."""

    dtype: str
    arrays: dict
    options: dict = field(default_factory=dict)

    def has_inf(self):
        """Whether an Inf was sprinkled into an input."""
        return any(spec.special in INF_SPECIALS for spec in self.arrays.values())

    def build(self, family, eps=None):
        """{name: array} in the case's dtype and layouts (NaN in the gaps)."""
        built = {}
        for name, spec in self.arrays.items():
            rng = np.random.default_rng(spec.seed)
            scales = magnitudes(self.dtype, family, spec.degree, spec.count, eps)
            base_shape = tuple(1 if a in spec.layout.broadcast else n for a, n in enumerate(spec.shape))
            values = make_values(rng, base_shape, self.dtype, spec.kind, scales, spec.positive)
            if spec.special:
                sprinkle(rng, values, spec.special, spec.special_count, scales)
            built[name] = materialize(values, spec.shape, spec.layout, self.dtype, np.nan)[0]
        return built


@st.composite
def array_specs(draw, shapes, positive=(), degrees=None, counts=None, broadcast_ok=True, specials=SPECIALS):
    """ArraySpecs for the named shapes: one array (or none) gets an extreme value kind, one (or
    none) gets special elements; the others hold normal values or rows of different scales.
    The ``positive`` arrays (normalised attention's q and k) get no tiny values and no zeros: a
    denominator near eps makes the op ill-conditioned beyond any fixed tolerance."""
    names = list(shapes)
    extreme = draw(st.sampled_from(names + [None]))
    extreme_kind = draw(st.sampled_from(KINDS))
    special_target = draw(st.sampled_from(names + [None, None]))
    special = draw(st.sampled_from(specials))
    if special == "huge" and specials is FINITE_SPECIALS:  # one huge factor per product at most
        extreme, extreme_kind = special_target, "huge"
    specs = {}
    for name in names:
        ndim = len(shapes[name])
        specs[name] = ArraySpec(
            shape=tuple(shapes[name]),
            layout=draw(layouts(ndim, allow_broadcast=broadcast_ok)),
            kind=extreme_kind
            if name == extreme and not (name in positive and extreme_kind in SMALL_KINDS)
            else draw(st.sampled_from(["normal", "normal", "row_scales"])),
            special=special if name == special_target and not (name in positive and special in SMALL_KINDS) else "",
            special_count=draw(st.integers(1, 4)),
            seed=draw(st.integers(0, 2**32 - 1)),
            positive=name in positive,
            degree=(degrees or {}).get(name, 1),
            count=(counts or {}).get(name, 1),
        )
    return specs


@st.composite
def row_shapes(draw, max_dim=MAX_DIM, min_leading=0, max_leading=4, max_rows=MAX_ROWS, rows_axis_last=False):
    """(..., dim): dim 1..max_dim (mostly short), 0..max_rows rows over 0-4 leading axes, at
    most MAX_ELEMENTS elements. The rows axis (the long one) is the first leading axis, or the
    last with ``rows_axis_last`` (the tokens of attention), the others of size 1..4."""
    dim = draw(dims(max_dim))
    max_rows = max(0, min(max_rows, MAX_ELEMENTS // dim))
    n_leading = draw(st.integers(min_leading, max_leading))
    if n_leading == 0:
        return (dim,)
    rows = draw(st.integers(0, min(9, max_rows)) if draw(st.booleans()) else st.integers(0, max_rows))
    extra = [draw(st.integers(1, 4)) for _ in range(n_leading - 1)]
    while math.prod(extra) > max(rows, 1):
        extra[extra.index(max(extra))] = 1
    leading = [rows // math.prod(extra)] + extra
    return tuple(leading[::-1] if rows_axis_last else leading) + (dim,)


@st.composite
def dims(draw, max_dim=MAX_DIM):
    """A last-axis length: short (1..70) half the time, medium (..5000), long (..70000)."""
    regime = draw(st.sampled_from(["short", "short", "short", "medium", "medium", "long"]))
    low, high = {"short": (1, 70), "medium": (71, 5000), "long": (5001, MAX_DIM)}[regime]
    return draw(st.integers(min(low, max_dim), min(high, max_dim)))


THREADS = [None, 1, 2, 3]
EPS = [1e-5, 1e-6, 1e-12, 0.1, 0.0]

# ------------------------------------------------------------------------------------------
# Comparisons
# ------------------------------------------------------------------------------------------


def finite_max(*arrays):
    """The largest finite |element| of the arrays (0 when none)."""
    return max((float(np.max(np.abs(a[np.isfinite(a)]), initial=0.0)) for a in arrays), default=0.0)


def check(got, want, dtype_name, what, rtol=None, atol=None, scale=None, nonfinite_exact=True, floor=None):
    """``got`` (pynorm, in dtype_name) against ``want`` (float64 reference): the same NaN and +-Inf
    positions exactly, and tests/tolerances.py's assert_close on the finite elements.

    Two facts of storing the result in dtype_name enter, beyond the tolerance: a reference value
    beyond the dtype's range is +-Inf once stored (pynorm's too); near the top of the range,
    where the tolerance straddles that boundary, either is accepted. And a result in the
    subnormal range is stored to the nearest multiple of the smallest subnormal: that spacing
    floors the absolute error allowed (it matters for 16-bit results only). ``floor`` raises
    that floor to a given absolute error (see run_attention).

    ``nonfinite_exact=False`` (a backward with an Inf among its inputs) compares the positions of
    non-finite elements, and the value where both are +-Inf, but takes NaN for +-Inf and back:
    there the IEEE result depends on the order in which the formula is evaluated. LayerNorm's dx
    = rstd (g - mean(g) - xhat mean(g xhat)) with one g = Inf is Inf - Inf = NaN in one order,
    -Inf in another (as an exact linear map of dy it would be +-Inf); DyT's dx = dy (1 - tanh^2)
    is Inf * 0 = NaN where torch's 1 - tanh^2 cancels to 0, Inf where pynorm's does not."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    info = np.finfo(np_dtype(dtype_name))
    tol = TOLERANCES[dtype_name]
    rtol, atol = tol["rtol"] if rtol is None else rtol, tol["atol"] if atol is None else atol
    big = float(info.max)
    stored = np.where(np.abs(want) > big, np.copysign(np.inf, want), want)  # +-Inf beyond the range
    boundary = np.isfinite(want) & (np.abs(want) >= big * (1 - rtol)) & (np.abs(got) >= big * (1 - rtol))
    boundary &= np.sign(got) == np.sign(want)
    stored = np.where(boundary, got, stored)
    nan_got, nan_want = np.isnan(got), np.isnan(stored)
    if not nonfinite_exact:
        nan_got, nan_want = ~np.isfinite(got), ~np.isfinite(stored)
        both_inf = np.isinf(got) & np.isinf(stored)
        got, stored = np.where(nan_got & ~both_inf, np.nan, got), np.where(nan_want & ~both_inf, np.nan, stored)
    if not np.array_equal(nan_got, nan_want):
        where = np.argwhere(nan_got != nan_want)[:3].tolist()
        raise AssertionError(f"{what} ({dtype_name}): NaN where the reference has none or vice versa, "
                             f"e.g. at {where}: got {[got[tuple(i)] for i in where]}, "
                             f"expected {[stored[tuple(i)] for i in where]}")  # fmt: skip
    inf_want = np.isinf(stored)
    if not np.array_equal(got[inf_want], stored[inf_want]) or np.isinf(got[~inf_want]).any():
        where = np.argwhere((np.isinf(got) != inf_want) | (inf_want & (got != stored)))[:3].tolist()
        raise AssertionError(f"{what} ({dtype_name}): Inf where the reference has none or vice versa, "
                             f"e.g. at {where}: got {[got[tuple(i)] for i in where]}, "
                             f"expected {[stored[tuple(i)] for i in where]}")  # fmt: skip
    finite = np.isfinite(stored)
    floor = max(float(info.smallest_subnormal), floor or 0.0) / atol  # atol * floor: one subnormal spacing
    scale = max(scale or 0.0, finite_max(stored), floor)
    assert_close(got[finite], stored[finite], dtype_name, what, rtol=rtol, atol=atol, scale=scale)


def same_bits(a, b, what):
    """a and b are bitwise equal (NaNs included)."""
    if a is None or b is None:
        assert a is None and b is None, what
        return
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    uint = {8: np.uint64, 4: np.uint32, 2: np.uint16}[a.dtype.itemsize]
    assert a.shape == b.shape and np.array_equal(a.view(uint), b.view(uint)), f"{what}: not bitwise equal"


def snapshot(arrays):
    return {name: np.array(a, copy=True) for name, a in arrays.items()}


def check_untouched(arrays, before, skip=()):
    for name, a in arrays.items():
        if name not in skip:
            same_bits(a, before[name], f"input {name} was modified")


# ------------------------------------------------------------------------------------------
# Counting what ran
# ------------------------------------------------------------------------------------------

CASES_RUN = collections.Counter()
COVERAGE = collections.defaultdict(collections.Counter)


def count(target, case, **extra):
    """Records one finished case of ``target`` and the features it exercised."""
    CASES_RUN[target] += 1
    cover = COVERAGE[target]
    cover[f"dtype={case.dtype}"] += 1
    for spec in case.arrays.values():
        cover[f"layout={spec.layout.kind()}"] += 1
        cover[f"values={spec.kind}"] += 1
        if spec.special:
            cover[f"special={spec.special}"] += 1
    for key, value in extra.items():
        cover[f"{key}={value}"] += 1


@pytest.fixture(scope="module", autouse=True)
def fuzz_report():
    """Writes the cases run per target (and their coverage) to $PYNORM_FUZZ_REPORT, if set."""
    yield
    path = os.environ.get("PYNORM_FUZZ_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({
                "cases_per_target": dict(CASES_RUN), "total": sum(CASES_RUN.values()),
                "max_elements": MAX_ELEMENTS, "simd_level": pynorm.simd_level(),
                "noncontiguous_out": NONCONTIGUOUS_OUT, "big_endian_inputs": BIG_ENDIAN_INPUTS,
                "coverage": {t: dict(sorted(c.items())) for t, c in COVERAGE.items()},
            }, f, indent=1)  # fmt: skip


# ------------------------------------------------------------------------------------------
# out=
# ------------------------------------------------------------------------------------------

OUT_KINDS = ["none", "none", "fresh", "in_place"] + (["view"] * 2 if NONCONTIGUOUS_OUT else [])


@st.composite
def out_specs(draw, ndim):
    kind = draw(st.sampled_from(OUT_KINDS))
    layout = draw(layouts(ndim, allow_broadcast=False, allow_big_endian=False)) if kind == "view" else None
    return kind, layout


def make_out(kind, layout, x, dtype_name):
    """(out argument, the buffer a strided out= view lies in or None)."""
    if kind == "none":
        return None, None
    if kind == "in_place":
        return x, None
    if kind == "fresh":
        return np.full(x.shape, np.nan, np_dtype(dtype_name)), None
    return materialize(np.nan, x.shape, layout, dtype_name, OUT_SENTINEL)


OUT_SENTINEL = 7.0  # the gaps of a strided out= buffer, which pynorm must leave alone


def out_result(result, out, buffer):
    """The op's result given out=: out itself, written only inside the view; returns a copy."""
    if out is None:
        return result
    assert result is out, "the op did not return its out= argument"
    got = np.array(out, copy=True)
    if buffer is not None:
        out[...] = OUT_SENTINEL
        assert np.all(buffer == OUT_SENTINEL), "the op wrote into out='s buffer outside the view"
    return got


def in_place_possible(x, kind):
    """out=x needs a writable x in native byte order (and contiguous until NONCONTIGUOUS_OUT)."""
    if kind != "in_place":
        return True
    return x.flags.writeable and x.dtype.isnative and (x.flags.c_contiguous or NONCONTIGUOUS_OUT)


def threads_recheck(n_threads, call, results, what):
    """The backward's results with one thread are bitwise those with ``n_threads``."""
    if n_threads != 1:
        for got, single in zip(results, call(1)):
            same_bits(got, single, f"{what}: n_threads={n_threads} vs 1")


def column_sums(a):
    """Finite column sums of |a| over all rows, the size of the terms of a sum over rows."""
    a = np.abs(np.asarray(a, np.float64)).reshape(-1, a.shape[-1])
    return np.where(np.isfinite(a), a, 0.0).sum(0)


# ------------------------------------------------------------------------------------------
# The norms: LayerNorm, its halves, RMSNorm
# ------------------------------------------------------------------------------------------


@st.composite
def norm_cases(draw, target):
    dtype = draw(st.sampled_from(DTYPE_NAMES))
    shape = draw(row_shapes())
    affines = ["none", "weight"] if target == "rms_norm" else ["none", "weight", "bias", "weight_bias"]
    affine = draw(st.sampled_from(affines))
    shapes = {"x": shape, "dy": shape}
    shapes.update({name: shape[-1:] for name in ("weight", "bias") if name in affine})
    out_kind, out_layout = draw(out_specs(len(shape)))
    return Case(dtype, draw(array_specs(shapes)), dict(
        eps=draw(st.sampled_from(EPS)), out=out_kind, out_layout=out_layout, return_stats=draw(st.booleans()),
        n_threads=draw(st.sampled_from(THREADS)),
    ))  # fmt: skip


def run_norm(target, case):
    """One case of a norm: forward (with out= and the statistics) and backward vs the reference."""
    center, scale = NORM_VARIANTS[target]
    opt, dtype_name = case.options, case.dtype
    eps = opt["eps"]
    arrays = case.build("norm", eps)
    x, dy, weight, bias = arrays["x"], arrays["dy"], arrays.get("weight"), arrays.get("bias")
    ref_mean, ref_rstd = fuzz_reference.norm_stats(x, eps, center, scale)
    # eps = 0 on a row without spread is 0/0: no answer to compare with
    x64 = np.asarray(x, np.float64)
    assume(not (eps == 0 and scale and (np.isinf(ref_rstd).any() or (np.ptp(x64, -1) == 0).any())))
    # a float64 reference is good to float64's tolerance where its own rounding of the mean,
    # amplified by rstd, stays below it: not on a constant row of 1e100 with eps = 1e-5
    assume(not center or finite_max(np.abs(x64) * ref_rstd[..., None]) * UNIT_ROUNDOFF["float64"] < 1e-12)
    ref_y, ref_dx, ref_dw, ref_db = reference.layer_norm(x, weight, bias, eps, center, scale, dy)
    before = snapshot(arrays)
    out_kind = opt["out"] if in_place_possible(x, opt["out"]) else "fresh"
    out, buffer = make_out(out_kind, opt["out_layout"], x, dtype_name)
    kw = dict(out=out, return_stats=opt["return_stats"], n_threads=opt["n_threads"])
    if target == "rms_norm":
        result = pynorm.rms_norm(x, weight, eps, **kw)
        y, mean, rstd = (result[0], None, result[1]) if opt["return_stats"] else (result, None, None)
    else:
        result = pynorm.layer_norm(x, weight, bias, eps, center=center, scale=scale, **kw)
        y, mean, rstd = result if opt["return_stats"] else (result, None, None)
    y = out_result(y, out, buffer)
    check_untouched(arrays, before, skip=("x",) if out_kind == "in_place" else ())
    x = before["x"] if out_kind == "in_place" else x

    def backward(n_threads):
        if target == "rms_norm":
            return pynorm.rms_norm_backward(dy, x, weight, eps, rstd=rstd, n_threads=n_threads) + (None,)
        return pynorm.layer_norm_backward(dy, x, weight, bias, eps, center=center, scale=scale, mean=mean,
                                          rstd=rstd, n_threads=n_threads)  # fmt: skip

    dx, dweight, dbias = backward(opt["n_threads"])
    check_untouched({k: v for k, v in arrays.items() if k != "x"}, before)
    threads_recheck(opt["n_threads"], backward, (dx, dweight, dbias), target)

    # The sizes of the terms that cancel (tests/tolerances.py's ``scale``): x and its mean in
    # xhat = (x - mean) rstd, whose terms are |x| rstd; y = xhat w + b; the backward's
    # rstd (g - mean(g) - xhat mean(g xhat)) with g = dy w; the column sums over rows.
    rstd_b = ref_rstd[..., None]
    xhat_terms = finite_max(np.abs(x64) * rstd_b if center else (x64 - ref_mean[..., None]) * rstd_b)
    w_max = finite_max(weight) if weight is not None else 1.0
    g_max = finite_max(dy) * w_max
    assert y.dtype == np.asarray(x).dtype.newbyteorder("=") and y.shape == x.shape
    b_max = finite_max(bias) if bias is not None else 0.0
    check(y, ref_y, dtype_name, f"{target}: y", scale=xhat_terms * w_max + b_max)
    exact = not case.has_inf()
    dx_scale = g_max * finite_max(ref_rstd) * (1 + xhat_terms)
    check(dx, ref_dx, dtype_name, f"{target}: dx", scale=dx_scale, nonfinite_exact=exact)
    dy_sums = float(column_sums(dy).max(initial=0))
    assert (dweight is None) == (weight is None) and (dbias is None) == (bias is None)
    if weight is not None:
        check(
            dweight,
            ref_dw,
            dtype_name,
            f"{target}: dweight",
            scale=dy_sums * max(xhat_terms, 1.0),
            nonfinite_exact=exact,
        )
    if bias is not None:
        check(dbias, ref_db, dtype_name, f"{target}: dbias", scale=dy_sums, nonfinite_exact=exact)
    # the statistics of a row holding Inf or NaN are non-finite, NaN (torch's native_layer_norm)
    # or the IEEE mean: only their being non-finite is checked there
    stats_name, finite_rows = accumulate_name(dtype_name), np.isfinite(x64).all(-1)
    for name, got, want in (("mean", mean, ref_mean), ("rstd", rstd, ref_rstd)):
        if got is not None:
            non_finite = ~finite_rows & ~np.isfinite(want)
            assert not np.isfinite(got[non_finite]).any(), f"{target}: {name} of a non-finite row"
            check(
                got[finite_rows],
                want[finite_rows],
                stats_name,
                f"{target}: {name}",
                scale=finite_max(x64) if name == "mean" else None,
            )
    count(target, case, out=out_kind, eps=eps, stats=opt["return_stats"])


@pytest.mark.parametrize("target", list(NORM_VARIANTS))
@FUZZ
@given(data=st.data())
def test_fuzz_norms(target, data):
    run_norm(target, data.draw(norm_cases(target), label="case"))


# ------------------------------------------------------------------------------------------
# DyT
# ------------------------------------------------------------------------------------------

ALPHAS = st.one_of(st.sampled_from([0.5, 1.7, -0.3, 0.0, 1e-3, 25.0]), st.floats(-4, 4))


@st.composite
def dyt_cases(draw):
    dtype = draw(st.sampled_from(DTYPE_NAMES))
    shape = draw(row_shapes())
    affine = draw(st.sampled_from(["none", "weight", "bias", "weight_bias"]))
    shapes = {"x": shape, "dy": shape}
    shapes.update({name: shape[-1:] for name in ("weight", "bias") if name in affine})
    out_kind, out_layout = draw(out_specs(len(shape)))
    return Case(dtype, draw(array_specs(shapes)), dict(
        alpha=draw(ALPHAS), out=out_kind, out_layout=out_layout, n_threads=draw(st.sampled_from(THREADS)),
    ))  # fmt: skip


def run_dyt(case):
    opt, dtype_name = case.options, case.dtype
    alpha = opt["alpha"]
    arrays = case.build("dyt")
    x, dy, weight, bias = arrays["x"], arrays["dy"], arrays.get("weight"), arrays.get("bias")
    ref_y, ref_dx, ref_da, ref_dw, ref_db = reference.dyt(x, alpha, weight, bias, dy)
    before = snapshot(arrays)
    out_kind = opt["out"] if in_place_possible(x, opt["out"]) else "fresh"
    out, buffer = make_out(out_kind, opt["out_layout"], x, dtype_name)
    y = out_result(pynorm.dyt(x, alpha, weight, bias, out=out, n_threads=opt["n_threads"]), out, buffer)
    check_untouched(arrays, before, skip=("x",) if out_kind == "in_place" else ())
    x = before["x"] if out_kind == "in_place" else x

    def backward(n_threads):
        return pynorm.dyt_backward(dy, x, alpha, weight, bias, n_threads=n_threads)

    dx, dalpha, dweight, dbias = backward(opt["n_threads"])
    check_untouched({k: v for k, v in arrays.items() if k != "x"}, before)
    threads_recheck(opt["n_threads"], backward, (dx, dalpha, dweight, dbias), "dyt")
    # the scales of tests/test_dyt.py: |dy w alpha| for dx, the sum of |dy w x| for dalpha,
    # the column sums of |dy| for dweight and dbias
    g = np.abs(np.asarray(dy, np.float64)) * (np.abs(np.asarray(weight, np.float64)) if weight is not None else 1.0)
    terms = g * np.abs(np.asarray(x, np.float64))
    w_max = finite_max(weight) if weight is not None else 1.0
    check(y, ref_y, dtype_name, "dyt: y", scale=w_max + (finite_max(bias) if bias is not None else 0.0))
    exact = not case.has_inf()
    check(dx, ref_dx, dtype_name, "dyt: dx", scale=abs(alpha) * finite_max(g), nonfinite_exact=exact)
    dalpha_scale = float(terms[np.isfinite(terms)].sum())
    check(dalpha, ref_da, dtype_name, "dyt: dalpha", scale=dalpha_scale, nonfinite_exact=exact)
    dy_sums = float(column_sums(dy).max(initial=0))
    if weight is not None:
        check(dweight, ref_dw, dtype_name, "dyt: dweight", scale=dy_sums, nonfinite_exact=exact)
    if bias is not None:
        check(dbias, ref_db, dtype_name, "dyt: dbias", scale=dy_sums, nonfinite_exact=exact)
    count("dyt", case, out=out_kind)


@FUZZ
@given(data=st.data())
def test_fuzz_dyt(data):
    run_dyt(data.draw(dyt_cases(), label="case"))


# ------------------------------------------------------------------------------------------
# Linear attention (causal and not) and P1's merged attention
# ------------------------------------------------------------------------------------------


@st.composite
def attention_cases(draw, causal):
    dtype = draw(st.sampled_from(DTYPE_NAMES))
    d_k, d_v = draw(dims()), draw(dims())
    d_v = min(d_v, max(1, MAX_ELEMENTS // d_k))  # the Dk x Dv running state
    # tokens: within the element budget and the quadratic reference's cost
    max_tokens = int(min(MAX_ROWS, math.sqrt(MAX_REFERENCE_FLOPS / (d_k + d_v))))
    q_shape = draw(row_shapes(max_dim=d_k, min_leading=1, max_leading=4, max_rows=max_tokens, rows_axis_last=True))
    q_shape = q_shape[:-1] + (d_k,)
    problems = math.prod(q_shape[:-2])
    while (
        problems * q_shape[-2] * max(d_k, d_v) > MAX_ELEMENTS
        or problems * q_shape[-2] ** 2 * (d_k + d_v) > MAX_REFERENCE_FLOPS
    ):
        q_shape = q_shape[:-2] + (q_shape[-2] // 2, d_k)
    tokens = max(q_shape[-2], 1)
    v_shape = q_shape[:-1] + (d_v,)
    normalize = draw(st.booleans())
    shapes = {"q": q_shape, "k": q_shape, "v": v_shape, "dout": v_shape}
    counts = {name: tokens * max(d_k, d_v) for name in shapes}
    specs = draw(array_specs(shapes, positive=("q", "k") if normalize else (), counts=counts, specials=FINITE_SPECIALS))
    return Case(dtype, specs, dict(
        causal=causal, normalize=normalize, eps=draw(st.sampled_from([1e-6, 1e-2])),
        scale=draw(st.sampled_from([1.0, 0.125, 0.7])), n_threads=draw(st.sampled_from(THREADS)),
    ))  # fmt: skip


def run_attention(target, case):
    opt, dtype_name = case.options, case.dtype
    arrays = case.build("bilinear")
    q, k, v, dout = (arrays[n] for n in ("q", "k", "v", "dout"))
    kw = dict(causal=opt["causal"], normalize=opt["normalize"], eps=opt["eps"], scale=opt["scale"])
    want = fuzz_reference.linear_attention(q, k, v, dout, **kw)
    terms = fuzz_reference.linear_attention(q, k, v, dout, magnitudes=True, **kw)
    before = snapshot(arrays)
    out = pynorm.linear_attention(q, k, v, n_threads=opt["n_threads"], **kw)

    def backward(n_threads):
        return pynorm.linear_attention_backward(dout, q, k, v, n_threads=n_threads, **kw)

    grads = backward(opt["n_threads"])
    check_untouched(arrays, before)
    threads_recheck(opt["n_threads"], backward, grads, target)
    tol = LINEAR_ATTENTION_NORMALIZED_FLOAT64 if opt["normalize"] and dtype_name == "float64" else {}
    # Normalised, a numerator in the subnormal range carries an absolute rounding error of up to
    # a subnormal spacing per operation, and the quotient by a small denominator multiplies it:
    # results below the normal range are known to within the smallest normal number only (torch
    # gives the same bits: test_normalized_subnormal_quotient_is_float32s).
    floor = float(np.finfo(np_dtype(dtype_name)).tiny) if opt["normalize"] else None
    for name, got, ref, size in zip(("out", "dq", "dk", "dv"), (out,) + tuple(grads), want, terms):
        check(got, ref, dtype_name, f"{target}: {name}", scale=finite_max(size), floor=floor, **tol)
    count(target, case, normalize=opt["normalize"])


@pytest.mark.parametrize("causal", [False, True], ids=["linear_attention", "linear_attention_causal"])
@FUZZ
@given(data=st.data())
def test_fuzz_linear_attention(causal, data):
    run_attention(
        "linear_attention_causal" if causal else "linear_attention", data.draw(attention_cases(causal), label="case")
    )


@st.composite
def merged_cases(draw):
    dtype = draw(st.sampled_from(DTYPE_NAMES))
    d = draw(st.integers(1, 70) if draw(st.booleans()) else st.integers(1, 300))
    max_tokens = max(1, MAX_REFERENCE_FLOPS // (4 * d * d))
    x_shape = draw(row_shapes(max_dim=d, min_leading=1, max_leading=4, max_rows=min(MAX_ROWS, max_tokens),
                              rows_axis_last=True))  # fmt: skip
    x_shape = x_shape[:-1] + (d,)
    tokens = max(x_shape[-2], 1)
    shapes = {"x": x_shape, "W": (d, d), "V": (d, d), "dout": x_shape}
    degrees = {"x": 3}
    counts = {name: tokens * d * d for name in shapes}
    return Case(dtype, draw(array_specs(shapes, degrees=degrees, counts=counts, specials=FINITE_SPECIALS)), dict(
        scale=draw(st.sampled_from([1.0, 0.25, 0.7])), residual=draw(st.booleans()),
        n_threads=draw(st.sampled_from(THREADS)),
    ))  # fmt: skip


def run_merged(case):
    opt, dtype_name = case.options, case.dtype
    arrays = case.build("bilinear")
    x, W, V, dout = (arrays[n] for n in ("x", "W", "V", "dout"))
    kw = dict(scale=opt["scale"], residual=opt["residual"])
    want = fuzz_reference.merged_linear_attention(x, W, V, dout, **kw)
    before = snapshot(arrays)
    out = pynorm.merged_linear_attention(x, W, V, n_threads=opt["n_threads"], **kw)

    def backward(n_threads):
        return pynorm.merged_linear_attention_backward(dout, x, W, V, n_threads=n_threads, **kw)

    grads = backward(opt["n_threads"])
    check_untouched(arrays, before)
    threads_recheck(opt["n_threads"], backward, grads, "merged_linear_attention")
    for name, got, ref in zip(("out", "dx", "dW", "dV"), (out,) + tuple(grads), want):
        check(got, ref, dtype_name, f"merged_linear_attention: {name}")
    count("merged_linear_attention", case, residual=opt["residual"])


@FUZZ
@given(data=st.data())
def test_fuzz_merged_linear_attention(data):
    run_merged(data.draw(merged_cases(), label="case"))


# ------------------------------------------------------------------------------------------
# matmul: a @ b (+ add), and A^T B summed over rows
# ------------------------------------------------------------------------------------------


@st.composite
def matmul_cases(draw, transpose_a):
    dtype = draw(st.sampled_from(DTYPE_NAMES))
    a_shape = draw(row_shapes(max_leading=3))
    a_shape = a_shape if len(a_shape) > 1 else (1,) + a_shape
    rows, inner = math.prod(a_shape[:-1]), a_shape[-1]
    n = draw(dims())
    budget = MAX_ELEMENTS // max(rows if transpose_a else inner, 1), MAX_REFERENCE_FLOPS // max(rows * inner, 1)
    n = max(1, min(n, *budget))
    if transpose_a:
        shapes = {"a": a_shape, "b": a_shape[:-1] + (n,)}
        counts = {"a": rows, "b": rows}
    else:
        shapes = {"a": a_shape, "b": (inner, n)}
        if draw(st.booleans()):
            shapes["add"] = a_shape[:-1] + (n,)
        counts = {name: inner for name in shapes}
    return Case(
        dtype,
        draw(array_specs(shapes, counts=counts, specials=FINITE_SPECIALS)),
        dict(transpose_a=transpose_a, n_threads=draw(st.sampled_from(THREADS))),
    )


def run_matmul(target, case):
    opt, dtype_name = case.options, case.dtype
    arrays = case.build("bilinear")
    a, b, add = arrays["a"], arrays["b"], arrays.get("add")
    before = snapshot(arrays)
    if opt["transpose_a"]:
        want = fuzz_reference.matmul_tn(a, b)
        call = lambda n_threads: (pynorm.matmul(a, b, transpose_a=True, n_threads=n_threads),)  # noqa: E731
    else:
        want = fuzz_reference.matmul(a, b, add)
        call = lambda n_threads: (pynorm.matmul(a, b, add=add, n_threads=n_threads),)  # noqa: E731
    (got,) = call(opt["n_threads"])
    check_untouched(arrays, before)
    threads_recheck(opt["n_threads"], call, (got,), target)
    check(got, want, dtype_name, target)
    count(target, case, add=add is not None)


@pytest.mark.parametrize("transpose_a", [False, True], ids=["matmul", "matmul_transpose_a"])
@FUZZ
@given(data=st.data())
def test_fuzz_matmul(transpose_a, data):
    run_matmul("matmul_transpose_a" if transpose_a else "matmul", data.draw(matmul_cases(transpose_a), label="case"))


# ------------------------------------------------------------------------------------------
# The campaign's own parts, checked
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
def test_attention_reference_matches_torch_autograd(causal, normalize):
    """fuzz_reference's blocked linear attention (BLOCK rows at a time, three blocks here) is
    torch autograd's quadratic one of tests/reference.py."""
    rng = np.random.default_rng(0)
    q, k, v, dout = (rng.standard_normal((2, 3 * fuzz_reference.BLOCK - 5, d)) for d in (5, 5, 4, 4))
    if normalize:
        q, k = np.abs(q), np.abs(k)
    got = fuzz_reference.linear_attention(q, k, v, dout, causal, normalize, 1e-6, 0.7)
    want = reference.linear_attention(q, k, v, dout, causal, normalize, 1e-6, 0.7)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        assert_close(a, b, "float64", name)


def test_merged_reference_matches_torch_autograd():
    rng = np.random.default_rng(1)
    x, dout = rng.standard_normal((2, 2, 7, 5)), rng.standard_normal((2, 2, 7, 5))
    W, V = rng.standard_normal((2, 5, 5))
    tx, tW, tV = (reference.to_torch(a) for a in (x, W, V))
    y = 0.6 * (tx @ tW.T) @ (tx.transpose(-1, -2) @ (tx @ tV.T)) + tx
    want = [y.detach().numpy()] + reference.grads(y, dout, tx, tW, tV)
    got = fuzz_reference.merged_linear_attention(x, W, V, dout, 0.6, residual=True)
    for name, a, b in zip(("out", "dx", "dW", "dV"), got, want):
        assert_close(a, b, "float64", name)


def test_causal_reference_keeps_a_later_nan_out_of_earlier_tokens():
    q, k, v = (np.ones((4, 2)) for _ in range(3))
    k[2, 0] = np.nan
    out = fuzz_reference.linear_attention(q, k, v, np.ones((4, 2)), True, False)[0]
    assert np.isfinite(out[:2]).all() and np.isnan(out[2:]).all()


def test_check_catches_one_wrong_element_and_misplaced_nan_or_inf():
    want = np.linspace(-1, 1, 50).reshape(5, 10)
    check(want.astype(np.float32), want, "float32", "exact")
    for bad in (1e-3, np.nan, np.inf):
        got = want.copy()
        got[3, 4] += bad
        with pytest.raises(AssertionError):
            check(got, want, "float32", "one element off")
    with pytest.raises(AssertionError):  # an Inf of the reference must be an Inf of the result
        check(np.zeros(3), np.array([0.0, np.inf, 1.0]), "float32", "inf")


def test_layouts_are_the_views_they_say():
    layout = Layout(perm=(2, 0, 1), steps=(2, -3, 1), broadcast=(1,), offset=1)
    values = np.arange(4 * 1 * 6, dtype=np.float64).reshape(4, 1, 6)
    view, buffer = materialize(values, (4, 5, 6), layout, "float32", np.nan)
    assert view.shape == (4, 5, 6) and view.strides[1] == 0 and not view.flags.c_contiguous
    assert np.array_equal(view, np.broadcast_to(values, (4, 5, 6)))
    assert np.isnan(buffer).sum() == buffer.size - values.size  # everything else is a NaN gap
    assert layout.kind() == "transposed+sliced+reversed+broadcast+unaligned"


# ------------------------------------------------------------------------------------------
# What the campaign found and is fixed, or explained
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("center", [True, False], ids=["layer_norm", "rms_norm"])
def test_huge_row_times_tiny_weight(center):
    """A row of 1e15 (rstd 1e-15) with a weight of 1e-31: the kernel formed rstd * weight first,
    1e-46, which underflows float32 to 0, and returned 0 instead of +-1e-31."""
    x = np.array([[1e15, -1e15]], np.float32) if center else np.array([[1e15]], np.float32)
    w = np.full(x.shape[-1], 1.257e-31, np.float32)
    for bias in (None, np.zeros_like(w)):
        y = pynorm.layer_norm(x, w, bias, center=center)
        assert np.allclose(y, np.sign(x) * w, rtol=1e-6, atol=0), y


def test_normalized_subnormal_quotient_is_float32s():
    """The campaign's normalised-attention case with a subnormal v: pynorm is tens to hundreds of
    subnormal spacings from the float64 answer, and so is torch's float32, bit for bit: the
    numerator q k v is subnormal, its rounding error absolute, and dividing by q k + eps
    multiplies it. Hence run_attention's floor of the smallest normal number."""
    for qk in (0.5, 0.1, 0.03):
        q = k = np.array([[qk]], np.float32)
        v = np.array([[1e-40]], np.float32)
        got = pynorm.linear_attention(q, k, v, normalize=True)
        qt, kt, vt = (reference.torch.tensor(a) for a in (q, k, v))
        scores = qt @ kt.T
        want = ((scores @ vt) / (scores.sum(-1, keepdim=True) + 1e-6)).numpy()
        assert np.array_equal(got, want), (qk, got, want)
        exact = float(q[0, 0]) ** 2 * float(v[0, 0]) / (float(q[0, 0]) ** 2 + 1e-6)
        assert abs(float(got[0, 0]) - exact) < float(np.finfo(np.float32).tiny)


# ------------------------------------------------------------------------------------------
# Bugs the campaign found. Fixed ones are regular tests; ones not fixed yet are strict xfails
# (each must fail until the kernel is fixed: then XPASS fails the suite and the mark goes), and
# the campaign keeps out of their range meanwhile (FINITE_SPECIALS).
# ------------------------------------------------------------------------------------------

ROW = np.array([[1.0, -2.0, 3.0, 0.5]])


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
@pytest.mark.parametrize("magnitude", [1e19, 1e30])
@pytest.mark.parametrize("center", [True, False], ids=["layer_norm", "rms_norm"])
def test_bug_norm_float32_range_huge(dtype_name, magnitude, center):
    """Rows of |x| ~ 1e19..1e38 in float32/bfloat16 have a representable answer (the row
    normalised, ~N(0, 1)), but x^2 overflows float32 in the variance: pynorm returned 0 (1e19)
    or NaN (1e30; its backward NaN too), as torch's float32 CPU norms do. Fixed: such rows get
    float64 statistics (norm.cpp's row_stats_float64), forward and backward."""
    if dtype_name == "bfloat16" and reference.BFLOAT16 is None:
        pytest.skip("ml_dtypes is not installed")
    x = (magnitude * ROW).astype(np_dtype(dtype_name))
    dy = np.array([[1.0, 0.0, 0.0, 0.0]]).astype(x.dtype)
    ref_y, ref_dx, _, _ = reference.layer_norm(x, None, None, 1e-5, center, True, dy)
    check(pynorm.layer_norm(x, center=center), ref_y, dtype_name, "y")
    check(pynorm.layer_norm_backward(dy, x, center=center)[0], ref_dx, dtype_name, "dx", scale=1 / magnitude)


@pytest.mark.parametrize("magnitude", [1e-22, 1e-30])
@pytest.mark.parametrize("center", [True, False], ids=["layer_norm", "rms_norm"])
def test_bug_norm_float32_range_tiny_with_eps_0(magnitude, center):
    """With eps = 0 (P1's x / ||x|| is rms_norm(x, eps=0) / sqrt(dim)) a float32 row of
    |x| ~ 1e-22 lost digits (x^2 is subnormal: 1.4% off) and one of 1e-30 gave +-Inf (x^2
    underflows to 0), where the normalised row is representable. Fixed as the huge rows."""
    x = (magnitude * ROW).astype(np.float32)
    ref_y = reference.layer_norm(x, None, None, 0.0, center, True, np.zeros(x.shape))[0]
    check(pynorm.layer_norm(x, eps=0.0, center=center), ref_y, "float32", "y")


@pytest.mark.parametrize("dim", [8, 37, 1000])
@pytest.mark.parametrize("center", [True, False], ids=["layer_norm", "rms_norm"])
def test_norm_float32_rows_out_of_reach_among_others(dim, center):
    """The rows whose float32 sum of squares is out of reach (one huge, one tiny with eps = 0)
    are redone after the row loop, in the middle of groups of ordinary rows: those rows, and
    the gradients' column sums, must be as if the rare rows were ordinary (the float64
    reference), every row bitwise the same as computed alone, whatever the thread count, with
    recomputed or with given statistics."""
    rng = np.random.default_rng(dim)
    x = rng.standard_normal((203, dim)).astype(np.float32)
    x[37] *= np.float32(1e30)  # its squares overflow float32
    x[38] = x[38] * np.float32(1e-25) + np.float32(3e-24 if center else 0.0)  # tiny: eps = 0 only
    w, b = (rng.standard_normal(dim).astype(np.float32) for _ in range(2))
    dy = rng.standard_normal(x.shape).astype(np.float32)
    for eps in (1e-5, 0.0):
        rows = slice(None) if eps == 0 else np.r_[0:38, 39:203]  # with eps > 0 the tiny row is ~0
        kwargs = dict(eps=eps, center=center)
        ref_y, ref_dx, ref_dw, ref_db = reference.layer_norm(x[rows], w, b, eps, center, True, dy[rows])
        got = {t: pynorm.layer_norm(x[rows], w, b, return_stats=True, n_threads=t, **kwargs) for t in (1, 2)}
        y, mean, rstd = got[1]
        assert all(a.tobytes() == c.tobytes() for a, c in zip(got[1], got[2]))
        check(y, ref_y, "float32", "y")
        alone = np.concatenate([pynorm.layer_norm(x[rows][i : i + 1], w, b, **kwargs) for i in range(len(y))])
        assert alone.tobytes() == y.tobytes()
        for stats in ({}, {"mean": mean if center else None, "rstd": rstd}):
            grads = [
                pynorm.layer_norm_backward(dy[rows], x[rows], w, b, n_threads=t, **stats, **kwargs) for t in (1, 2)
            ]
            assert all(a.tobytes() == c.tobytes() for a, c in zip(*grads))
            dx, dw, db = grads[0]
            check(dx, ref_dx, "float32", "dx")
            check(dw, ref_dw, "float32", "dweight")
            check(db, ref_db, "float32", "dbias")


@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("where", ["key_5", "query_100"])
def test_linear_attention_nan_reaches_what_attends_to_it(dtype_name, causal, where):
    """A NaN reaches exactly the rows whose definition involves it. In key 5: out and dq of the
    queries that attend to token 5 (all, or i >= 5 when causal), dv of token 5, no dk. In query
    100: out of token 100, dk and dv of the tokens it attends to (all, or j <= 100), no dq.
    Causal backward used to put NaN into rows the definition keeps it out of (dq of rows 0-4 for
    the key, dk of rows 101-111 for the query: the masked part of a chunk multiplied into the
    NaN); gemm.h's masked tiles now skip the depths outside the triangle.
    (The campaign's attention cases hold finite values only: see FINITE_SPECIALS.)"""
    rng = np.random.default_rng(5)
    n = 150
    q, k, v, dout = (rng.standard_normal((2, n, 3)).astype(np_dtype(dtype_name)) for _ in range(4))
    tokens, everything, nothing = np.arange(n), np.ones(n, bool), np.zeros(n, bool)
    if where == "key_5":
        k[:, 5, 0] = np.nan
        attends = tokens >= 5 if causal else everything
        expected = {"out": attends, "dq": attends, "dk": nothing, "dv": tokens == 5}
    else:
        q[:, 100, 1] = np.nan
        attended = tokens <= 100 if causal else everything
        expected = {"out": tokens == 100, "dq": nothing, "dk": attended, "dv": attended}
    out = pynorm.linear_attention(q, k, v, causal=causal)
    dq, dk, dv = pynorm.linear_attention_backward(dout, q, k, v, causal=causal)
    for name, got in (("out", out), ("dq", dq), ("dk", dk), ("dv", dv)):
        nan_rows = np.isnan(np.asarray(got, np.float64)).any(-1)
        wrong = np.argwhere(nan_rows != expected[name][None, :])[:, 1]
        assert not wrong.size, f"{name}: NaN rows differ from the definition's at tokens {np.unique(wrong)[:12]}"
