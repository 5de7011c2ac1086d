"""The conventions every op shares (issue 19 section 3, issue 18's one call path):

* one rule for scalar arguments (eps, alpha, scale) and one for thread counts;
* NumPy's array conventions: any byte order in (converted, the caller's array untouched), any
  writable out= view of the right shape and dtype (read-only out= refused);
* the dtype table is C++'s;
* the GPU call path -- the same checks, the same call description -- run on the CPU through a
  fake GPU library whose "device" memory is NumPy memory and a fake CUDA module that hands the
  description to pynorm._core.
"""

import inspect

import numpy as np
import pytest

import pynorm
from pynorm import _array

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(19)
X = RNG.standard_normal((6, 10))
W = RNG.standard_normal(10)
Q, K, V = (RNG.random((2, 5, 4)) + 0.1 for _ in range(3))

# ------------------------------------------------------------------------------------------
# Scalars: one rule
# ------------------------------------------------------------------------------------------

# (call with the scalar s, argument name, the value the results are compared at)
SCALAR_CALLS = {
    "layer_norm eps": (lambda s: pynorm.layer_norm(X, W, eps=s), "eps", 0.5),
    "rms_norm eps": (lambda s: pynorm.rms_norm(X, eps=s), "eps", 0.5),
    "layer_norm_backward eps": (lambda s: pynorm.layer_norm_backward(X, X, W, eps=s)[0], "eps", 0.5),
    "dyt alpha": (lambda s: pynorm.dyt(X, s, W), "alpha", 0.5),
    "dyt_backward alpha": (lambda s: pynorm.dyt_backward(X, X, s, W)[0], "alpha", 0.5),
    "linear_attention scale": (lambda s: pynorm.linear_attention(Q, K, V, scale=s), "scale", 0.5),
    "linear_attention eps": (lambda s: pynorm.linear_attention(Q, K, V, normalize=True, eps=s), "eps", 0.5),
    "merged_linear_attention scale": (
        lambda s: pynorm.merged_linear_attention(Q, W[:4, None] * W[:4], W[:4, None] * W[:4], scale=s),
        "scale",
        0.5,
    ),  # fmt: skip
}
REAL_FORMS = {
    "float": lambda v: float(v),
    "numpy float32": lambda v: np.float32(v),
    "numpy float64": lambda v: np.float64(v),
    "0-d array": lambda v: np.array(v),
    "one-element array": lambda v: np.array([v]),
    "torch 0-d tensor": lambda v: torch.tensor(v),
}
NOT_NUMBERS = {"str": "0.5", "bytes": b"0.5", "bool": True, "numpy bool": np.bool_(True), "None": None,
               "complex": 0.5 + 0j, "str array": np.array("0.5"), "object": object()}  # fmt: skip


@pytest.mark.parametrize("form", list(REAL_FORMS))
@pytest.mark.parametrize("call", list(SCALAR_CALLS))
def test_real_numbers_in_any_form_give_the_same_result(call, form):
    run, _, value = SCALAR_CALLS[call]
    assert np.array_equal(run(REAL_FORMS[form](value)), run(value))


@pytest.mark.parametrize("call", list(SCALAR_CALLS))
def test_python_ints_are_real_numbers(call):
    run, _, _ = SCALAR_CALLS[call]
    assert np.array_equal(run(1), run(1.0))


@pytest.mark.parametrize("kind", list(NOT_NUMBERS))
@pytest.mark.parametrize("call", list(SCALAR_CALLS))
def test_anything_else_is_a_type_error_naming_the_argument(call, kind):
    run, name, _ = SCALAR_CALLS[call]
    with pytest.raises(TypeError, match=rf"{name} must be a real number"):
        run(NOT_NUMBERS[kind])


@pytest.mark.parametrize("call", list(SCALAR_CALLS))
def test_arrays_of_several_elements_are_a_value_error(call):
    run, name, _ = SCALAR_CALLS[call]
    with pytest.raises(ValueError, match=rf"{name} must have exactly one element"):
        run(np.array([0.5, 0.5]))


@pytest.mark.parametrize("eps", [float("nan"), float("inf"), -float("inf"), -1e-5, np.float32("nan"), np.array(np.inf)])
@pytest.mark.parametrize("call", [c for c in SCALAR_CALLS if c.endswith("eps")])
def test_eps_must_be_finite_and_non_negative(call, eps):
    with pytest.raises(ValueError, match="eps must be finite and >= 0"):
        SCALAR_CALLS[call][0](eps)


# ------------------------------------------------------------------------------------------
# Thread counts: one rule
# ------------------------------------------------------------------------------------------

THREAD_CALLS = {
    "set_num_threads": (lambda n: pynorm.set_num_threads(n), "n"),
    "layer_norm": (lambda n: pynorm.layer_norm(X, n_threads=n), "n_threads"),
    "dyt_backward": (lambda n: pynorm.dyt_backward(X, X, 0.5, n_threads=n), "n_threads"),
    "linear_attention": (lambda n: pynorm.linear_attention(Q, K, V, n_threads=n), "n_threads"),
    "matmul": (lambda n: pynorm.matmul(X, X.T, n_threads=n), "n_threads"),
    "merged_linear_attention_backward": (
        lambda n: pynorm.merged_linear_attention_backward(Q, Q, np.eye(4), np.eye(4), n_threads=n),
        "n_threads",
    ),
}


@pytest.fixture
def restore_threads():
    yield
    pynorm.set_num_threads(None)


@pytest.mark.parametrize("n", [1, 2, np.int64(2), None])
@pytest.mark.parametrize("call", list(THREAD_CALLS))
def test_positive_integers_and_none_are_thread_counts(call, n, restore_threads):
    THREAD_CALLS[call][0](n)


@pytest.mark.parametrize("n", [0, -1, np.int32(0)])
@pytest.mark.parametrize("call", list(THREAD_CALLS))
def test_zero_and_negative_thread_counts_are_a_value_error(call, n, restore_threads):
    run, name = THREAD_CALLS[call]
    with pytest.raises(ValueError, match=rf"{name} must be a positive integer or None"):
        run(n)


@pytest.mark.parametrize("n", [2.0, "2", True, np.float64(2), [2]])
@pytest.mark.parametrize("call", list(THREAD_CALLS))
def test_non_integer_thread_counts_are_a_type_error(call, n, restore_threads):
    run, name = THREAD_CALLS[call]
    with pytest.raises(TypeError, match=rf"{name} must be a positive integer or None"):
        run(n)


def test_set_num_threads_sets_and_none_restores(restore_threads):
    default = pynorm.get_num_threads()
    pynorm.set_num_threads(np.int64(3))
    assert pynorm.get_num_threads() == 3
    pynorm.set_num_threads(None)
    assert pynorm.get_num_threads() == default


# ------------------------------------------------------------------------------------------
# Byte order: any, converted without touching the caller's array
# ------------------------------------------------------------------------------------------


# Every op, its array arguments as a dict (each may be swapped to big-endian).
def _ops():
    rng = np.random.default_rng(3)
    x, dy = rng.standard_normal((2, 7, 9))
    w, b = rng.standard_normal((2, 9))
    q, k, v, dout = rng.random((4, 2, 7, 9)) + 0.1
    m = rng.standard_normal((9, 9))
    return {
        "layer_norm": (lambda x, w, b: pynorm.layer_norm(x, w, b), dict(x=x, w=w, b=b)),
        "layer_norm_backward": (lambda dy, x, w, b: pynorm.layer_norm_backward(dy, x, w, b),
                                dict(dy=dy, x=x, w=w, b=b)),
        "rms_norm": (lambda x, w: pynorm.rms_norm(x, w), dict(x=x, w=w)),
        "dyt": (lambda x, w, b: pynorm.dyt(x, 0.7, w, b), dict(x=x, w=w, b=b)),
        "dyt_backward": (lambda dy, x, w, b: pynorm.dyt_backward(dy, x, 0.7, w, b), dict(dy=dy, x=x, w=w, b=b)),
        "linear_attention": (lambda q, k, v: pynorm.linear_attention(q, k, v, causal=True), dict(q=q, k=k, v=v)),
        "linear_attention_backward": (lambda dout, q, k, v: pynorm.linear_attention_backward(dout, q, k, v),
                                      dict(dout=dout, q=q, k=k, v=v)),
        "matmul": (lambda a, b: pynorm.matmul(a, b), dict(a=x, b=m)),
        "merged_linear_attention_backward": (
            lambda dout, x, W, V: pynorm.merged_linear_attention_backward(dout, x, W, V),
            dict(dout=dout, x=q, W=m, V=m.T)),
    }  # fmt: skip


OPS = _ops()


def _results(r):
    return [a for a in (r if isinstance(r, tuple) else (r,)) if a is not None]


@pytest.mark.parametrize("dtype", ["f4", "f8", "f2"])
@pytest.mark.parametrize("op", list(OPS))
def test_big_endian_inputs_are_converted_and_left_untouched(op, dtype):
    run, arrays = OPS[op]
    native = {k: a.astype("=" + dtype) for k, a in arrays.items()}
    swapped = {k: a.astype(">" + dtype) for k, a in arrays.items()}
    before = {k: (a.tobytes(), a.dtype) for k, a in swapped.items()}
    for got, want in zip(_results(run(**swapped)), _results(run(**native))):
        assert got.dtype == want.dtype and got.dtype.isnative and np.array_equal(got, want)
    assert {k: (a.tobytes(), a.dtype) for k, a in swapped.items()} == before


def test_big_endian_out_is_written():
    out = np.empty((6, 10), ">f8")
    assert pynorm.layer_norm(X, W, out=out) is out
    assert np.array_equal(out, pynorm.layer_norm(X, W)) and out.dtype == np.dtype(">f8")


# ------------------------------------------------------------------------------------------
# out=: any writable view of the right shape and dtype
# ------------------------------------------------------------------------------------------


def _views():
    """out= views of shape (6, 10): (name, make() -> (out, base array to check untouched parts of))."""

    def transposed():
        base = np.full((10, 6), 7.0)
        return base.T, base

    def strided():
        base = np.full((12, 20), 7.0)
        return base[::2, ::2], base

    def negative():
        base = np.full((6, 10), 7.0)
        return base[::-1, ::-1], base

    def rows_strided():
        base = np.full((6, 13), 7.0)
        return base[:, 2:12], base

    def torch_tensor():
        base = torch.full((6, 10), 7.0, dtype=torch.float64)
        return base, base.numpy()

    return {"transposed": transposed, "every other element": strided, "negative strides": negative,
            "row stride 13": rows_strided, "torch CPU tensor": torch_tensor}  # fmt: skip


VIEWS = _views()
OUT_CALLS = {
    "layer_norm": lambda x, out: pynorm.layer_norm(x, W, W, out=out),
    "rms_norm": lambda x, out: pynorm.rms_norm(x, W, out=out),
    "dyt": lambda x, out: pynorm.dyt(x, 0.7, W, W, out=out),
}


@pytest.mark.parametrize("view", list(VIEWS))
@pytest.mark.parametrize("op", list(OUT_CALLS))
def test_any_writable_out_view_is_written_and_returned(op, view):
    out, base = VIEWS[view]()
    untouched = np.asarray(base).copy()
    result = OUT_CALLS[op](X, out)
    assert result is out
    want = OUT_CALLS[op](X, None)
    assert np.array_equal(np.asarray(out), want)
    fresh_out, fresh_base = VIEWS[view]()  # the same view of a fresh base: mark what it covers
    np.asarray(fresh_out)[...] = np.nan
    outside = ~np.isnan(np.asarray(fresh_base))
    assert np.array_equal(np.asarray(base)[outside], untouched[outside])  # nothing written outside the view


@pytest.mark.parametrize("op", list(OUT_CALLS))
def test_in_place_on_a_non_contiguous_x(op):
    base = RNG.standard_normal((10, 6))
    x = base.T
    want = OUT_CALLS[op](x.copy(), None)
    assert OUT_CALLS[op](x, x) is x
    assert np.array_equal(x, want)


def test_read_only_out_is_refused():
    out = np.empty((6, 10))
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        pynorm.layer_norm(X, out=out)
    with pytest.raises(ValueError, match="out is read-only"):
        pynorm.dyt(X, 0.5, out=np.broadcast_to(np.zeros(10), (6, 10)))  # broadcast views are read-only


@pytest.mark.parametrize("out", [np.empty((6, 10), np.float32), np.empty((10, 6)), np.empty((6, 10, 1))])
def test_out_of_another_dtype_or_shape_is_refused(out):
    with pytest.raises(ValueError, match=r"out must have shape \(6, 10\) and dtype float64"):
        pynorm.layer_norm(X, out=out)


# ------------------------------------------------------------------------------------------
# The dtype table is C++'s
# ------------------------------------------------------------------------------------------


def test_dtype_table_comes_from_the_compiled_module():
    table = pynorm._core_loader.core().dtypes
    assert [name for name, *_ in table] == ["float32", "float64", "float16", "bfloat16"]
    for name, code, itemsize, accumulate in table:
        dtype = _array.BFLOAT16 if name == "bfloat16" else np.dtype(name)
        assert _array.dtype_code(dtype) == code and dtype.itemsize == itemsize
        assert _array.accumulate_dtype(dtype) == np.dtype(accumulate)
    assert pynorm.layer_norm(np.ones((2, 3), np.float16), return_stats=True)[1].dtype == np.float32


# ------------------------------------------------------------------------------------------
# The GPU call path, on a fake GPU library
# ------------------------------------------------------------------------------------------


class FakeGpuArray:
    """A "device" array of the fake library: NumPy memory, recognised as a GPU array (it
    exposes ``__cuda_array_interface__``), on fake device ``device``."""

    def __init__(self, a, device=0):
        self.a, self.device = a, device

    shape = property(lambda self: self.a.shape)
    ndim = property(lambda self: self.a.ndim)

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.a.shape, "typestr": self.a.dtype.str, "data": (self.a.ctypes.data, False), "version": 3}

    def reshape(self, *shape):
        return FakeGpuArray(self.a.reshape(*shape), self.device)

    def __float__(self):
        return float(self.a)


STREAM = 0x5EA


class FakeAdapter(_array.Adapter):
    """The fake library's primitives; ``pointer`` remembers which array an address names."""

    name = "fake"

    def __init__(self):
        self.arrays = {}

    def owns(self, a):
        return isinstance(a, FakeGpuArray)

    def convert(self, a, name, fn):
        if a.a.dtype not in _array.DTYPE_CODES:
            raise _array._unsupported(name, fn, a.a.dtype)
        return a

    def view(self, a, name, fn):
        return a

    def dtype(self, a):
        return a.a.dtype

    def strides(self, a):
        return tuple(s // a.a.itemsize for s in a.a.strides)

    def pointer(self, a):
        self.arrays[a.a.ctypes.data] = a.a
        return a.a.ctypes.data

    def address(self, a):
        return a.a.ctypes.data

    def writable(self, a):
        return a.a.flags.writeable

    def native(self, a):
        return a.a.dtype.isnative

    def is_contiguous(self, a):
        return a.a.flags.c_contiguous

    def device(self, a):
        return a.device

    def stream(self, device):
        return STREAM

    def empty(self, shape, dtype, device):
        return FakeGpuArray(np.full(tuple(shape), np.nan, dtype), device)

    def contiguous(self, a):
        return FakeGpuArray(np.ascontiguousarray(a.a), a.device)

    def astype(self, a, dtype):
        return FakeGpuArray(a.a.astype(dtype), a.device)

    def copy_into(self, dst, src):
        np.copyto(dst.a, src.a)


class FakeCudaModule:
    """Takes the description a CUDA kernel gets, checks its keywords against the real CUDA
    binding's (when this build has one) and runs it on pynorm._core."""

    def __init__(self, adapter):
        self.adapter, self.calls = adapter, []

    KERNELS = {f"{op}_{half}" for op in ("norm", "dyt", "linear_attention") for half in ("forward", "backward")}

    def __getattr__(self, kernel):
        if kernel not in self.KERNELS:
            raise AttributeError(kernel)

        def launch(**description):
            assert description.pop("stream") == (0, STREAM)
            self.calls.append((kernel, sorted(description)))
            real = _array._cuda_status()[0]
            if real is not None:
                parameters = inspect.signature(getattr(real, kernel)).parameters
                assert sorted(parameters) == sorted([*description, "stream"])
            for key, value in description.items():
                if key != "dtype" and type(value) is int and value in self.adapter.arrays:
                    description[key] = self.adapter.arrays[value]
            getattr(pynorm._core_loader.core(), kernel)(**description, threads=0)

        return launch


@pytest.fixture
def fake_gpu(monkeypatch):
    adapter = FakeAdapter()
    module = FakeCudaModule(adapter)
    monkeypatch.setattr(_array, "GPU_ADAPTERS", [adapter] + _array.GPU_ADAPTERS)
    monkeypatch.setattr(_array, "cuda_module", lambda fn: module)
    return module


def _gpu(a, device=0):
    return None if a is None else FakeGpuArray(np.asarray(a), device)


def _host(r):
    return [
        None if a is None else (a.a if isinstance(a, FakeGpuArray) else a)
        for a in (r if isinstance(r, tuple) else (r,))
    ]


@pytest.mark.parametrize("op", [op for op in OPS if not op.startswith(("matmul", "merged"))])
def test_gpu_path_gives_the_cpu_results(fake_gpu, op):
    run, arrays = OPS[op]
    got = _host(run(**{k: _gpu(a) for k, a in arrays.items()}))
    for g, want in zip(got, _host(run(**arrays))):
        assert type(g) is np.ndarray and np.array_equal(g, want)
    assert fake_gpu.calls


def test_gpu_path_converts_copies_and_writes_out(fake_gpu):
    base = RNG.standard_normal((6, 12))
    x = _gpu(base[:, 1:11])  # row stride 12: passed as is
    xt = _gpu(RNG.standard_normal((10, 6)).T)  # non-contiguous last axis: copied
    w32 = _gpu(W.astype(np.float32))  # another dtype: converted to x's
    out = _gpu(np.empty((10, 6)).T)  # a non-contiguous out=: computed apart, copied in
    y, mean, rstd = pynorm.layer_norm(x, w32, return_stats=True)
    want = pynorm.layer_norm(base[:, 1:11], W.astype(np.float32).astype(np.float64), return_stats=True)
    for g, w in zip(_host((y, mean, rstd)), want):
        assert np.array_equal(g, w)
    assert pynorm.layer_norm(xt, out=out) is out
    assert np.array_equal(out.a, pynorm.layer_norm(xt.a))
    dx = pynorm.layer_norm_backward(x, x, w32, mean=mean, rstd=rstd)[0]
    rows = base[:, 1:11]
    assert np.array_equal(
        dx.a, pynorm.layer_norm_backward(rows, rows, W.astype(np.float32), mean=want[1], rstd=want[2])[0]
    )
    assert np.array_equal(
        pynorm.dyt(x, _gpu(np.array([0.5])), w32).a, pynorm.dyt(base[:, 1:11], 0.5, W.astype(np.float32))
    )


def test_gpu_path_errors(fake_gpu):
    x = _gpu(X)
    with pytest.raises(ValueError, match="weight is on GPU 1 but x is on GPU 0"):
        pynorm.layer_norm(x, _gpu(W, device=1))
    with pytest.raises(ValueError, match="x is a GPU array .* but weight is not"):
        pynorm.layer_norm(x, W)
    with pytest.raises(ValueError, match=r"weight must have shape \(10,\)"):
        pynorm.layer_norm(x, _gpu(W[:9]))
    with pytest.raises(TypeError, match="x has dtype int64"):
        pynorm.layer_norm(_gpu(np.ones((2, 3), np.int64)))
    with pytest.raises(TypeError, match="inputs must share one dtype"):
        pynorm.linear_attention(_gpu(Q), _gpu(K.astype(np.float32)), _gpu(V))
    with pytest.raises(TypeError, match="pynorm.matmul has no CUDA kernel"):
        pynorm.matmul(x, _gpu(X.T))
    read_only = np.empty((6, 10))
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        pynorm.layer_norm(x, out=_gpu(read_only))
    with pytest.raises(ValueError, match="use one library"):
        pynorm.layer_norm(x, _FakeOtherLibrary(W))


class _FakeOtherLibrary:
    """A GPU array the fake adapter does not own: a second library in one call."""

    def __init__(self, a):
        self.a, self.shape = a, a.shape

    __cuda_array_interface__ = property(lambda self: {"shape": self.shape, "typestr": "<f8", "data": (0, False)})
