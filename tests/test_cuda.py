"""The CUDA kernels and the GPU dispatch.

Two halves:

* CPU-side tests, run everywhere (CI has no GPU): GPU arrays are recognised (a small fake
  class exposing ``__cuda_array_interface__`` stands in for them), every op sends them to its
  CUDA implementation, mixing CPU and GPU arguments is a ValueError, an unusable CUDA module
  gives "CUDA unavailable: <reason>", and show_config() says what the build has.
* GPU tests (skipped unless torch.cuda / CuPy has a device and pynorm._cuda can run): every
  output and gradient against torch CUDA autograd in float64 on the very same values and
  against pynorm's CPU kernels, on the CPU tests' shapes plus large ones; bitwise
  reproducibility of the parameter gradients; the caller's stream; CuPy in, CuPy out.
"""

import numpy as np
import pytest
from reference import DTYPES, np_dtype
from tolerances import assert_close

import pynorm
from pynorm import _array

# ------------------------------------------------------------------------------------------
# What this machine can do
# ------------------------------------------------------------------------------------------

try:
    import torch

    TORCH_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover - the test extra installs torch
    torch, TORCH_CUDA = None, False
try:
    import cupy

    CUPY_CUDA = cupy.cuda.runtime.getDeviceCount() > 0
except Exception:  # not installed, or no driver/device
    cupy, CUPY_CUDA = None, False

_module, _reason = _array._cuda_status()
PYNORM_CUDA = _module is not None and not _reason
needs_torch_cuda = pytest.mark.skipif(
    not (TORCH_CUDA and PYNORM_CUDA),
    reason=f"needs torch with a CUDA device and a usable pynorm._cuda (pynorm: {_array.cuda_config()})",
)
needs_cupy = pytest.mark.skipif(
    not (CUPY_CUDA and PYNORM_CUDA), reason="needs CuPy with a CUDA device and a usable pynorm._cuda"
)


# ------------------------------------------------------------------------------------------
# CPU-side: dispatch, errors, configuration
# ------------------------------------------------------------------------------------------


class FakeCudaArray:
    """Looks like a CUDA array (``__cuda_array_interface__``) without any device memory."""

    def __init__(self, shape, typestr="<f4"):
        self.shape = tuple(shape)
        self.__cuda_array_interface__ = {
            "shape": self.shape, "typestr": typestr, "data": (0xDEAD0000, False), "strides": None, "version": 3,
        }  # fmt: skip


class FakeDlpackArray:
    def __init__(self, device_type):
        self.device_type = device_type

    def __dlpack__(self, stream=None):  # pragma: no cover - never consumed here
        raise NotImplementedError

    def __dlpack_device__(self):
        return (self.device_type, 0)


X = np.ones((4, 8), np.float32)
W = np.ones(8, np.float32)
G = FakeCudaArray((4, 8))
GW = FakeCudaArray((8,))
GQ = FakeCudaArray((2, 5, 4))

# Every public op, called with GPU arrays.
GPU_CALLS = {
    "layer_norm": lambda g: pynorm.layer_norm(g, GW, GW),
    "layer_norm_backward": lambda g: pynorm.layer_norm_backward(g, g, GW, GW),
    "rms_norm": lambda g: pynorm.rms_norm(g, GW),
    "rms_norm_backward": lambda g: pynorm.rms_norm_backward(g, g, GW),
    "dyt": lambda g: pynorm.dyt(g, 0.5, GW, GW),
    "dyt_backward": lambda g: pynorm.dyt_backward(g, g, 0.5, GW, GW),
}
if hasattr(pynorm, "linear_attention"):
    GPU_CALLS["linear_attention"] = lambda g: pynorm.linear_attention(GQ, GQ, GQ, causal=True)
    GPU_CALLS["linear_attention_backward"] = lambda g: pynorm.linear_attention_backward(GQ, GQ, GQ, GQ)


def test_gpu_arrays_are_recognised():
    assert _array.is_gpu(G) and _array.is_gpu(FakeDlpackArray(2)) and _array.is_gpu(FakeDlpackArray(13))
    assert not _array.is_gpu(X) and not _array.is_gpu([1.0, 2.0]) and not _array.is_gpu(3.0)
    assert not _array.is_gpu(None) and not _array.is_gpu(FakeDlpackArray(1))  # kDLCPU
    assert not _array.is_gpu(FakeDlpackArray(3))  # kDLCUDAHost: pinned host memory is CPU memory
    if torch is not None:
        assert not _array.is_gpu(torch.ones(3))


class _TookCudaPath(Exception):
    pass


@pytest.mark.parametrize("op", list(GPU_CALLS))
def test_dispatch_takes_the_cuda_path(monkeypatch, op):
    def cuda_module(fn):
        raise _TookCudaPath(fn)

    monkeypatch.setattr(_array, "cuda_module", cuda_module)
    with pytest.raises(_TookCudaPath, match=f"pynorm.{op}$"):
        GPU_CALLS[op](G)


def test_cpu_calls_stay_on_the_cpu(monkeypatch):
    def cuda_module(fn):  # pragma: no cover - must not be reached
        raise AssertionError(f"{fn} took the CUDA path for CPU arrays")

    monkeypatch.setattr(_array, "cuda_module", cuda_module)
    pynorm.layer_norm_backward(X, X, W, W)
    pynorm.dyt(X.tolist(), np.float32(0.5), W)


@pytest.mark.skipif(PYNORM_CUDA, reason="CUDA is usable here: the unavailable error cannot occur")
@pytest.mark.parametrize("op", list(GPU_CALLS))
def test_unavailable_cuda_is_a_clear_error(op):
    with pytest.raises(RuntimeError, match=rf"pynorm\.{op}: CUDA unavailable: \S+"):
        GPU_CALLS[op](G)


MIXED_CALLS = [
    lambda: pynorm.layer_norm(X, GW),
    lambda: pynorm.layer_norm(G, W),
    lambda: pynorm.layer_norm(G, out=np.empty((4, 8), np.float32)),
    lambda: pynorm.layer_norm_backward(X, G),
    lambda: pynorm.layer_norm_backward(G, G, mean=np.zeros(4, np.float32)),
    lambda: pynorm.rms_norm_backward(G, X),
    lambda: pynorm.dyt(G, 0.5, W),
    lambda: pynorm.dyt_backward(X, G, 0.5),
]
if hasattr(pynorm, "linear_attention"):
    MIXED_CALLS += [
        lambda: pynorm.linear_attention(GQ, np.ones((2, 5, 4)), GQ),
        lambda: pynorm.linear_attention_backward(np.ones((2, 5, 4)), GQ, GQ, GQ),
    ]


@pytest.mark.parametrize("call", MIXED_CALLS)
def test_mixing_cpu_and_gpu_arguments_is_a_value_error(call):
    with pytest.raises(ValueError, match="GPU array .* but .* is not .*pass every array on the same device"):
        call()


def test_gpu_scalar_with_cpu_arrays_is_a_value_error():
    with pytest.raises(ValueError, match="GPU scalar was passed with CPU arrays"):
        pynorm.dyt(X, FakeCudaArray((1,)), W)


def test_mixing_torch_cpu_tensor_and_gpu_array():
    if torch is None:
        pytest.skip("torch is not installed")
    with pytest.raises(ValueError, match="same device"):
        pynorm.layer_norm(G, torch.ones(8))


def test_config_says_what_cuda_is():
    text = pynorm.config()["cuda"]
    module, reason = _array._cuda_status()
    if module is None:
        assert text.startswith("not built") or "could not be imported" in text
    else:
        assert text.startswith(f"built ({module.architectures})")
        assert "sm_" in module.architectures
        assert ("unavailable: " + reason) in text if reason else "available" in text


def test_module_absent_reads_not_built(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pynorm._cuda" else real_find_spec(name, *a)
    )
    _array._cuda_status.cache_clear()
    try:
        assert pynorm.config()["cuda"].startswith("not built")
        with pytest.raises(RuntimeError, match="pynorm.layer_norm: CUDA unavailable: not built"):
            pynorm.layer_norm(G)
    finally:
        _array._cuda_status.cache_clear()


def test_cuda_module_imports_without_a_device():
    """The module links the CUDA runtime statically: it imports anywhere; without a device its
    status names the reason instead of crashing."""
    module, reason = _array._cuda_status()
    if module is None:
        pytest.skip("this build has no CUDA module")
    ok, why = module.status()
    assert ok == (not reason) and (ok or why)
    with pytest.raises((RuntimeError, ValueError)):
        module.norm_forward(
            x=0,
            x_row_stride=8,
            y=0,
            rows=4,
            dim=8,
            weight=0,
            bias=0,
            mean=0,
            rstd=0,
            dtype=9,
            eps=1e-5,
            center=True,
            scale=True,
            stream=(0, 0),
        )  # bad dtype code first


# ------------------------------------------------------------------------------------------
# GPU: correctness against torch CUDA autograd (float64) and pynorm's CPU kernels
# ------------------------------------------------------------------------------------------

CPU_SHAPES = [(5, 1), (5, 3), (6, 7), (4, 8), (3, 9), (17, 1023), (2, 65536), (0, 8), (1, 8), (300, 64), (2, 3, 9)]
LARGE_SHAPES = [(4096, 4096), (1024, 16384), (8, 262144), (20000, 96), (257, 1000)]
GPU_SHAPES = CPU_SHAPES + LARGE_SHAPES
VARIANTS = {
    "layer_norm": (True, True),
    "projection": (True, False),
    "scaling": (False, True),
    "affine_only": (False, False),
}


def to_cuda(a):
    """A torch CUDA tensor with exactly the values (and dtype) of NumPy array a."""
    if a is None:
        return None
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16).cuda()
    return torch.from_numpy(np.ascontiguousarray(a)).cuda()


def to_numpy(t):
    if t is None:
        return None
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np_dtype("bfloat16"))
    return t.numpy()


def torch_grads(out, dout, *inputs):
    present = [t for t in inputs if t is not None]
    got = iter(torch.autograd.grad(out, present, dout))
    return [None if t is None else next(got) for t in inputs]


def leaf(t):
    return None if t is None else t.detach().double().requires_grad_(True)


def reference_norm(x, dy, weight, bias, eps, center, scale):
    """torch CUDA autograd in float64 on the device values: (y, dx, dweight, dbias)."""
    xt, wt, bt = leaf(x), leaf(weight), leaf(bias)
    if center and scale:
        y = torch.nn.functional.layer_norm(xt, (xt.shape[-1],), wt, bt, eps)
    else:
        y = xt - xt.mean(-1, keepdim=True) if center else xt
        if scale:
            y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + eps)
        y = y * wt if wt is not None else y
        y = y + bt if bt is not None else y
    return [y.detach()] + torch_grads(y, dy.double(), xt, wt, bt)


def make_norm_case(rng, shape, dtype_name, affine):
    dtype = np_dtype(dtype_name)
    dim = shape[-1]
    x = (0.3 + rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    weight = (1 + 0.5 * rng.standard_normal(dim)).astype(dtype) if affine != "none" else None
    bias = rng.standard_normal(dim).astype(dtype) if affine == "weight_bias" else None
    return x, dy, weight, bias


def check(actual, expected, dtype_name, what, scale=None):
    actual, expected = (to_numpy(a) if torch.is_tensor(a) else a for a in (actual, expected))
    assert_close(actual, expected, dtype_name, what, scale=scale)


@needs_torch_cuda
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=str)
@pytest.mark.parametrize("affine", ["none", "weight", "weight_bias"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_norm_matches_torch_cuda_and_cpu(rng, shape, affine, variant, dtype_name):
    center, scale = VARIANTS[variant]
    x, dy, weight, bias = make_norm_case(rng, shape, dtype_name, affine)
    xg, dyg, wg, bg = map(to_cuda, (x, dy, weight, bias))
    y, mean, rstd = pynorm.layer_norm(xg, wg, bg, center=center, scale=scale, return_stats=True)
    dx, dweight, dbias = pynorm.layer_norm_backward(dyg, xg, wg, bg, center=center, scale=scale, mean=mean, rstd=rstd)
    assert y.is_cuda and y.dtype == xg.dtype and y.shape == xg.shape and dx.dtype == xg.dtype
    assert (dweight is None) == (weight is None) and (dbias is None) == (bias is None)
    # statistics recomputed from x (not saved) give the same dx
    again = pynorm.layer_norm_backward(dyg, xg, wg, bg, center=center, scale=scale)
    check(again[0], dx, dtype_name, "dx (recomputed statistics)")
    # against torch CUDA autograd in float64 (on the same values)
    ref = reference_norm(xg, dyg, wg, bg, 1e-5, center, scale)
    g = dyg.double().abs() * (wg.double().abs() if wg is not None else 1)
    terms = float(g.max()) * float(rstd[torch.isfinite(rstd)].max()) if x.size else None
    single = center and shape[-1] == 1  # x - mean(x) == 0 exactly: torch leaves rounding noise
    if not single:
        check(y, ref[0], dtype_name, "y")
        check(dx, ref[1], dtype_name, "dx", scale=terms)
        for got, want, what in ((dweight, ref[2], "dweight"), (dbias, ref[3], "dbias")):
            if got is not None:
                check(got, want, dtype_name, what)
    # against pynorm's CPU kernels (the same algorithm; float32 sums in another order)
    cpu_y, cpu_mean, cpu_rstd = pynorm.layer_norm(x, weight, bias, center=center, scale=scale, return_stats=True)
    cpu = pynorm.layer_norm_backward(dy, x, weight, bias, center=center, scale=scale)
    check(y, cpu_y, dtype_name, "y vs CPU")
    check(mean, cpu_mean, "float64" if dtype_name == "float64" else "float32", "mean vs CPU")
    check(dx, cpu[0], dtype_name, "dx vs CPU", scale=terms)
    for got, want, what in zip((dweight, dbias), cpu[1:], ("dweight vs CPU", "dbias vs CPU")):
        if got is not None:
            check(got, want, dtype_name, what)


@needs_torch_cuda
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_rms_norm_matches_torch(rng, dtype_name):
    x, dy, weight, _ = make_norm_case(rng, (333, 768), dtype_name, "weight")
    xg, dyg, wg = map(to_cuda, (x, dy, weight))
    y, rstd = pynorm.rms_norm(xg, wg, return_stats=True)
    dx, dweight = pynorm.rms_norm_backward(dyg, xg, wg, rstd=rstd)
    ref = reference_norm(xg, dyg, wg, None, 1e-6, False, True)
    check(y, ref[0], dtype_name, "y")
    check(dx, ref[1], dtype_name, "dx", scale=float((dyg.double() * wg.double()).abs().max() * rstd.max()))
    check(dweight, ref[2], dtype_name, "dweight")


def reference_dyt(x, dy, alpha, weight, bias):
    xt, wt, bt = leaf(x), leaf(weight), leaf(bias)
    at = torch.tensor([float(alpha)], dtype=torch.float64, device=x.device, requires_grad=True)
    y = torch.tanh(at * xt)
    y = y * wt if wt is not None else y
    y = y + bt if bt is not None else y
    return [y.detach()] + torch_grads(y, dy.double(), xt, at, wt, bt)


@needs_torch_cuda
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=str)
@pytest.mark.parametrize("affine", ["none", "weight", "weight_bias"])
@pytest.mark.parametrize("alpha", [0.5, -1.7])
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_dyt_matches_torch_cuda_and_cpu(rng, shape, affine, alpha, dtype_name):
    x, dy, weight, bias = make_norm_case(rng, shape, dtype_name, affine)
    x = (3 * np.asarray(x, np.float64)).astype(x.dtype)  # reach into saturation
    xg, dyg, wg, bg = map(to_cuda, (x, dy, weight, bias))
    y = pynorm.dyt(xg, alpha, wg, bg)
    dx, dalpha, dweight, dbias = pynorm.dyt_backward(dyg, xg, alpha, wg, bg)
    assert y.is_cuda and y.dtype == xg.dtype and dalpha.shape == (1,)
    ref = reference_dyt(xg, dyg, alpha, wg, bg)
    g = dyg.double().abs() * (wg.double().abs() if wg is not None else 1)
    column = float(dyg.double().abs().reshape(-1, shape[-1]).sum(0).max()) if x.size else None
    check(y, ref[0], dtype_name, "y")
    check(dx, ref[1], dtype_name, "dx", scale=abs(alpha) * float(g.max()) if x.size else None)
    check(dalpha, ref[2], dtype_name, "dalpha", scale=float((g * xg.double().abs()).sum()))
    for got, want, what in ((dweight, ref[3], "dweight"), (dbias, ref[4], "dbias")):
        if got is not None:
            check(got, want, dtype_name, what, scale=column)
    cpu = pynorm.dyt_backward(dy, x, alpha, weight, bias)
    check(y, pynorm.dyt(x, alpha, weight, bias), dtype_name, "y vs CPU")
    check(dx, cpu[0], dtype_name, "dx vs CPU", scale=abs(alpha) * float(g.max()) if x.size else None)
    check(dalpha, cpu[1], dtype_name, "dalpha vs CPU", scale=float((g * xg.double().abs()).sum()))


@needs_torch_cuda
@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_parameter_gradients_are_bitwise_reproducible(rng, dtype_name):
    x, dy, weight, bias = make_norm_case(rng, (8192, 1024), dtype_name, "weight_bias")
    xg, dyg, wg, bg = map(to_cuda, (x, dy, weight, bias))
    first = pynorm.layer_norm_backward(dyg, xg, wg, bg)
    for _ in range(3):
        again = pynorm.layer_norm_backward(dyg, xg, wg, bg)
        assert all(torch.equal(a, b) for a, b in zip(first, again))
    first = pynorm.dyt_backward(dyg, xg, 0.7, wg, bg)
    again = pynorm.dyt_backward(dyg, xg, 0.7, wg, bg)
    assert all(torch.equal(a, b) for a, b in zip(first, again))


@needs_torch_cuda
def test_unaligned_and_strided_inputs_take_the_scalar_path(rng):
    base = torch.randn(65 * 130 + 1, device="cuda", dtype=torch.float32)
    x = base[1:].reshape(65, 130)[:, :129]  # misaligned start, row stride 130, dim 129
    w = torch.randn(129, device="cuda")
    want = torch.nn.functional.layer_norm(x.double(), (129,), w.double())
    check(pynorm.layer_norm(x, w), want, "float32", "y")
    xt = torch.randn(64, 96, device="cuda").t()  # non-contiguous last axis: copied
    check(pynorm.rms_norm(xt), reference_norm(xt, xt, None, None, 1e-6, False, True)[0], "float32", "y (transposed)")


@needs_torch_cuda
def test_runs_on_the_callers_stream(rng):
    x = torch.randn(2048, 2048, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        y = pynorm.layer_norm(x)
        dx, _, _ = pynorm.layer_norm_backward(y, x)
    stream.synchronize()
    check(y, torch.nn.functional.layer_norm(x.double(), (2048,)), "float32", "y on a side stream")
    assert dx.shape == x.shape


@needs_torch_cuda
def test_out_and_errors_on_the_gpu():
    x = torch.randn(4, 8, device="cuda")
    out = torch.empty_like(x)
    assert pynorm.layer_norm(x, out=out) is out
    with pytest.raises(ValueError, match="same device"):
        pynorm.layer_norm(x, torch.ones(8))
    with pytest.raises(ValueError, match="weight must have shape"):
        pynorm.layer_norm(x, torch.ones(7, device="cuda"))
    with pytest.raises(TypeError, match="dtype int64"):
        pynorm.layer_norm(torch.ones(4, 8, dtype=torch.int64, device="cuda"))
    y = pynorm.layer_norm(x.clone(), out=None)
    inplace = x.clone()
    pynorm.layer_norm(inplace, out=inplace)
    assert torch.equal(inplace, y)


@needs_cupy
@pytest.mark.parametrize("dtype_name", ["float32", "float64", "float16"])
def test_cupy_in_cupy_out(rng, dtype_name):
    x = cupy.asarray(rng.standard_normal((300, 512)).astype(dtype_name))
    w = cupy.asarray(rng.standard_normal(512).astype(dtype_name))
    y = pynorm.layer_norm(x, w, w)
    dx, dw, db = pynorm.layer_norm_backward(x, x, w, w)
    yd = pynorm.dyt(x, 0.5, w)
    assert isinstance(y, cupy.ndarray) and y.dtype == x.dtype and isinstance(dx, cupy.ndarray)
    xn, wn = cupy.asnumpy(x), cupy.asnumpy(w)
    assert_close(cupy.asnumpy(y), pynorm.layer_norm(xn, wn, wn), dtype_name, "y")
    cpu = pynorm.layer_norm_backward(xn, xn, wn, wn)
    assert_close(cupy.asnumpy(dw), cpu[1], dtype_name, "dweight")
    assert_close(cupy.asnumpy(yd), pynorm.dyt(xn, 0.5, wn), dtype_name, "dyt")


# ------------------------------------------------------------------------------------------
# Linear attention
# ------------------------------------------------------------------------------------------


def _chunked_scan(a, b, c, mask, normalize=False, scale=1.0, eps=0.0, chunk=8, tile=3):
    """NumPy twin of csrc/cuda/linear_attention.cu's scan (same chunks, tiles, masks and
    augmented columns): out_i = scale * sum_{j in mask(i)} (a_i . b_j) c_j, with c's extra
    column of ones giving the denominator when normalising. Returns (out, den + eps)."""
    n, da = a.shape
    dc = c.shape[1]
    c_full = np.concatenate([c, np.ones((n, 1))], 1) if normalize else c
    out, den = np.zeros((n, dc)), np.zeros(n)
    chunks = range((n + chunk - 1) // chunk)
    for col0 in range(0, dc, tile):
        tv = min(tile, dc - col0)
        cols = list(range(col0, col0 + tv)) + ([dc] if normalize else [])
        state = np.zeros((da, len(cols)))
        if mask == 0:  # phase 1: the state over every token
            for ch in chunks:
                rows = slice(ch * chunk, (ch + 1) * chunk)
                state += b[rows].T @ c_full[rows][:, cols]
        for ch in chunks if mask != 2 else reversed(chunks):
            rows = slice(ch * chunk, (ch + 1) * chunk)
            o = a[rows] @ state
            if mask:
                m = len(a[rows])
                keep = np.tril(np.ones((m, m))) if mask == 1 else np.triu(np.ones((m, m)))
                o = o + ((a[rows] @ b[rows].T) * keep) @ c_full[rows][:, cols]
                state += b[rows].T @ c_full[rows][:, cols]
            o = scale * o
            out[rows, col0 : col0 + tv] = o[:, :tv] / (o[:, tv:] + eps) if normalize else o[:, :tv]
            if normalize:
                den[rows] = o[:, tv] + eps
    return out, den


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("n", [1, 13, 40])
def test_linear_attention_kernel_algorithm(rng, causal, normalize, n):
    """The CUDA kernel's pass structure, run in NumPy (float64): forward a = q, b = k, c = [v, 1];
    dq: a = [g, h], b = [v, 1], c = k; dk: a = [v, 1], b = [g, h], c = q (reverse); dv: a = k,
    b = q, c = g (reverse); g = dout / den, h = -(dout . out) / den. Checks the algorithm on any
    machine; test_linear_attention_matches_torch_cuda_and_cpu checks the kernel itself."""
    import reference

    dk, dv, scale, eps = 5, 7, 0.7, 1e-3
    q, k = rng.random((n, dk)) + 0.1, rng.random((n, dk)) + 0.1
    v, dout = rng.standard_normal((n, dv)), rng.standard_normal((n, dv))
    fwd, rev = (1, 2) if causal else (0, 0)
    out, den = _chunked_scan(q, k, v, fwd, normalize, scale, eps)
    ones = np.ones((n, 1))
    if normalize:
        g = dout / den[:, None]
        h = -(dout * out).sum(1, keepdims=True) / den[:, None]
        g_h, v_1 = np.concatenate([g, h], 1), np.concatenate([v, ones], 1)
    else:
        g = g_h = dout
        v_1 = v
    dq = _chunked_scan(g_h, v_1, k, fwd, scale=scale)[0]
    dk_ = _chunked_scan(v_1, g_h, q, rev, scale=scale)[0]
    dv_ = _chunked_scan(k, q, g, rev, scale=scale)[0]
    ref = reference.linear_attention(q, k, v, dout, causal, normalize, eps, scale)
    for got, want, what in zip((out, dq, dk_, dv_), ref, ("out", "dq", "dk", "dv")):
        assert_close(got, want, "float64", what)


LA_SHAPES = [(1, 3, 2), (5, 4, 4), (17, 8, 3), (64, 16, 16), (2, 70, 9), (2, 3, 129, 32), (4, 1000, 64),
             (2, 300, 128), (1, 200, 256)]  # fmt: skip


@needs_torch_cuda
@pytest.mark.parametrize("shape", LA_SHAPES, ids=str)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_linear_attention_matches_torch_cuda_and_cpu(rng, shape, causal, normalize, dtype_name):
    dtype = np_dtype(dtype_name)
    *lead, n, d = shape
    dk, dv = d, max(1, d - (d > 8))  # Dv != Dk where it can be
    q = (rng.random((*lead, n, dk)) + 0.05).astype(dtype)  # positive features: den > 0
    k = (rng.random((*lead, n, dk)) + 0.05).astype(dtype)
    v, dout = (rng.standard_normal((*lead, n, dv)).astype(dtype) for _ in range(2))
    scale = 1.0 / dk
    qg, kg, vg, doutg = map(to_cuda, (q, k, v, dout))
    out = pynorm.linear_attention(qg, kg, vg, causal=causal, normalize=normalize, scale=scale)
    dq, dk_, dv_ = pynorm.linear_attention_backward(doutg, qg, kg, vg, causal=causal, normalize=normalize, scale=scale)
    assert out.is_cuda and out.dtype == qg.dtype and out.shape == vg.shape
    # torch CUDA autograd, float64, quadratic definition
    qt, kt, vt = leaf(qg), leaf(kg), leaf(vg)
    scores = scale * qt @ kt.transpose(-1, -2)
    if causal:
        scores = scores * torch.ones(n, n, device="cuda", dtype=torch.float64).tril()
    ref = scores @ vt
    if normalize:
        ref = ref / (scores.sum(-1, keepdim=True) + 1e-6)
    ref_grads = torch_grads(ref, doutg.double(), qt, kt, vt)
    # sums over up to n * d products of O(1) terms: judge against the size of the terms
    terms = float(scale * n * dk) if not normalize else None
    check(out, ref.detach(), dtype_name, "out", scale=terms)
    for got, want, what in zip((dq, dk_, dv_), ref_grads, ("dq", "dk", "dv")):
        check(got, want, dtype_name, what, scale=terms * float(doutg.double().abs().max()) if terms else None)
    cpu_out = pynorm.linear_attention(q, k, v, causal=causal, normalize=normalize, scale=scale)
    check(out, cpu_out, dtype_name, "out vs CPU", scale=terms)
    again = pynorm.linear_attention_backward(doutg, qg, kg, vg, causal=causal, normalize=normalize, scale=scale)
    assert all(torch.equal(a, b) for a, b in zip((dq, dk_, dv_), again))  # same bits every run
