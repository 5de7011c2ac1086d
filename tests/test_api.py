"""The promises every op shares: clear errors, thread-count independence, threading control,
SIMD level selection, concurrency."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import pynorm

X = np.ones((4, 8), np.float32)
W8 = np.ones(8, np.float32)

BAD_CALLS = [
    (lambda: pynorm.layer_norm(X, np.ones(7)), ValueError, "weight must have shape (8,)"),
    (lambda: pynorm.layer_norm(X, W8, np.ones((2, 8))), ValueError, "bias must have shape (8,)"),
    (lambda: pynorm.layer_norm(np.float32(3.0)), ValueError, "at least 1 dimension"),
    (lambda: pynorm.layer_norm(X, eps=-1e-5), ValueError, "eps must be finite and >= 0"),
    (lambda: pynorm.layer_norm(X, eps=float("nan")), ValueError, "eps must be finite"),
    (lambda: pynorm.layer_norm(X, eps="small"), TypeError, "eps must be a real number"),
    (lambda: pynorm.layer_norm("abc"), TypeError, "x must be an array of floats"),
    (lambda: pynorm.layer_norm(np.array([{"a": 1}])), TypeError, "dtype object"),
    (lambda: pynorm.layer_norm(np.ones((3, 4), np.int64)), TypeError, "dtype int64"),
    (lambda: pynorm.layer_norm(np.ones((3, 4), np.complex128)), TypeError, "dtype complex128"),
    (lambda: pynorm.layer_norm([[1, 2], [3]]), TypeError, "could not be read as an array"),
    (lambda: pynorm.layer_norm(X, out=np.empty((4, 8), np.float64)), ValueError, "out must have shape"),
    (lambda: pynorm.layer_norm(X, out=[0.0]), TypeError, "out must be a NumPy array"),
    (lambda: pynorm.layer_norm(X, n_threads=0), ValueError, "n_threads must be a positive integer"),
    (lambda: pynorm.layer_norm_backward(np.ones((4, 7)), X), ValueError, "dy has shape (4, 7) but x has shape (4, 8)"),
    (lambda: pynorm.layer_norm_backward(X, X, mean=np.zeros(3)), ValueError, "mean must have shape (4,)"),
    (lambda: pynorm.rms_norm(X, np.ones(9)), ValueError, "pynorm.rms_norm: weight must have shape (8,)"),
    (lambda: pynorm.rms_norm_backward(X, X, rstd=np.zeros(5)), ValueError, "rstd must have shape (4,)"),
    (lambda: pynorm.dyt(X, np.ones(2)), ValueError, "alpha must have exactly one element"),
    (lambda: pynorm.dyt(X, "half"), TypeError, "alpha must be a real number"),
    (lambda: pynorm.dyt(X, 0.5, np.ones(3)), ValueError, "weight must have shape (8,)"),
    (lambda: pynorm.dyt_backward(np.ones((2, 8)), X, 0.5), ValueError, "dy has shape"),
    (lambda: pynorm.dyt(np.ones(4, bool), 0.5), TypeError, "dtype bool"),
    (lambda: pynorm.set_num_threads(-1), ValueError, "n must be a positive integer or None"),
]


@pytest.mark.parametrize("call,error,message", BAD_CALLS, ids=[m for _, _, m in BAD_CALLS])
def test_bad_input_gets_a_clear_error(call, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_partially_overlapping_out_gets_the_result_computed_apart():
    """NumPy's convention: out may overlap x; the result is as if computed into a new array."""
    buf = np.arange(40, dtype=np.float32)
    x = buf[:32].reshape(4, 8)
    want = pynorm.layer_norm(x.copy())
    out = buf[8:40].reshape(4, 8)
    assert pynorm.layer_norm(x, out=out) is out
    assert np.array_equal(out, want)


def test_internal_module_guards_its_boundary():
    """_core takes the call description by keyword only, and refuses a description whose
    sizes and strides reach outside the arrays it names."""
    core = pynorm._core_loader.core()
    x, y = np.ones((4, 8), np.float32), np.empty((4, 8), np.float32)
    call = dict(
        x=x,
        x_row_stride=8,
        y=y,
        rows=4,
        dim=8,
        weight=None,
        bias=None,
        mean=None,
        rstd=None,
        dtype=0,
        eps=1e-5,
        center=True,
        scale=True,
        threads=0,
    )
    core.norm_forward(**call)
    assert np.allclose(y, 0)
    with pytest.raises(TypeError, match="keyword arguments only"):
        core.norm_forward(*call.values())
    with pytest.raises(TypeError, match="missing keyword argument 'threads'"):
        core.norm_forward(**{k: v for k, v in call.items() if k != "threads"})
    with pytest.raises(TypeError, match="x_row_stride has the wrong type"):
        core.norm_forward(**{**call, "x_row_stride": 8.0})
    for change, message in [
        ({"rows": 5}, "x is smaller than"),
        ({"x_row_stride": 9}, "x is smaller than"),
        ({"y": y[:3]}, "y is smaller than"),
        ({"weight": np.ones(7, np.float32)}, "weight is smaller"),
        ({"mean": np.ones(3, np.float32)}, "mean is smaller"),
        ({"dtype": 1}, "wrong itemsize"),
        ({"dtype": 9}, "unknown dtype code 9"),
        ({"rows": -1}, "negative size"),
    ]:
        with pytest.raises(ValueError, match=message):
            core.norm_forward(**{**call, **change})
    read_only = np.empty((4, 8), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="y must be writable"):
        core.norm_forward(**{**call, "y": read_only})
    with pytest.raises(TypeError, match="x must be a NumPy array"):
        core.norm_forward(**{**call, "x": 0})


def _all_outputs(x, dy, w, b, n_threads):
    outs = [pynorm.layer_norm(x, w, b, n_threads=n_threads)]
    outs += pynorm.layer_norm_backward(dy, x, w, b, n_threads=n_threads)
    outs += pynorm.rms_norm_backward(dy, x, w, n_threads=n_threads)
    outs += [pynorm.dyt(x, 0.6, w, b, n_threads=n_threads)]
    outs += pynorm.dyt_backward(dy, x, 0.6, w, b, n_threads=n_threads)
    return outs


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape", [(3000, 300), (203, 3001), (7, 70000), (100_000, 8), (4229, 32), (64, 40000)])
def test_results_are_bitwise_identical_for_1_2_3_threads(dtype, shape):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(shape[-1]).astype(dtype)
    b = rng.standard_normal(shape[-1]).astype(dtype)
    reference = _all_outputs(x, dy, w, b, 1)
    for n in (2, 3):
        for got, want in zip(_all_outputs(x, dy, w, b, n), reference):
            assert np.array_equal(got, want, equal_nan=True)


@pytest.mark.parametrize("threads", [1, 2])
def test_long_rows_column_sums(threads):
    """Few long rows: the parameter gradients' partial sums come in blocks of several rows
    (a block per row made partials as large as the data), summed with the columns split
    among the threads; checked against float64 NumPy sums."""
    rng = np.random.default_rng(9)
    x, dy = rng.standard_normal((2, 48, 40000))
    w, b = rng.standard_normal((2, 40000))
    _, mean, rstd = pynorm.layer_norm(x, w, b, return_stats=True)
    _, dw, db = pynorm.layer_norm_backward(dy, x, w, b, mean=mean, rstd=rstd, n_threads=threads)
    xhat = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(dw, (dy * xhat).sum(0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(db, dy.sum(0), rtol=1e-10, atol=1e-10)
    _, dalpha, dw_dyt, db_dyt = pynorm.dyt_backward(dy, x, 0.5, w, b, n_threads=threads)
    t = np.tanh(0.5 * x)
    np.testing.assert_allclose(dw_dyt, (dy * t).sum(0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(db_dyt, dy.sum(0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dalpha, (dy * w * (1 - t * t) * x).sum(), rtol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dim", [3, 16, 24, 32, 64, 65])
def test_each_row_is_computed_as_if_alone(dtype, dim):
    """Short rows go in groups (of a vector's lane count, or of 4) with shared horizontal sums,
    the backward's rows of one or two vectors kept in registers; a row's result must not
    depend on its group: compare with each row passed alone."""
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((37, dim)) + 5).astype(dtype)
    dy = rng.standard_normal((37, dim)).astype(dtype)
    w = rng.standard_normal(dim).astype(dtype)
    for center, scale in [(True, True), (False, True), (True, False)]:
        y = pynorm.layer_norm(x, w, w, center=center, scale=scale, n_threads=1)
        dx = pynorm.layer_norm_backward(dy, x, w, w, center=center, scale=scale, n_threads=1)[0]
        for r in range(37):
            assert np.array_equal(y[r], pynorm.layer_norm(x[r], w, w, center=center, scale=scale))
            assert np.array_equal(dx[r], pynorm.layer_norm_backward(dy[r], x[r], w, w, center=center, scale=scale)[0])


def test_set_num_threads_and_threadpoolctl():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = pynorm.get_num_threads()
    try:
        pynorm.set_num_threads(3)
        assert pynorm.get_num_threads() == 3
        pynorm.set_num_threads(None)  # back to OpenMP's default, which threadpoolctl controls
        with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
            assert pynorm.get_num_threads() == 1
    finally:
        pynorm.set_num_threads(None)
    assert pynorm.get_num_threads() == before


def test_concurrent_calls_from_python_threads():
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((500, 257)).astype(np.float32) for _ in range(8)]
    expected = [pynorm.layer_norm_backward(x, x, x[0])[0] for x in inputs]
    results = [None] * len(inputs)

    def work(i):
        for _ in range(5):
            results[i] = pynorm.layer_norm_backward(inputs[i], inputs[i], inputs[i][0])[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        assert np.array_equal(got, want)


def _run_python(code, **env):
    """Runs code in a fresh interpreter, outside the source tree (which has no compiled module)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
        cwd=os.path.dirname(os.path.dirname(pynorm.__file__)),
    )


def test_simd_level_can_be_forced_lower_by_environment():
    levels = pynorm._core_loader.core().supported_simd_levels()
    assert "baseline" in levels and pynorm.simd_level() in levels
    run = _run_python("import pynorm; print(pynorm.simd_level())", PYNORM_SIMD="baseline")
    assert run.stdout.strip() == "baseline"
    run = _run_python("import pynorm; print(pynorm.simd_level())", PYNORM_SIMD="sse9")
    assert "PYNORM_SIMD='sse9' ignored: unknown SIMD level" in run.stderr


def test_every_supported_level_gives_the_same_answers_to_rounding():
    core = pynorm._core_loader.core()
    original = core.simd_level()
    rng = np.random.default_rng(11)
    x = rng.standard_normal((33, 1001))
    results = {}
    try:
        for level in core.supported_simd_levels():
            core.set_simd_level(level)
            results[level] = _all_outputs(x, x[::-1].copy(), x[0], x[1], 2)
    finally:
        core.set_simd_level(original)
    for level, outs in results.items():
        for got, want in zip(outs, results["baseline"]):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max(), err_msg=level)


def test_show_config(capsys):
    pynorm.show_config()
    text = capsys.readouterr().out
    for key in ("version", "simd_level", "openmp", "threads", "cuda"):
        assert key in text


def test_large_output_buffers_are_reused_only_once_dropped():
    x = np.random.default_rng(5).standard_normal((512, 1024)).astype(np.float32)  # 2 MiB outputs
    first = pynorm.layer_norm(x)
    address = first.ctypes.data
    expected = first.copy()
    assert pynorm.layer_norm(x).ctypes.data != address  # `first` is alive: never handed out
    view = first[7]
    del first
    other = pynorm.dyt(x, 0.5)
    assert other.ctypes.data != address  # a view of it is alive
    del view
    again = pynorm.layer_norm(x)
    assert again.ctypes.data == address and np.array_equal(again, expected)
    assert again.ctypes.data % 64 == 0
    assert np.array_equal(other, pynorm.dyt(x, 0.5))


@pytest.mark.parametrize("x_offset", [0, 16, 48, 1040, 4032, 4080])
def test_large_outputs_sit_half_a_page_from_their_inputs(x_offset):
    """A large output is placed (in its 64-byte-aligned buffer) about 2 KiB away, within a 4 KiB
    page, from the arrays its kernel reads: an input just behind its output in the page makes
    nearly every load alias a store in flight (4K aliasing). Values are unchanged."""
    from pynorm import _array

    rows, dim = 1024, 1024
    raw = np.empty(rows * dim + 2048, np.float32)
    start = (x_offset - raw.ctypes.data) % 4096 // 4
    x = raw[start : start + rows * dim].reshape(rows, dim)
    x[...] = np.random.default_rng(5).standard_normal((rows, dim))
    dy = np.ones_like(x)

    def distance(a, b):
        d = (a.ctypes.data - b.ctypes.data) % 4096
        return min(d, 4096 - d)

    y = pynorm.dyt(x, 0.5)
    assert y.ctypes.data % 64 == 0 and distance(y, x) >= 2048 - 64
    assert np.array_equal(y[:100], pynorm.dyt(x[:100], 0.5))  # a small call: plain NumPy output
    dx = pynorm.rms_norm_backward(dy, x)[0]
    assert distance(dx, x) >= 1024 - 64 and distance(dx, dy) >= 1024 - 64
    assert _array.page_offset([0]) == 2048 and _array.page_offset([0, 2048]) in (1024, 3072)


STREAMED_CALLS = {
    "layer_norm": lambda x, dy, w: [pynorm.layer_norm(x, w, w)],
    "layer_norm_backward": lambda x, dy, w: list(pynorm.layer_norm_backward(dy, x, w, w)),
    "rms_norm": lambda x, dy, w: [pynorm.rms_norm(x, w)],
    "rms_norm_backward": lambda x, dy, w: list(pynorm.rms_norm_backward(dy, x, w)),
    "dyt": lambda x, dy, w: [pynorm.dyt(x, 0.7, w, w)],
    "dyt_backward": lambda x, dy, w: list(pynorm.dyt_backward(dy, x, 0.7, w, w)),
}


@pytest.mark.parametrize("dim", [1024, 1001, 32, 3])  # aligned rows; rows at every alignment; short rows
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("op", sorted(STREAMED_CALLS))
def test_outputs_over_4_mib_equal_the_cached_path(op, dtype, dim):
    """Outputs of 4 MiB or more are written with streaming stores; the values must be bitwise
    those of the path that stores normally, which
    computes each row the same way. (The parameter gradients do not depend on the path; they
    are checked against torch elsewhere.)"""
    rows = (4 << 20) // (np.dtype(dtype).itemsize * dim) + 3
    rng = np.random.default_rng(11)
    x = (3 * rng.standard_normal((rows, dim)) + 0.5).astype(dtype)
    dy = rng.standard_normal((rows, dim)).astype(dtype)
    w = (1 + 0.1 * rng.standard_normal(dim)).astype(dtype)
    whole = STREAMED_CALLS[op](x, dy, w)
    chunk = 997  # small enough that no call streams its output
    parts = [STREAMED_CALLS[op](x[r : r + chunk], dy[r : r + chunk], w) for r in range(0, rows, chunk)]
    assert np.array_equal(whole[0], np.concatenate([p[0] for p in parts]))


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("dim", [1, 7, 17, 33, 1001])
def test_row_tails_neither_read_nor_write_past_the_row(dtype, dim):
    """Row tails (dim not a multiple of the vector width) are loaded and stored masked: the
    elements after each row's end are never written, and NaN placed just past the input's
    rows (in its row stride's padding, and after the last row) never reaches a result."""
    dt = np.dtype(dtype) if dtype != "bfloat16" else np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    rng = np.random.default_rng(3)
    rows = 37
    padded = np.full((rows + 1, dim + 5), np.nan).astype(dt)  # NaN after every row and after the last
    padded[:rows, :dim] = rng.standard_normal((rows, dim)).astype(dt)
    x = padded[:rows, :dim]  # rows dim long, stride dim + 5
    dy = rng.standard_normal((rows, dim)).astype(dt)
    w, b = np.ones(dim, dt), np.zeros(dim, dt)
    buffer = np.full(rows * dim + 64, 7.0).astype(dt)  # out= in a larger buffer: 64 sentinels after it
    out = buffer[: rows * dim].reshape(rows, dim)
    pynorm.layer_norm(x, w, b, out=out)
    assert np.all(buffer[rows * dim :].astype(np.float64) == 7.0)
    results = [out, pynorm.rms_norm(x, w), pynorm.dyt(x, 0.5, w, b)]
    results += pynorm.layer_norm_backward(dy, x, w, b) + pynorm.dyt_backward(dy, x, 0.5, w, b)
    for r in results:
        assert np.all(np.isfinite(np.asarray(r, dtype=np.float64)))
