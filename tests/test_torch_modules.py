"""pynorm.torch's modules: torch.nn's parameters and state_dicts, values and gradients against
torch.nn (and DyT's composite), replace_norms, and torch.compile(fullgraph=True)."""

import pytest

torch = pytest.importorskip("torch")

import pynorm.torch as pt  # noqa: E402
from tolerances import assert_close  # noqa: E402

# opcheck and torch.compile call torch.jit.script internally, which warns that it is deprecated
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script:DeprecationWarning")

NORM_PAIRS = [
    (pt.LayerNorm, torch.nn.LayerNorm, dict()),
    (pt.LayerNorm, torch.nn.LayerNorm, dict(bias=False)),
    (pt.LayerNorm, torch.nn.LayerNorm, dict(elementwise_affine=False)),
    (pt.LayerNorm, torch.nn.LayerNorm, dict(eps=1e-3)),
    (pt.RMSNorm, torch.nn.RMSNorm, dict()),
    (pt.RMSNorm, torch.nn.RMSNorm, dict(eps=1e-6)),
    (pt.RMSNorm, torch.nn.RMSNorm, dict(elementwise_affine=False)),
]
IDS = [f"{ours.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}" for ours, _, kw in NORM_PAIRS]


def _randomize(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("ours,theirs,kwargs", NORM_PAIRS, ids=IDS)
def test_state_dicts_load_both_ways(ours, theirs, kwargs):
    a, b = ours((4, 6), **kwargs), theirs((4, 6), **kwargs)
    assert list(a.state_dict()) == list(b.state_dict())
    assert [(n, p.shape) for n, p in a.named_parameters()] == [(n, p.shape) for n, p in b.named_parameters()]
    _randomize(b, 1)
    a.load_state_dict(b.state_dict())
    _randomize(a, 2)
    b.load_state_dict(a.state_dict())
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert isinstance(a, theirs)


@pytest.mark.parametrize("ours,theirs,kwargs", NORM_PAIRS, ids=IDS)
@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
def test_norm_modules_match_torch_nn(ours, theirs, kwargs, dtype_name):
    dtype = getattr(torch, dtype_name)
    a, b = ours((3, 40), dtype=dtype, **kwargs), theirs((3, 40), dtype=dtype, **kwargs)
    _randomize(b, 3)
    a.load_state_dict(b.state_dict())
    g = torch.Generator().manual_seed(0)
    x = (2 + torch.randn((5, 2, 3, 40), generator=g, dtype=torch.float64)).to(dtype)
    dy = torch.randn(x.shape, generator=g, dtype=torch.float64).to(dtype)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = a(xa), b(xb)
    ya.backward(dy), yb.backward(dy)
    assert_close(ya.detach().numpy(), yb.detach().numpy(), dtype_name, "y")
    assert_close(xa.grad.numpy(), xb.grad.numpy(), dtype_name, "dx")
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        # a sum over the 30 rows of dy * (something of size ~1): judged against those terms
        assert_close(pa.grad.numpy(), pb.grad.numpy(), dtype_name, name, scale=float(dy.abs().sum(0).sum(0).max()))


def test_dyt_module_parameters_and_composite():
    m = pt.DyT(16, alpha0=0.8)
    assert [(n, tuple(p.shape)) for n, p in m.named_parameters()] == [
        ("alpha", (1,)),
        ("weight", (16,)),
        ("bias", (16,)),
    ]
    assert m.alpha.item() == pytest.approx(0.8) and torch.equal(m.weight.data, torch.ones(16)) and not m.bias.any()
    no_bias = pt.DyT((2, 8), bias=False, dtype=torch.float64)
    assert no_bias.bias is None and list(no_bias.state_dict()) == ["alpha", "weight"]
    assert no_bias.weight.shape == (2, 8) and no_bias.weight.dtype == torch.float64

    for module in (pt.DyT(16, dtype=torch.float64), pt.DyT((2, 8), bias=False, dtype=torch.float64)):
        _randomize(module, 4)
        x = (2 * torch.randn((6, *module.weight.shape), dtype=torch.float64)).requires_grad_()
        y = module(x)
        bias = module.bias if module.bias is not None else 0
        ref = module.weight * torch.tanh(module.alpha * x) + bias
        dy = torch.randn(y.shape, dtype=torch.float64)
        params = [x] + list(module.parameters())
        for got, expected, name in zip(torch.autograd.grad(y, params, dy), torch.autograd.grad(ref, params, dy),
                                       ["x"] + [n for n, _ in module.named_parameters()]):  # fmt: skip
            assert_close(got.numpy(), expected.numpy(), "float64", f"DyT d{name}")
        assert_close(y.detach().numpy(), ref.detach().numpy(), "float64", "DyT y")


class _Custom(torch.nn.LayerNorm):
    """A LayerNorm subclass with its own forward: replace_norms must leave it alone."""

    def forward(self, x):
        return super().forward(x) * 2


def _model():
    torch.manual_seed(0)
    inner = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.RMSNorm(8, eps=1e-6))
    return torch.nn.Sequential(
        torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), inner, _Custom(8), torch.nn.LayerNorm(8, bias=False)
    )


def test_replace_norms_in_place():
    model = _model()
    params_before = list(model.parameters())
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(5, 8)
    y_before = model(x)
    replaced = pt.replace_norms(model)
    assert list(replaced) == ["1", "2.1", "4"]
    assert type(replaced["2.1"]) is torch.nn.RMSNorm and type(model[2][1]) is pt.RMSNorm
    assert type(model[1]) is pt.LayerNorm and type(model[4]) is pt.LayerNorm and model[4].bias is None
    assert type(model[3]) is _Custom
    assert model[2][1].eps == 1e-6
    # the same Parameter objects: an optimizer made before still updates the model
    assert all(a is b for a, b in zip(model.parameters(), params_before))
    assert list(model.state_dict()) == list(state_before)
    assert_close(model(x).detach().numpy(), y_before.detach().numpy(), "float32", "replaced model")
    assert pt.replace_norms(model) == {}
    with pytest.raises(ValueError, match="itself a norm"):
        pt.replace_norms(torch.nn.LayerNorm(4))


def _compile_model(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(16, 32), pt.LayerNorm(32), torch.nn.GELU(), pt.DyT(32), torch.nn.Linear(32, 32), pt.RMSNorm(32),
    ).to(dtype)  # fmt: skip


def _eager_and_compiled(backend, dtype):
    model = _compile_model(dtype)
    x = torch.randn(4, 7, 16, dtype=dtype)
    weights = torch.randn(
        4, 7, 32, dtype=dtype
    )  # a loss whose gradient does not vanish (sum(y^2) is ~constant after RMSNorm)
    results = []
    for fn in (model, torch.compile(model, fullgraph=True, backend=backend)):
        model.zero_grad()
        y = fn(x)
        (y * weights).sum().backward()
        results.append([y.detach()] + [p.grad.clone() for p in model.parameters()])
    return results


def test_compile_fullgraph_traces_the_ops():
    # aot_eager: dynamo + AOTAutograd (fake tensors, the backward graph) without code generation
    torch._dynamo.reset()
    eager, compiled = _eager_and_compiled("aot_eager", torch.float64)
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)


def test_compile_fullgraph_inductor_matches_eager():
    # inductor generates C++ for the ops around pynorm's (Linear, GELU) and may reorder their
    # sums; in float64 that stays far inside the float64 tolerance (in float32 the summed
    # gradient of DyT's alpha, which cancels, moved by 2e-5 relative)
    torch._dynamo.reset()
    eager, compiled = _eager_and_compiled("inductor", torch.float64)
    for a, b in zip(eager, compiled):
        assert_close(b.numpy(), a.numpy(), "float64", "compiled vs eager")


def test_bench_command_runs_and_writes_json(tmp_path, capsys):
    import json

    from pynorm.torch import bench

    path = tmp_path / "bench.json"
    assert bench.main(["--quick", "--repeats", "1", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())["rows"]
    assert [r["case"].split(" ")[0] for r in rows[:3]] == ["RMSNorm", "LayerNorm", "DyT"]
    assert len(rows) == 7 and all(r["pynorm_s"] > 0 and r["torch_s"] > 0 for r in rows)
    assert "pre-norm block training step (2 RMSNorms replaced)" in capsys.readouterr().out
