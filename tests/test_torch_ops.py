"""pynorm.torch's operators and functional forms against torch: values and every gradient,
opcheck, gradcheck, strided inputs, no copies of contiguous inputs, errors, CUDA."""

import os
import subprocess
import sys
import tracemalloc

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import pynorm  # noqa: E402
import pynorm.torch as pt  # noqa: E402
from tolerances import LINEAR_ATTENTION_NORMALIZED_FLOAT64, assert_close  # noqa: E402

# opcheck and torch.compile call torch.jit.script internally, which warns that it is deprecated
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script:DeprecationWarning")

DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SHAPE = (3, 5, 96)  # 15 rows: several rows per reduction block, a row length that is not a vector multiple
ops = torch.ops.pynorm


def _data(shape, dtype, seed=0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) + offset).to(dtype)


def _summed_terms(reference, ref_inputs, i, dout):
    """The size of the terms a parameter's gradient sums, per parameter element: the largest
    sum over rows of |dout * d out / d p| (each output element depends on one element of a
    norm's parameter, so a forward-mode derivative along all-ones gives d out / d p for every
    output element). A gradient that cancels is judged against these, not against its own
    (small) size: accumulation error scales with the terms."""
    primals = [a.detach() if a is not None else None for a in ref_inputs]
    param = primals[i]

    def along(p):
        return reference(*[p if j == i else a for j, a in enumerate(primals)])

    _, tangent = torch.func.jvp(along, (param,), (torch.ones_like(param),))
    return float((dout.double().abs() * tangent.abs()).reshape(-1, param.numel()).sum(0).max())


def _compare(fn, reference, inputs, dtype_name, what, rtol=None, atol=None):
    """fn(*inputs) and every gradient of sum(out * dout) against reference(*inputs in float64):
    the reference is the exact answer for these (rounded) inputs."""
    inputs = [None if a is None else a.detach().requires_grad_(a.is_floating_point()) for a in inputs]
    out = fn(*inputs)
    dout = _data(out.shape, out.dtype, seed=99)
    wrt = [i for i, a in enumerate(inputs) if a is not None]
    grads = torch.autograd.grad(out, [inputs[i] for i in wrt], dout)
    ref_inputs = [None if a is None else a.detach().double().requires_grad_() for a in inputs]
    ref = reference(*ref_inputs)
    ref_grads = torch.autograd.grad(ref, [ref_inputs[i] for i in wrt], dout.double())
    tol = dict(rtol=rtol, atol=atol)
    assert out.dtype == inputs[0].dtype and out.shape == ref.shape
    assert_close(out.detach().double().numpy(), ref.detach().numpy(), dtype_name, f"{what} forward", **tol)
    for i, g, r in zip(wrt, grads, ref_grads):
        a = inputs[i]
        assert g.dtype == a.dtype and g.shape == a.shape, f"{what} gradient {i}: {g.dtype} {g.shape}"
        is_parameter = a.numel() < out.numel()  # its gradient is a sum over rows
        scale = _summed_terms(reference, ref_inputs, i, dout) if is_parameter else None
        assert_close(g.double().numpy(), r.numpy(), dtype_name, f"{what} gradient {i}", scale=scale, **tol)


def test_import_pynorm_alone_does_not_import_torch(tmp_path):
    code = (
        "import sys, pynorm, numpy as np; pynorm.layer_norm(np.ones((2, 4), np.float32)); "
        "assert 'torch' not in sys.modules, 'pynorm imported torch'; "
        "import pynorm.torch, torch; assert hasattr(torch.ops.pynorm, 'layer_norm_backward')"
    )
    # from an empty folder, with the pynorm under test first on the path (not a source checkout's)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(pynorm.__file__)))
    subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, check=True, timeout=120)


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("affine", ["none", "weight", "weight+bias"])
def test_layer_norm_matches_torch(dtype_name, affine):
    dtype = DTYPES[dtype_name]
    x = _data(SHAPE, dtype, offset=3.0)
    w = _data(SHAPE[-1:], dtype, 1) if affine != "none" else None
    b = _data(SHAPE[-1:], dtype, 2) if affine == "weight+bias" else None
    _compare(lambda x, w, b: pt.layer_norm(x, SHAPE[-1:], w, b, 1e-5),
             lambda x, w, b: F.layer_norm(x, SHAPE[-1:], w, b, 1e-5), [x, w, b], dtype_name, "layer_norm")  # fmt: skip


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("weight", [False, True])
@pytest.mark.parametrize("eps", [None, 1e-6])
def test_rms_norm_matches_torch(dtype_name, weight, eps):
    dtype = DTYPES[dtype_name]
    x = _data(SHAPE, dtype)
    w = _data(SHAPE[-1:], dtype, 1) if weight else None
    # eps None is the input dtype's machine epsilon, in both
    ref_eps = torch.finfo(dtype).eps if eps is None else eps
    _compare(lambda x, w: pt.rms_norm(x, SHAPE[-1:], w, eps),
             lambda x, w: F.rms_norm(x, SHAPE[-1:], w, ref_eps), [x, w], dtype_name, "rms_norm")  # fmt: skip


def _dyt_composite(x, alpha, w, b):
    y = torch.tanh(alpha * x)
    y = y if w is None else y * w
    return y if b is None else y + b


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("params", ["none", "weight", "weight+bias"])
def test_dyt_matches_composite(dtype_name, params):
    dtype = DTYPES[dtype_name]
    x = 2 * _data(SHAPE, dtype)  # into tanh's saturation as well
    alpha = torch.tensor([0.7], dtype=dtype)
    w = _data(SHAPE[-1:], dtype, 1) if params != "none" else None
    b = _data(SHAPE[-1:], dtype, 2) if params == "weight+bias" else None
    _compare(pt.dyt, _dyt_composite, [x, alpha, w, b], dtype_name, "dyt")


def _linear_attention_reference(q, k, v, causal, normalize, eps, scale):
    scores = scale * q @ k.transpose(-1, -2)
    if causal:
        scores = scores.tril()
    out = scores @ v
    return out / (scores.sum(-1, keepdim=True) + eps) if normalize else out


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
def test_linear_attention_matches_reference(dtype_name, causal, normalize):
    dtype = DTYPES[dtype_name]
    shape = (2, 3, 70, 16)  # 70 tokens: more than one 64-row chunk of the causal scan
    q, k, v = (_data(shape, torch.float64, seed) for seed in range(3))
    if normalize:  # positive features keep the denominator away from 0
        q, k = F.elu(q) + 1, F.elu(k) + 1
    q, k, v = (a.to(dtype) for a in (q, k, v))
    tol = LINEAR_ATTENTION_NORMALIZED_FLOAT64 if normalize and dtype_name == "float64" else {}
    _compare(lambda q, k, v: pt.linear_attention(q, k, v, causal=causal, normalize=normalize, scale=0.25),
             lambda q, k, v: _linear_attention_reference(q, k, v, causal, normalize, 1e-6, 0.25),
             [q, k, v], dtype_name, "linear_attention", **tol)  # fmt: skip


def _opcheck_cases():
    x = _data((4, 24), torch.float32)
    dy = _data((4, 24), torch.float32, 5)
    w, b = _data((24,), torch.float32, 1), _data((24,), torch.float32, 2)
    alpha = torch.tensor([0.6])
    _, mean, rstd = ops.layer_norm(x, w, b, 1e-5)
    _, rms_rstd = ops.rms_norm(x, w, 1e-6)
    q, k, v = (_data((2, 9, 8), torch.float32, s) for s in range(3))
    return [
        ("layer_norm", ops.layer_norm.default, (x, w, b, 1e-5)),
        ("layer_norm/none", ops.layer_norm.default, (x.double(), None, None, 1e-5)),
        ("layer_norm_backward", ops.layer_norm_backward.default, (dy, x, w, b, mean, rstd, 1e-5)),
        ("layer_norm_backward/none", ops.layer_norm_backward.default, (dy, x, None, None, mean, rstd, 1e-5)),
        ("rms_norm", ops.rms_norm.default, (x, w, 1e-6)),
        ("rms_norm/bfloat16", ops.rms_norm.default, (x.bfloat16(), None, 1e-6)),
        ("rms_norm_backward", ops.rms_norm_backward.default, (dy, x, w, rms_rstd, 1e-6)),
        ("dyt", ops.dyt.default, (x, alpha, w, b)),
        ("dyt/float16", ops.dyt.default, (x.half(), alpha.half(), None, None)),
        ("dyt_backward", ops.dyt_backward.default, (dy, x, alpha, w, b)),
        ("dyt_backward/none", ops.dyt_backward.default, (dy, x, alpha, None, None)),
        ("linear_attention", ops.linear_attention.default, (q, k, v, True, False, 1e-6, 1.0)),
        ("linear_attention/normalized", ops.linear_attention.default, (q.abs(), k.abs(), v, False, True, 1e-6, 0.5)),
        ("linear_attention_backward", ops.linear_attention_backward.default, (v, q, k, v, True, False, 1e-6, 1.0)),
    ]


@pytest.mark.parametrize("name,op,args", _opcheck_cases(), ids=[c[0] for c in _opcheck_cases()])
def test_opcheck(name, op, args):
    # the forward ops with inputs that require grad, so that the autograd registration is checked
    if not name.split("/")[0].endswith("_backward"):
        args = tuple(a.detach().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(op, args)


def test_gradcheck_float64():
    def leaf(*shape, seed=0):
        return _data(shape, torch.float64, seed).requires_grad_()

    x, w, b, alpha = leaf(3, 2, 10), leaf(10, seed=1), leaf(10, seed=2), leaf(1, seed=3)
    assert torch.autograd.gradcheck(lambda x, w, b: pt.layer_norm(x, (10,), w, b), (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w: pt.rms_norm(x, (10,), w, 1e-6), (x, w))
    assert torch.autograd.gradcheck(pt.dyt, (x, alpha, w, b))
    # normalised over the last two axes (flattened into one)
    w2, b2 = leaf(2, 10, seed=4), leaf(2, 10, seed=5)
    assert torch.autograd.gradcheck(lambda x, w, b: pt.layer_norm(x, (2, 10), w, b), (x, w2, b2))
    q, k, v = leaf(2, 9, 4), leaf(2, 9, 4, seed=1), leaf(2, 9, 3, seed=2)
    for causal in (False, True):
        assert torch.autograd.gradcheck(
            lambda q, k, v: pt.linear_attention(q, k, v, causal=causal, scale=0.5), (q, k, v)
        )
    qp, kp = (a.detach().abs().requires_grad_() for a in (q, k))
    assert torch.autograd.gradcheck(
        lambda q, k, v: pt.linear_attention(q, k, v, causal=True, normalize=True), (qp, kp, v)
    )


def test_multi_axis_normalized_shape_matches_torch():
    x, w, b = _data((4, 3, 5, 6), torch.float64), _data((5, 6), torch.float64, 1), _data((5, 6), torch.float64, 2)
    _compare(lambda x, w, b: pt.layer_norm(x, (5, 6), w, b),
             lambda x, w, b: F.layer_norm(x, (5, 6), w, b), [x, w, b], "float64", "layer_norm (5, 6)")  # fmt: skip
    _compare(lambda x, w: pt.rms_norm(x, (5, 6), w),
             lambda x, w: F.rms_norm(x, (5, 6), w), [x, w], "float64", "rms_norm (5, 6)")  # fmt: skip


@pytest.mark.parametrize("layout", ["transposed", "row_slice", "column_slice"])
def test_strided_inputs_equal_contiguous(layout):
    base = _data((40, 48), torch.float32)
    x = {"transposed": base.t(), "row_slice": base[::3], "column_slice": base[:, 8:40]}[layout]
    assert not x.is_contiguous()
    rows, dim = x.shape
    w, b = _data((dim,), torch.float32, 1), _data((dim,), torch.float32, 2)
    dy = _data((rows, 2 * dim), torch.float32, 7)[:, ::2]  # a strided upstream gradient as well
    for fn in (lambda x: pt.layer_norm(x, dim, w, b), lambda x: pt.rms_norm(x, dim, w), lambda x: pt.dyt(x, 0.5, w, b)):
        xs, xc = x.detach().requires_grad_(), x.contiguous().requires_grad_()
        ys, yc = fn(xs), fn(xc)
        assert torch.equal(ys, yc)
        assert torch.equal(torch.autograd.grad(ys, xs, dy)[0], torch.autograd.grad(yc, xc, dy.contiguous())[0])


def _numpy_peak_bytes(fn):
    """Peak bytes NumPy allocated while fn ran (tracemalloc sees NumPy's data buffers; torch's
    allocations are invisible to it)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_contiguous_inputs_are_not_copied():
    x = _data((256, 1024), torch.float32)  # 1 MiB
    w = torch.ones(1024)
    for fn in (
        lambda x: ops.rms_norm(x, w, 1e-6),
        lambda x: ops.layer_norm(x, w, None, 1e-5),
        lambda x: ops.dyt(x, torch.ones(1), w, None),
    ):
        fn(x)  # the output buffer now sits in pynorm's cache, free again: the next call reuses it
        assert _numpy_peak_bytes(lambda: fn(x)) < x.numel()  # < a quarter of x's bytes: no copy of x
        # the same measure sees the one copy of a transposed input (the test can fail)
        assert _numpy_peak_bytes(lambda: fn(x.t().contiguous().t())) >= x.numel() * 4


def test_mixed_parameter_dtype_gradients_in_parameter_dtype():
    x = _data((6, 32), torch.bfloat16).requires_grad_()
    w = torch.ones(32, dtype=torch.float32, requires_grad=True)
    b = torch.zeros(32, dtype=torch.float32, requires_grad=True)
    y = pt.layer_norm(x, 32, w, b)
    assert y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    assert w.grad.dtype == torch.float32 and b.grad.dtype == torch.float32 and x.grad.dtype == torch.bfloat16


def test_statistics_outputs_are_not_differentiable():
    x = _data((4, 8), torch.float32).requires_grad_()
    y, mean, rstd = ops.layer_norm(x, None, None, 1e-5)
    assert y.requires_grad and not mean.requires_grad and not rstd.requires_grad
    y2, rms_rstd = ops.rms_norm(x, None, 1e-5)
    assert y2.requires_grad and not rms_rstd.requires_grad


def test_errors_name_the_argument():
    x = torch.ones(3, 8)
    with pytest.raises(TypeError, match="x has dtype int64"):
        pt.layer_norm(torch.ones(3, 8, dtype=torch.int64), 8)
    with pytest.raises(TypeError, match="x has dtype complex64"):
        pt.rms_norm(torch.ones(3, 8, dtype=torch.complex64), 8)
    with pytest.raises(ValueError, match="weight must have shape"):
        pt.layer_norm(x, 8, torch.ones(7))
    with pytest.raises(ValueError, match="does not end in normalized_shape"):
        pt.rms_norm(x, (4,))
    with pytest.raises(ValueError, match="normalized_shape must be"):
        pt.layer_norm(x, ())
    with pytest.raises(ValueError, match="weight must have shape"):
        pt.layer_norm(torch.ones(3, 2, 4), (2, 4), torch.ones(8))
    with pytest.raises(ValueError, match="alpha must have exactly one element"):
        pt.dyt(x, torch.ones(2))
    with pytest.raises(TypeError, match="share one dtype"):
        f32 = torch.float32  # explicit: tests/reference.py sets torch's default dtype to float64
        pt.linear_attention(
            torch.ones(4, 2, dtype=f32), torch.ones(4, 2, dtype=torch.float64), torch.ones(4, 2, dtype=f32)
        )


def test_empty_and_one_dimensional_inputs():
    for x in (torch.ones(0, 8, requires_grad=True), _data((8,), torch.float64).requires_grad_()):
        y = pt.layer_norm(x, 8)
        y.sum().backward()
        assert y.shape == x.shape and x.grad.shape == x.shape
        assert_close(y.detach().numpy(), F.layer_norm(x.detach(), (8,)).numpy(), "float32", "layer_norm")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@cuda
@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_cuda_matches_cpu(dtype_name):
    dtype = DTYPES[dtype_name]
    x, w, b = _data((64, 200), dtype), _data((200,), dtype, 1), _data((200,), dtype, 2)
    alpha = torch.tensor([0.6], dtype=dtype)
    q, k, v = (_data((2, 70, 16), dtype, s) for s in range(3))
    cases = [
        (lambda x, w, b: pt.layer_norm(x, 200, w, b), [x, w, b]),
        (lambda x, w: pt.rms_norm(x, 200, w), [x, w]),
        (pt.dyt, [x, alpha, w, b]),
        (lambda q, k, v: pt.linear_attention(q, k, v, causal=True), [q, k, v]),
    ]
    for fn, inputs in cases:
        results = []
        for device in ("cpu", "cuda"):
            leaves = [a.to(device).requires_grad_() for a in inputs]
            out = fn(*leaves)
            grads = torch.autograd.grad(out, leaves, torch.ones_like(out))
            assert out.device.type == device
            results.append([t.detach().cpu().double().numpy() for t in (out, *grads)])
        for got, expected in zip(*reversed(results)):
            assert_close(got, expected, dtype_name, "cuda vs cpu")
