"""pynorm.nn training: the torch twin agrees step by step, checkpoints resume bit-identically,
bad configurations fail clearly. Small data and batches keep the file fast on 2 cores."""

import json

import numpy as np
import pytest

import pynorm
import pynorm.nn as nn
from pynorm import cli
from pynorm.nn import twin as twin_module
from pynorm.nn.twin import TOLERANCES, compare_with_twin

torch = pytest.importorskip("torch")
threadpoolctl = pytest.importorskip("threadpoolctl")


@pytest.fixture(autouse=True, scope="module")
def one_thread_each():
    """The tiny batches here gain nothing from threads, and on a shared 2-core machine the
    thread pools of pynorm (OpenMP), OpenBLAS and torch spinning against each other make
    the file many times slower."""
    torch_threads, pynorm_threads = torch.get_num_threads(), pynorm.get_num_threads()
    torch.set_num_threads(1)
    pynorm.set_num_threads(1)
    with threadpoolctl.threadpool_limits(1):
        yield
    torch.set_num_threads(torch_threads)
    pynorm.set_num_threads(pynorm_threads)


# The papers' models with the papers' optimizers; only data size and batch are made small.
SMALL = {
    "power-method": dict(n_train=256, n_test=32, batch_size=16),
    "majority": dict(n_sequences=1000, batch_size=32),
}


def assert_within(errors, tolerance):
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tolerance, f"{worst}: {errors[worst]:.3e} > {tolerance:.0e}\n{errors}"


@pytest.mark.parametrize("name", sorted(SMALL))
def test_50_steps_agree_with_twin_float64(name):
    errors = compare_with_twin(name, 50, "float64", **SMALL[name])
    assert {"loss"} | {
        f"{kind}:{p}"
        for kind in ("grad", "param")
        for p in nn.build_experiment(name, **SMALL[name])[0].model.parameters()
    } == set(errors)
    assert_within(errors, TOLERANCES["float64"])


@pytest.mark.parametrize("name", sorted(SMALL))
def test_steps_agree_with_twin_float32(name):
    assert_within(compare_with_twin(name, 20, "float32", **SMALL[name]), TOLERANCES["float32"])


@pytest.mark.parametrize(
    "settings",
    [
        dict(optimizer="sgd", momentum=0.9, weight_decay=0.01, clip_norm=0.05),
        dict(optimizer="adamw", lr=0.01, weight_decay=0.1, schedule="cosine", warmup_steps=3, clip_norm=0.5),
        dict(optimizer="adam", lr=0.01, weight_decay=0.01, schedule="linear", min_lr_factor=0.1),
    ],
)
def test_optimizers_schedules_clipping_agree_with_twin(settings):
    overrides = {**SMALL["majority"], "attn_norm": "dyt", **settings}
    assert_within(compare_with_twin("majority", 8, "float64", **overrides), TOLERANCES["float64"])


@pytest.mark.parametrize("attn_norm", ["without_projection", "none"])
def test_p2_norm_variants_agree_with_twin(attn_norm):
    errors = compare_with_twin("majority", 5, "float64", attn_norm=attn_norm, **SMALL["majority"])
    assert_within(errors, TOLERANCES["float64"])


def test_p1_without_layer_norm_agrees_with_twin():
    errors = compare_with_twin(
        "power-method", 5, "float64", layer_norm=False, init_w=0.02, init_v=0.02, **SMALL["power-method"]
    )
    assert_within(errors, TOLERANCES["float64"])


@pytest.mark.parametrize(
    "name,settings",
    [
        ("power-method", dict(optimizer="sgd", momentum=0.9)),
        ("majority", dict(optimizer="adamw", weight_decay=0.1, schedule="cosine", warmup_steps=2)),
    ],
)
def test_checkpoint_resume_is_bit_identical(tmp_path, name, settings):
    common = dict(SMALL[name], steps=8, progress=False, log_every=1, eval_every=4, **settings)
    experiment, config = nn.build_experiment(name, **common)
    straight = nn.Trainer(experiment, config)
    straight.fit()

    experiment, config = nn.build_experiment(name, out_dir=str(tmp_path), checkpoint_every=3, **common)
    first = nn.Trainer(experiment, config)
    first.fit(5)  # checkpoints at step 3 and at the end (5)
    resumed = nn.Trainer.resume(str(tmp_path / "checkpoint"), progress=False)
    assert resumed.step == 5
    resumed.fit()
    for key, value in straight.model.parameters().items():
        np.testing.assert_array_equal(resumed.model.parameters()[key], value, err_msg=key)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 9))
    assert any("test_loss" in r for r in records)
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    assert meta["experiment"] == name and meta["step"] == 8


def test_training_reduces_the_p1_loss():
    experiment, config = nn.build_experiment(
        "power-method", n_train=256, n_test=64, batch_size=32, steps=40, progress=False
    )
    trainer = nn.Trainer(experiment, config)
    before = trainer.evaluate()["test_loss"]
    trainer.fit()
    assert trainer.evaluate()["test_loss"] < 0.9 * before


def test_cli_check(capsys, monkeypatch):
    args = ["check", "majority", "--steps", "2", "--set", "n_sequences=500", "--set", "batch_size=16"]
    assert cli.main(args) == 0
    assert "grad:embed.weight" in capsys.readouterr().out
    monkeypatch.setitem(twin_module.TOLERANCES, "float64", 0.0)  # every rounding difference now fails
    assert cli.main(args + ["--set", "optimizer=adam"]) == 1
    assert "FAIL" in capsys.readouterr().out
    assert cli.main(["check", "majority", "--set", "colour=blue"]) == 2
    assert "unknown setting 'colour'" in capsys.readouterr().err


def test_former_experiment_names_still_work(tmp_path):
    """p1_looped / p2_majority (the names before pynorm check took pynorm run's) are aliases,
    and a checkpoint written under a former name resumes."""
    assert nn.build_experiment("p1_looped", n_train=8, n_test=2, batch_size=4)[0].name == "power-method"
    experiment, config = nn.build_experiment(
        "power-method", n_train=16, n_test=4, batch_size=4, steps=2, progress=False, out_dir=str(tmp_path)
    )
    nn.Trainer(experiment, config).fit()
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    (tmp_path / "checkpoint.json").write_text(json.dumps({**meta, "experiment": "p1_looped"}))
    assert nn.Trainer.resume(str(tmp_path / "checkpoint")).step == 2


@pytest.mark.parametrize("command,module", [("run", "matplotlib"), ("run", "sklearn"), ("check", "torch")])
def test_missing_optional_dependency_is_one_line_before_any_work(capsys, monkeypatch, command, module):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    argv = [command, "layerwise", "--quick"] if command == "run" else [command, "majority"]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and 'pip install "pynorm[' in captured.err


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: nn.build_experiment("p3_vision"), ValueError, "unknown experiment 'p3_vision'"),
        (lambda: nn.build_experiment("power-method", widht=3), ValueError, "unknown setting"),
        (lambda: nn.build_experiment("power-method", optimizer="lion"), ValueError, "unknown optimizer 'lion'"),
        (lambda: nn.build_experiment("power-method", "float16"), ValueError, "dtype must be one of"),
        (
            lambda: nn.build_experiment("majority", attn_norm="batchnorm", n_sequences=100),
            ValueError,
            "unknown attn_norm 'batchnorm'",
        ),
        (
            lambda: nn.build_experiment("power-method", schedule="cosine", steps=5, warmup_steps=5),
            ValueError,
            "warmup_steps < total_steps",
        ),
        (
            lambda: nn.Trainer(*nn.build_experiment("power-method", n_train=8, n_test=2, batch_size=16)),
            ValueError,
            "exceeds the 8 training samples",
        ),
        (lambda: nn.Linear(4, 3).forward(np.zeros((2, 5))), ValueError, "last axis 4"),
        (lambda: nn.Linear(4, 3).forward(np.zeros((2, 4), np.float32)), TypeError, "dtype float32"),
        (lambda: nn.SoftmaxAttention(6, 4), ValueError, "not divisible"),
        (lambda: nn.make_norm("batchnorm", 4), ValueError, "unknown norm 'batchnorm'"),
        (lambda: nn.LinearAttention(4, parametrization="kernel"), ValueError, "unknown parametrization"),
        (lambda: nn.Activation("swish"), ValueError, "unknown kind 'swish'"),
        (lambda: nn.Embedding(5, 2).forward(np.array([5])), ValueError, r"ids must lie in \[0, 5\)"),
        (
            lambda: nn.PreNormBlock(nn.SoftmaxAttention(4, 2), nn.FeedForward(4, 4, dtype=np.float32)),
            ValueError,
            "dtype",
        ),
        (lambda: nn.Linear(3, 2).backward(np.zeros(2)), RuntimeError, "without a matching forward"),
        (lambda: nn.CrossEntropyLoss()(np.zeros((2, 3, 4)), np.zeros((2, 4), int)), ValueError, "labels of shape"),
    ],
)
def test_bad_configurations_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_resume_refuses_trajectory_changes(tmp_path):
    experiment, config = nn.build_experiment("power-method", **SMALL["power-method"], steps=1, progress=False)
    nn.Trainer(experiment, config).save(str(tmp_path / "ckpt"))
    with pytest.raises(ValueError, match="may change on resume"):
        nn.Trainer.resume(str(tmp_path / "ckpt"), lr=1.0)


def test_data_generators():
    parts = nn.majority_partitions(50, 20, 6)
    assert len(parts) == 69414 and all(sum(p) == 50 and p[0] - (p[1] if len(p) > 1 else 0) >= 6 for p in parts)
    data = nn.majority_data(200, seed=3)
    counts = np.apply_along_axis(np.bincount, 1, data["tokens"], minlength=20)
    assert (counts.argmax(1) == data["labels"][:, 0]).all() and (data["labels"] == data["labels"][:, :1]).all()
    np.testing.assert_array_equal(nn.majority_data(200, seed=3)["tokens"], data["tokens"])  # seeded
    p1 = nn.power_method_data(5, 4, 6, spike=3.0, seed=1)
    np.testing.assert_allclose(np.linalg.norm(p1["X"], axis=1), 1.0)
    top = np.linalg.eigh(p1["X"] @ p1["X"].transpose(0, 2, 1))[1][..., -1]
    np.testing.assert_allclose(np.abs((top * p1["basis"][..., 0]).sum(-1)), 1.0)
