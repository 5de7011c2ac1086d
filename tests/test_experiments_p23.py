"""The P2/P3 experiments at tiny configurations (seconds each), asserting their qualitative
claims where those are robust at this size; and the new layers (TinyGPT, TinyViT, Squash)
against torch autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pynorm.experiments import _selectable, dyt, majority, norm_efficiency, unselectable


def _check_contract(module, result, out_dir):
    assert isinstance(module.NAME, str) and isinstance(module.PAPER, str)
    assert set(result) == {"metrics", "comparisons", "figures"}
    for comparison in result["comparisons"]:
        assert {"name", "ours", "paper", "verdict", "note"} <= set(comparison)
        assert comparison["verdict"] in ("reproduced", "not reproduced", "partial", "n/a")
    for name in result["figures"]:
        assert (out_dir / name).stat().st_size > 1000


@pytest.mark.parametrize("module", [majority, unselectable, dyt, norm_efficiency])
def test_configs(module):
    for cfg in (module.Config.quick(), module.Config.full()):
        assert len(cfg.seeds) >= 1


# -- the LP ----------------------------------------------------------------------------------
def test_lp_decides_hull_membership():
    keys = np.array([[1.0, 0.0], [-1.0, 1.0], [-1.0, -1.0], [-0.2, 0.0]])  # the last is inside
    assert [_selectable.lp_margin(keys, i) > _selectable.R_THRESHOLD for i in range(4)] == [True, True, True, False]
    mask, _, disagreements = _selectable.unselectable_mask(keys, verify=True)
    assert mask.tolist() == [False, False, False, True] and disagreements == 0
    duplicate = np.array([[1.0, 2.0], [1.0, 2.0], [0.0, -1.0]])
    assert _selectable.unselectable_mask(duplicate)[0][:2].all()


def test_witness_never_claims_an_interior_key():
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((40, 3))
    proved = _selectable.witnessed(keys)
    lp = np.array([_selectable.lp_margin(keys, i) > _selectable.R_THRESHOLD for i in range(len(keys))])
    assert not (proved & ~lp).any()
    assert (~lp).any()  # 40 Gaussian points in 3-d: some are inside the hull


# -- unselectable -----------------------------------------------------------------------------
def test_unselectable_random_keys_and_tiny_lms(tmp_path):
    cfg = unselectable.Config.tiny()
    result = unselectable.run(cfg, tmp_path, progress=False)
    _check_contract(unselectable, result, tmp_path)
    m = result["metrics"]
    assert m["fraction_before"][3][30] > 0.5  # small d, many keys
    assert m["fraction_after"][3][30] == 0 and m["fraction_after"][12][30] == 0
    assert m["certificate_lp_disagreements"] == 0
    assert m["unselectable_per_layer"]["scaling"] == [0.0] * 4  # LN outputs lie on an ellipsoid
    assert len(m["unselectable_per_layer"]["no_scaling"]) == 4


# -- majority ---------------------------------------------------------------------------------
def test_majority_tiny(tmp_path):
    cfg = majority.Config.tiny()
    result = majority.run(cfg, tmp_path, progress=False)
    _check_contract(majority, result, tmp_path)
    m = result["metrics"]
    for variant in cfg.variants:
        assert 0 <= m[variant]["acc_at_20"] <= 1
        assert 0 <= m[variant]["query_angle_deg"]["end"] <= 90
    assert len(result["figures"]) == 3


def test_query_angle_of_an_aligned_query():
    from pynorm.nn import MajorityTransformer

    model = MajorityTransformer(attn_norm="without_projection")  # scaling only: sum(x) survives
    attention = model.block.mixer
    attention.k_proj.params["weight"][...] = np.eye(8)
    attention.q_proj.params["weight"][...] = np.ones((8, 8))  # W_K^T W_Q x = sum(x) 1
    model.embed.params["weight"][...] += 5.0  # keeps sum(x) away from 0
    assert majority.query_angle_deg(model, np.arange(20)[None, :]) < 1e-3
    attention.q_proj.params["weight"][...] = np.eye(8)  # W_K^T W_Q x = x: far from 1 for random x
    model.embed.params["weight"][...] -= 5.0
    assert majority.query_angle_deg(model, np.arange(20)[None, :]) > 30


# -- dyt --------------------------------------------------------------------------------------
def test_dyt_trains_well_above_chance(tmp_path):
    cfg = dyt.Config.tiny()
    result = dyt.run(cfg, tmp_path, progress=False)
    _check_contract(dyt, result, tmp_path)
    m = result["metrics"]
    assert m["acc"]["digits_vit"]["dyt"] > 0.3  # chance is 0.1
    assert m["acc"]["digits_vit"]["layernorm"] > 0.3
    assert set(m["tanh_fit_r2"]) == {"block0.norm1", "block0.norm2", "block1.norm1", "block1.norm2", "final"}
    assert all(m["tanh_fit_r2"][k] >= m["linear_fit_r2"][k] - 1e-6 for k in m["tanh_fit_r2"])
    assert len(m["alpha_vs_inv_std"]["final"]["alpha"]) == 4


def test_tanh_fit_finds_a_tanh():
    x = np.linspace(-4, 4, 2001)
    fit = dyt.fit_r2(x, 1.5 * np.tanh(0.8 * x))
    assert fit["tanh"] > 0.999 and fit["linear"] < 0.95


# -- norm efficiency --------------------------------------------------------------------------
def test_norm_efficiency_tiny(tmp_path):
    cfg = norm_efficiency.Config(shapes=((256, 128),), min_seconds=0.001, repeats=1, rounds=1, torch_compile=False)
    result = norm_efficiency.run(cfg, tmp_path, progress=False)
    _check_contract(norm_efficiency, result, tmp_path)
    times = result["metrics"]["times_ms"]
    for norm in norm_efficiency.NORMS:
        for pass_ in norm_efficiency.PASSES:
            assert times["pynorm"][norm][pass_]["256x128"] > 0
    assert math.isfinite(result["metrics"]["dyt_over_ln"]["pynorm"]["forward"]["256x128"])


# -- new layers vs torch autograd -----------------------------------------------------------
@pytest.mark.parametrize("which", ["gpt", "vit_sigmoid", "vit_hardtanh", "vit_no_alpha", "vit_dyt"])
def test_tiny_models_match_torch(which):
    torch = pytest.importorskip("torch")
    from pynorm.nn import CrossEntropyLoss, TinyGPT, TinyViT
    from pynorm.nn._torch_twin import loss_fn, to_torch

    rng = np.random.default_rng(3)
    if which == "gpt":
        model = TinyGPT(11, 8, 2, 4, 12, norm="projection", rng=rng)
        inputs, target = rng.integers(0, 11, (3, 12)), rng.integers(0, 11, (3, 12))
    else:
        model = TinyViT(8, 2, 10, 16, 1, 2, norm=which[4:].replace("no_alpha", "tanh_no_alpha"), rng=rng)
        inputs, target = rng.standard_normal((5, 8, 8)), rng.integers(0, 10, 5)
    loss = CrossEntropyLoss()
    value = loss(model(inputs), target)
    model.zero_grad()
    model.backward(loss.backward())
    twin = to_torch(model)
    twin_value = loss_fn(loss)(twin(torch.from_numpy(inputs)), torch.from_numpy(target))
    twin_value.backward()
    assert abs(value - float(twin_value.detach())) < 1e-10
    grads = model.gradients()
    for name, p in twin.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-8, atol=1e-10, err_msg=name)
