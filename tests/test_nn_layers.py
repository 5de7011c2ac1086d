"""Every pynorm.nn layer and loss, forward and backward, against torch autograd in float64.

The torch side uses torch's own modules and functionals (F.layer_norm, F.rms_norm,
nn.MultiheadAttention, ...), not pynorm.nn's twin, so the two are independent.
"""

import numpy as np
import pytest

import pynorm
import pynorm.nn as nn

torch = pytest.importorskip("torch")
F = torch.nn.functional

RTOL = 1e-10  # float64 throughout: only rounding may differ
ATOL = 1e-14  # for gradients that are exactly zero in theory (softmax ignores the key bias)


def close(a, b, what):
    a, b = np.asarray(a), b.detach().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    assert a.shape == b.shape, f"{what}: shape {a.shape} vs {b.shape}"
    scale = max(np.abs(b).max(initial=0.0), 1e-300)
    assert np.abs(a - b).max(initial=0.0) <= RTOL * scale + ATOL, f"{what}: max error {np.abs(a - b).max():.3e}"


def check_layer(layer, x, torch_fn, rng, grad_of_x=True):
    """Forward, backward (twice: gradients must accumulate) vs torch_fn(x, params)."""
    params = {k: torch.tensor(v, requires_grad=True) for k, v in layer.parameters().items()}
    xt = torch.tensor(x, requires_grad=grad_of_x) if x.dtype.kind == "f" else torch.tensor(x)
    yt = torch_fn(xt, params)
    dy = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.tensor(dy))
    layer.zero_grad()
    for repeat in (1, 2):
        y = layer.forward(x)
        dx = layer.backward(dy)
        close(y, yt, "y")
        if grad_of_x:
            close(dx, xt.grad, "dx")
        for name, grad in layer.gradients().items():
            close(grad, repeat * params[name].grad, f"d{name} (after {repeat} backward)")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("bias", [True, False])
def test_linear(rng, bias):
    layer = nn.Linear(5, 3, bias, rng=rng)
    check_layer(layer, rng.standard_normal((2, 4, 5)), lambda x, p: F.linear(x, p["weight"], p.get("bias")), rng)


def test_embedding_tied(rng):
    emb = nn.Embedding(7, 4, tied=True, rng=rng)
    ids = rng.integers(0, 7, (3, 5))
    w = torch.tensor(emb.params["weight"], requires_grad=True)
    logits_t = (2 * w[torch.tensor(ids)]) @ w.T
    dlogits = rng.standard_normal(tuple(logits_t.shape))
    logits_t.backward(torch.tensor(dlogits))
    logits = emb.project(2 * emb.forward(ids))
    emb.backward(2 * emb.project_backward(dlogits))
    close(logits, logits_t, "logits")
    close(emb.grads["weight"], w.grad, "dweight (both uses)")


@pytest.mark.parametrize("kind", ["relu", "gelu_tanh"])
def test_feedforward(rng, kind):
    layer = nn.FeedForward(4, 6, kind, rng=rng)
    act = F.relu if kind == "relu" else (lambda t: F.gelu(t, approximate="tanh"))
    check_layer(
        layer,
        rng.standard_normal((3, 4)),
        lambda x, p: F.linear(act(F.linear(x, p["fc1.weight"], p["fc1.bias"])), p["fc2.weight"], p["fc2.bias"]),
        rng,
    )


def _torch_norm(kind, eps):
    d = 6
    return {
        "layernorm": lambda x: F.layer_norm(x, (d,), eps=eps),
        "projection": lambda x: x - x.mean(-1, keepdim=True),
        "scaling": lambda x: F.rms_norm(x, (d,), eps=eps),
        "none": lambda x: x,
    }[kind]


@pytest.mark.parametrize("kind", ["layernorm", "projection", "scaling", "none"])
@pytest.mark.parametrize("affine", ["affine", "weight_only", "no_affine"])
def test_layer_norm_variants(rng, kind, affine):
    center, scale = nn.norms.LAYER_NORM_VARIANTS[kind]
    layer = nn.LayerNorm(6, center=center, scale=scale, affine=affine != "no_affine", bias=affine == "affine")
    for name in layer.params:  # non-trivial affine parameters
        layer.params[name][...] = rng.standard_normal(6)
    norm = _torch_norm(kind, layer.eps)

    def reference(x, p):
        y = norm(x)
        y = y * p["weight"] if "weight" in p else y
        return y + p["bias"] if "bias" in p else y

    check_layer(layer, 3.0 + rng.standard_normal((2, 5, 6)), reference, rng)


def test_make_norm_kinds_and_rmsnorm(rng):
    layer = nn.make_norm("rmsnorm", 6, eps=1e-6)
    layer.params["weight"][...] = rng.standard_normal(6)
    check_layer(layer, rng.standard_normal((4, 6)), lambda x, p: F.rms_norm(x, (6,), p["weight"], eps=1e-6), rng)
    for kind in nn.norms.NORM_KINDS:
        assert isinstance(nn.make_norm(kind, 6), nn.Module)


def test_l2_norm(rng):
    check_layer(nn.L2Norm(), rng.standard_normal((3, 4, 8)), lambda x, p: F.normalize(x, dim=-1, eps=0.0), rng)


@pytest.mark.parametrize("affine,bias", [(True, True), (True, False), (False, False)])
def test_dyt(rng, affine, bias):
    layer = nn.DyT(6, alpha0=0.8, affine=affine, bias=bias)
    for name in ("weight", "bias"):
        if name in layer.params:
            layer.params[name][...] = rng.standard_normal(6)

    def reference(x, p):
        y = torch.tanh(p["alpha"] * x)
        y = y * p["weight"] if "weight" in p else y
        return y + p["bias"] if "bias" in p else y

    check_layer(layer, 2 * rng.standard_normal((3, 5, 6)), reference, rng)  # includes dalpha


def torch_linear_attention(q, k, v, causal, normalize, eps, scale):
    n = q.shape[-2]
    scores = torch.einsum("...id,...jd->...ij", q, k)
    if causal:
        scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), 0.0)
    out = scale * scores @ v
    return out / (scale * scores.sum(-1, keepdim=True) + eps) if normalize else out


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
def test_linear_attention_kernel_matches_the_twins_formula(rng, causal, normalize):
    kwargs = dict(causal=causal, normalize=normalize, eps=1e-3, scale=0.7)
    q, k = rng.uniform(0.1, 1, (2, 5, 3)), rng.uniform(0.1, 1, (2, 5, 3))  # positive: safe denominators
    v = rng.standard_normal((2, 5, 4))
    qt, kt, vt = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    out_t = torch_linear_attention(qt, kt, vt, **kwargs)
    dout = rng.standard_normal(out_t.shape)
    out_t.backward(torch.tensor(dout))
    close(pynorm.linear_attention(q, k, v, **kwargs), out_t, "out")
    for got, t, name in zip(pynorm.linear_attention_backward(dout, q, k, v, **kwargs), (qt, kt, vt), "qkv"):
        close(got, t.grad, f"d{name}")


@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_merged(rng, causal):
    layer = nn.LinearAttention(6, causal=causal, init_std=0.3, rng=rng)

    def reference(x, p):  # the paper's V E E^T W E on the column layout E = x^T
        E = x.transpose(-1, -2)
        if not causal:
            return (p["V"] @ E @ E.transpose(-1, -2) @ p["W"] @ E).transpose(-1, -2)
        return torch_linear_attention(x @ p["W"].T, x, x @ p["V"].T, True, False, 0.0, 1.0)

    check_layer(layer, rng.standard_normal((2, 5, 6)), reference, rng)


@pytest.mark.parametrize("causal", [False, True])  # fused residual (non-causal) and the generic one
def test_linear_attention_residual(rng, causal):
    layer = nn.LinearAttention(6, causal=causal, init_std=0.3, rng=rng)
    x, dy = rng.standard_normal((2, 2, 5, 6))
    y = layer.forward_residual(x)
    dx = layer.backward_residual(dy)
    grads = {k: v.copy() for k, v in layer.gradients().items()}
    layer.zero_grad()
    close(y, x + layer(x), "x + attention(x)")
    close(dx, dy + layer.backward(dy), "dy + backward(dy)")
    for name, g in layer.gradients().items():
        close(grads[name], g, name)


def test_linear_attention_qkv(rng):
    layer = nn.LinearAttention(
        6, parametrization="qkv", causal=True, normalize=True, key_dim=4, value_dim=5, bias=True, rng=rng
    )

    def reference(x, p):
        proj = {n: F.linear(x, p[f"{n}_proj.weight"], p[f"{n}_proj.bias"]) for n in "qkv"}
        out = torch_linear_attention(proj["q"], proj["k"], proj["v"], True, True, 1e-6, 1.0)
        return F.linear(out, p["out_proj.weight"], p["out_proj.bias"])

    check_layer(layer, rng.uniform(0, 1, (2, 5, 6)), reference, rng)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_softmax_attention_vs_torch_multihead(rng, causal, bias):
    layer = nn.SoftmaxAttention(8, 2, causal=causal, qkv_bias=bias, out_bias=bias, rng=rng)
    n = 5

    def reference(x, p):
        mha = torch.nn.MultiheadAttention(8, 2, bias=bias, batch_first=True, dtype=torch.float64)
        in_w = torch.cat([p[f"{c}_proj.weight"] for c in "qkv"])
        mha.in_proj_weight = None  # replaced by the (differentiable) concatenation below
        del mha.in_proj_weight
        mha.in_proj_weight = in_w
        mha.out_proj.weight = None
        del mha.out_proj.weight
        mha.out_proj.weight = p["out_proj.weight"]
        if bias:
            del mha.in_proj_bias, mha.out_proj.bias
            mha.in_proj_bias = torch.cat([p[f"{c}_proj.bias"] for c in "qkv"])
            mha.out_proj.bias = p["out_proj.bias"]
        mask = torch.ones(n, n, dtype=torch.bool).triu(1) if causal else None
        return mha(x, x, x, attn_mask=mask, need_weights=False)[0]

    check_layer(layer, rng.standard_normal((3, n, 8)), reference, rng)


@pytest.mark.parametrize("norm", ["layernorm", "scaling", "dyt", "rmsnorm", "identity"])
def test_pre_norm_block_vs_twin(rng, norm):
    from pynorm.nn import _torch_twin

    block = nn.PreNormBlock(
        nn.SoftmaxAttention(8, 2, causal=True, rng=rng),
        nn.FeedForward(8, 12, rng=rng),
        nn.make_norm(norm, 8),
        nn.make_norm("layernorm", 8),
    )
    twin = _torch_twin.to_torch(block)
    assert [n for n, _ in twin.named_parameters()] == list(block.parameters())
    check_layer(block, rng.standard_normal((2, 5, 8)), lambda x, p: torch.func.functional_call(twin, p, (x,)), rng)


def test_looped_block_vs_twin(rng):
    from pynorm.nn import _torch_twin

    block = nn.LoopedBlock(nn.LinearAttention(8, init_std=0.2, rng=rng), nn.L2Norm(), loops=4)
    twin = _torch_twin.to_torch(block)
    check_layer(block, rng.standard_normal((2, 5, 8)), lambda x, p: torch.func.functional_call(twin, p, (x,)), rng)


@pytest.mark.parametrize("normalize", [False, True])
def test_subspace_distance(rng, normalize):
    y = rng.standard_normal((4, 6))
    basis = np.linalg.qr(rng.standard_normal((4, 6, 2)))[0]
    yt = torch.tensor(y, requires_grad=True)
    u = F.normalize(yt, dim=-1) if normalize else yt
    bt = torch.tensor(basis)
    r = u - (bt @ (bt.transpose(1, 2) @ u[..., None]))[..., 0]
    (r * r).sum(-1).mean().backward()
    loss = nn.SubspaceDistanceLoss(normalize)
    close(loss(y, basis), (r * r).sum(-1).mean(), "loss")
    close(loss.backward(), yt.grad, "dy")


def test_mse_and_cross_entropy(rng):
    pred, target = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    pt = torch.tensor(pred, requires_grad=True)
    F.mse_loss(pt, torch.tensor(target)).backward()
    mse = nn.MSELoss()
    close(mse(pred, target), F.mse_loss(pt, torch.tensor(target)), "mse")
    close(mse.backward(), pt.grad, "dmse")
    logits, labels = rng.standard_normal((2, 5, 7)) * 3, rng.integers(0, 7, (2, 5))
    lt = torch.tensor(logits, requires_grad=True)
    ref = F.cross_entropy(lt.reshape(-1, 7), torch.tensor(labels).reshape(-1))
    ref.backward()
    ce = nn.CrossEntropyLoss()
    close(ce(logits, labels), ref, "cross-entropy")
    close(ce.backward(), lt.grad, "dlogits")


def test_float32_layers_keep_dtype(rng):
    x = rng.standard_normal((2, 5, 8)).astype(np.float32)
    block = nn.PreNormBlock(
        nn.SoftmaxAttention(8, 2, dtype=np.float32, rng=rng),
        nn.FeedForward(8, 8, dtype=np.float32, rng=rng),
        nn.make_norm("dyt", 8, dtype=np.float32),
        nn.LayerNorm(8, dtype=np.float32),
    )
    y = block(x)
    dx = block.backward(np.ones_like(y))
    assert y.dtype == dx.dtype == np.float32
    assert all(g.dtype == np.float32 for g in block.gradients().values())
