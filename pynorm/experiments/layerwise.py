"""P1, Fig. 2: layer-wise training of one power step, with and without LN, then the trained
layer looped L = 1..25 times at inference.

Three single-layer arms, each the block ``E <- LN(E + V E E^T W E)`` of
:class:`pynorm.nn.LoopedTransformer` with one loop:

  (i)   ``ln``:                        with LN, target X X^T a / ||X X^T a||
  (ii)  ``no_ln_normalized_target``:   no LN,   target X X^T a / ||X X^T a||
  (iii) ``no_ln_unnormalized_target``: no LN,   target X X^T a

Choices the paper leaves open (PAPERS.md), and ours:

* Parametrization: the paper's theory for this figure is about the learned scalar
  g = w v (``R* = (1 + g lambda_2) / (1 + g lambda_1)``), so each arm trains the two
  scalars of ``W = [[0, w I], [0, 0]]``, ``V = [[0, 0], [v I, 0]]`` (:class:`ScalarPowerLayer`,
  which maps w, v into the LoopedTransformer's matrices and reduces its gradients). With
  full matrices the no-LN arm (iii) could cancel the residual a through the query's own
  attention term (``a^T W_22 a = c`` is constant for unit a), which is outside the paper's
  comparison. Init w = v = 0.1 (as in Fig. 1).
* Loss: squared error ``||y - target||^2`` summed over the d coordinates, averaged over the
  batch (:class:`SquaredErrorLoss`), y the readout of the query token.
* Data: the spiked sampler of PAPERS.md, columns of X ~ N(0, I + beta u u^T), column-
  normalised, beta = 10 (mean lambda_2 / lambda_1 ~ 0.36, max ~ 0.7), d = 16, n = 32, query
  a uniform on the sphere. The same distribution for training and test.
* Optimiser: SGD, lr 0.05 (lr 0.1, the Fig. 1 value, is at the edge of stability for the
  unnormalised target, whose size is ~lambda_1), batch 128; float64.
  Quick: 800 steps per arm, batch 64, 2,000 / 500 samples (under a minute on 2 shared
  cores); full: 20,000 steps, batch 128, 10,000 / 2,000.
* Angular error after L loops: sin of the angle between the readout and the top
  eigenvector, averaged over the test set. Per-loop contraction: per test matrix, the
  least-squares slope of log(error) against L over the loops 2..25 where the error is above
  1e-10 (rounding), exponentiated, averaged over the test set (at least 3 points), beside
  ``eigen_ratio`` = mean lambda_2 / lambda_1 and, per arm, the predicted
  ``R* = mean (1 + g lambda_2) / (1 + g lambda_1)`` with the learned g = w v.
* Seeds: the seed sets the data and the batch order. Quick and full: (0,).

Resuming: checkpoints live in ``<out>/train/seed<k>/<arm>/``; rerun the same command with
the same ``--out`` to continue.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Tuple

import numpy as np

from pynorm.nn import LoopedTransformer, Module, TrainConfig, power_method_data
from pynorm.nn.losses import Loss
from pynorm.nn.models import Experiment

from ._common import (
    Presets,
    chunk_points,
    comparison,
    pyplot,
    save_figure,
    seconds_per_step,
    train_with_trace,
    trainer_step,
    verdict_within,
)
from ._fanout import runner

NAME = "layerwise"
PAPER = (
    "Wu, Zhang, Cao, Looped Transformers with Layer Normalization Provably Learn the Power Method, "
    "arXiv 2606.00605 (2026), Fig. 2"
)

#: arm -> (layer norm, normalised target)
ARMS = {"ln": (True, True), "no_ln_normalized_target": (False, True), "no_ln_unnormalized_target": (False, False)}
ARM_LABELS = {
    "ln": "(i) LN, normalised target",
    "no_ln_normalized_target": "(ii) no LN, normalised target",
    "no_ln_unnormalized_target": "(iii) no LN, unnormalised target",
}


@dataclass
class Config(Presets):
    d: int = 16
    n: int = 32
    spike: float = 10.0
    n_train: int = 10_000
    n_test: int = 2_000
    steps: int = 20_000
    batch_size: int = 128
    lr: float = 0.05
    init_w: float = 0.1
    init_v: float = 0.1
    max_loops: int = 25
    n_points: int = 30
    max_chunk: int = 2_000
    seeds: Tuple[int, ...] = (0,)

    QUICK: ClassVar[Dict[str, Any]] = dict(
        n_train=2_000, n_test=500, steps=800, batch_size=64, n_points=16, max_chunk=400
    )
    TINY: ClassVar[Dict[str, Any]] = dict(
        n=16, n_train=512, n_test=128, steps=300, batch_size=64, max_loops=12, n_points=6, max_chunk=0
    )


@dataclass
class ArmConfig:
    """What one arm's model and data depend on (saved in its checkpoints)."""

    arm: str
    layer_norm: bool
    normalized_target: bool
    d: int
    n: int
    spike: float
    n_train: int
    n_test: int
    init_w: float
    init_v: float
    seed: int


class SquaredErrorLoss(Loss):
    """Mean over the batch of ``||pred - target||^2`` (summed over the last axis)."""

    def forward(self, pred, target):
        diff = pred - target
        self._saved = diff
        return float(np.mean(np.sum(diff * diff, axis=-1)))

    def backward(self):
        diff = self._take()
        return diff * (2.0 / diff.shape[0])


class ScalarPowerLayer(Module):
    """One block of :class:`pynorm.nn.LoopedTransformer` (``loops=1``) with W and V tied to
    two scalars: ``W = w [[0, I], [0, 0]]``, ``V = v [[0, 0], [I, 0]]``. Parameters: w, v
    (shape (1,)). The inner transformer is not a child, so only w and v are trained."""

    def __init__(self, d: int, *, layer_norm: bool, init_w: float = 0.1, init_v: float = 0.1, dtype=np.float64):
        super().__init__(dtype)
        self.d = int(d)
        self.inner = LoopedTransformer(d, 1, layer_norm=layer_norm, init_w=0.0, init_v=0.0, init_noise=0.0, dtype=dtype)
        self.pattern_w = np.zeros((2 * d, 2 * d), dtype=self.dtype)
        self.pattern_w[:d, d:] = np.eye(d)
        self.pattern_v = self.pattern_w.T.copy()
        self.add_param("w", np.full(1, init_w))
        self.add_param("v", np.full(1, init_v))

    def _load(self) -> None:
        p = self.inner.parameters()
        p["block.attention.W"][...] = self.params["w"][0] * self.pattern_w
        p["block.attention.V"][...] = self.params["v"][0] * self.pattern_v

    def train(self, mode: bool = True) -> "ScalarPowerLayer":
        super().train(mode)
        self.inner.train(mode)
        return self

    def forward(self, X, a):
        self._load()
        return self.inner(X, a)

    def backward(self, dy):
        self.inner.zero_grad()
        self.inner.backward(dy)
        g = self.inner.gradients()
        self.accumulate("w", np.array([np.sum(g["block.attention.W"] * self.pattern_w)]))
        self.accumulate("v", np.array([np.sum(g["block.attention.V"] * self.pattern_v)]))

    def iterate(self, X: np.ndarray, a: np.ndarray, loops: int) -> np.ndarray:
        """The readout after 1..loops applications of the layer: (loops, batch, d)."""
        self._load()
        self.train(False)
        batch, d, n = X.shape
        tokens = np.zeros((batch, n + 1, 2 * d), dtype=self.dtype)
        tokens[:, :n, :d] = np.swapaxes(X, 1, 2)
        tokens[:, n, d:] = a
        block = self.inner.block
        out = []
        for _ in range(loops):
            tokens = block(tokens)
            out.append(tokens[:, -1, d:].copy())
        self.train(True)
        return np.stack(out)


def arm_experiment(cfg: Config, arm: str, seed: int) -> Experiment:
    layer_norm, normalized = ARMS[arm]
    data = power_method_data(cfg.n_train + cfg.n_test, cfg.d, cfg.n, spike=cfg.spike, seed=seed)
    step = (data["X"] @ (np.swapaxes(data["X"], 1, 2) @ data["a"][..., None]))[..., 0]
    data["target"] = step / np.linalg.norm(step, axis=1, keepdims=True) if normalized else step
    train = {k: v[: cfg.n_train] for k, v in data.items()}
    test = {k: v[cfg.n_train :] for k, v in data.items()}
    arm_cfg = ArmConfig(
        arm, layer_norm, normalized, cfg.d, cfg.n, cfg.spike, cfg.n_train, cfg.n_test, cfg.init_w, cfg.init_v, seed
    )
    model = ScalarPowerLayer(cfg.d, layer_norm=layer_norm, init_w=cfg.init_w, init_v=cfg.init_v)
    return Experiment(
        f"p1_layerwise_{arm}",
        arm_cfg,
        np.dtype(np.float64),
        model,
        SquaredErrorLoss(),
        train,
        test,
        ("X", "a"),
        "target",
    )


def angular_errors(model: ScalarPowerLayer, test: Dict[str, np.ndarray], loops: int) -> np.ndarray:
    """sin(angle to the top eigenvector) after 1..loops loops: (loops, samples)."""
    ys = model.iterate(test["X"], test["a"], loops)
    u = test["basis"][..., 0]
    along = np.sum(ys * u, axis=-1, keepdims=True)
    return np.linalg.norm(ys - along * u, axis=-1) / np.linalg.norm(ys, axis=-1)


def fitted_contraction(errors: np.ndarray, first: int = 2, floor: float = 1e-10) -> float:
    """Mean over samples of exp(slope of log error vs loop), loops >= first, error > floor."""
    loops = np.arange(1, errors.shape[0] + 1, dtype=float)[:, None] * np.ones_like(errors)
    keep = (errors > floor) & (loops >= first) & np.isfinite(errors)
    rates = []
    for j in range(errors.shape[1]):
        k = keep[:, j]
        if k.sum() >= 3:
            rates.append(np.exp(np.polyfit(loops[k, j], np.log(errors[k, j]), 1)[0]))
    return float(np.mean(rates)) if rates else float("nan")


def units(cfg: Config):
    """One unit per seed and arm."""
    return [(seed, arm) for seed in cfg.seeds for arm in ARMS]


def _train_config(cfg: Config, seed: int, steps: int) -> TrainConfig:
    return TrainConfig(
        steps=steps,
        batch_size=cfg.batch_size,
        optimizer="sgd",
        lr=cfg.lr,
        batch_seed=seed,
        log_every=1,
        eval_batch_size=2_000,
    )


def run_unit(cfg: Config, unit, out_dir: pathlib.Path, progress: bool) -> Dict[str, Any]:
    """Trains one (seed, arm); returns its losses, g, the contraction looped 1..max_loops at
    inference, and the test set's mean lambda_2 / lambda_1 (the same for every arm of a seed)."""
    seed, arm = unit

    def record(trainer):
        return {"w": float(trainer.model.params["w"][0]), "v": float(trainer.model.params["v"][0])}

    exp = arm_experiment(cfg, arm, seed)
    _, trace = train_with_trace(
        exp,
        _train_config(cfg, seed, cfg.steps),
        out_dir / "train" / f"seed{seed}" / arm,
        chunk_points(cfg.steps, cfg.n_points, cfg.max_chunk),
        record,
        progress,
        f"{NAME} seed {seed} {arm}",
    )
    X = exp.test["X"]
    ev = np.linalg.eigvalsh(X @ np.swapaxes(X, 1, 2))
    g = float(exp.model.params["w"][0] * exp.model.params["v"][0])
    errors = angular_errors(exp.model, exp.test, cfg.max_loops)
    last = [r for r in trace if r["step"] <= 0.75 * cfg.steps][-1:] or trace[:1]
    return {
        "final_loss": trace[-1]["test_loss"],
        "final_train_loss": trace[-1]["train_loss"],
        "loss_change_last_quarter": (trace[-1]["test_loss"] - last[0]["test_loss"]) / last[0]["test_loss"],
        "g": g,
        "contraction": fitted_contraction(errors),
        "predicted_contraction": float(np.mean((1 + g * ev[:, -2]) / (1 + g * ev[:, -1]))),
        "angular_error": errors.mean(axis=1).tolist(),
        "trace": trace,
        "eigen_ratio": float(np.mean(ev[:, -2] / ev[:, -1])),
    }


def unit_seconds(cfg: Config, units) -> Dict[Any, float]:
    """Estimated seconds of each unit: ``cfg.steps`` times a few timed steps of its arm's model."""
    per_step = {
        arm: seconds_per_step(trainer_step(arm_experiment(cfg, arm, 0), _train_config(cfg, 0, cfg.steps)))
        for arm in ARMS
    }
    return {unit: per_step[unit[1]] * cfg.steps for unit in units}


def _figures(out_dir: pathlib.Path, runs: Dict[int, Dict[str, Any]], cfg: Config):
    plt = pyplot()
    colors = dict(zip(ARMS, ("C0", "C3", "C2")))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for seed, r in runs.items():
        for arm, a in r["arms"].items():
            t = np.array([x["step"] for x in a["trace"]], float)
            keep = t > 0
            train = np.array([x["train_loss"] if x["train_loss"] is not None else np.nan for x in a["trace"]])
            test = np.array([x["test_loss"] for x in a["trace"]])
            axes[0].plot(t[keep], test[keep], color=colors[arm], label=f"{ARM_LABELS[arm]} test")
            axes[0].plot(t[keep], train[keep], color=colors[arm], ls=":", alpha=0.7, label=f"{ARM_LABELS[arm]} train")
            axes[1].plot(
                np.arange(1, cfg.max_loops + 1),
                a["angular_error"],
                "o-",
                ms=3,
                color=colors[arm],
                label=f"{ARM_LABELS[arm]} (fit {a['contraction']:.3f}/loop)",
            )
        break  # one seed is enough to show
    first = next(iter(runs.values()))
    L = np.arange(1, cfg.max_loops + 1)
    ref = first["arms"]["ln"]["angular_error"][0] * first["eigen_ratio"] ** (L - 1)
    axes[1].plot(L, ref, "k--", lw=1, label=f"mean lambda2/lambda1 = {first['eigen_ratio']:.3f} per loop")
    axes[0].set(xscale="log", yscale="log", xlabel="step", ylabel="||y - target||^2", title="Layer-wise training loss")
    axes[1].set(
        yscale="log",
        xlabel="inference loops L",
        ylabel="mean sin(angle to top eigenvector)",
        title="Trained layer looped at inference",
        ylim=(1e-17, 2),
    )
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which="both")
    return [save_figure(fig, out_dir, "layerwise.png")]


run = runner(__name__)


def combine(cfg: Config, results: Dict[Any, Dict[str, Any]], out_dir: pathlib.Path) -> Dict[str, Any]:
    """Metrics (means over seeds per arm, per seed, traces), the figure and the comparisons."""
    runs = {
        seed: {
            "arms": {arm: results[(seed, arm)] for arm in ARMS},
            "eigen_ratio": results[(seed, next(iter(ARMS)))]["eigen_ratio"],
        }
        for seed in cfg.seeds
    }

    def mean(arm, key):
        return float(np.mean([r["arms"][arm][key] for r in runs.values()]))

    eigen_ratio = float(np.mean([r["eigen_ratio"] for r in runs.values()]))
    keys = ("final_loss", "final_train_loss", "loss_change_last_quarter", "g", "contraction", "predicted_contraction")
    metrics: Dict[str, Any] = {
        "final_loss": {arm: mean(arm, "final_loss") for arm in ARMS},
        "final_train_loss": {arm: mean(arm, "final_train_loss") for arm in ARMS},
        "loss_change_last_quarter": {arm: mean(arm, "loss_change_last_quarter") for arm in ARMS},
        "g": {arm: mean(arm, "g") for arm in ARMS},
        "angular_error": {
            arm: np.mean([r["arms"][arm]["angular_error"] for r in runs.values()], axis=0).tolist() for arm in ARMS
        },
        "contraction_ln": mean("ln", "contraction"),
        "contraction_no_ln_normalized_target": mean("no_ln_normalized_target", "contraction"),
        "contraction_no_ln_unnormalized_target": mean("no_ln_unnormalized_target", "contraction"),
        "predicted_contraction": {arm: mean(arm, "predicted_contraction") for arm in ARMS},
        "eigen_ratio": eigen_ratio,
        "per_seed": {str(s): {arm: {k: r["arms"][arm][k] for k in keys} for arm in ARMS} for s, r in runs.items()},
        "trace": {
            str(s): {
                arm: {
                    "step": [x["step"] for x in r["arms"][arm]["trace"]],
                    "test_loss": [x["test_loss"] for x in r["arms"][arm]["trace"]],
                }
                for arm in ARMS
            }
            for s, r in runs.items()
        },
    }
    figures = _figures(out_dir, runs, cfg)

    fl = metrics["final_loss"]
    no_ln_min = min(fl["no_ln_normalized_target"], fl["no_ln_unnormalized_target"])
    change = metrics["loss_change_last_quarter"]
    ln_ok = fl["ln"] < 0.2 * no_ln_min and change["ln"] < -0.05
    comparisons = [
        comparison(
            "final loss, (i) LN",
            fl["ln"],
            "-> 0, still falling",
            "reproduced" if ln_ok else "partial" if fl["ln"] < no_ln_min else "not reproduced",
            f"{100 * change['ln']:+.1f}% over the last quarter of training; learned g = w v = {metrics['g']['ln']:.3g}",
        ),
    ]
    for arm in ("no_ln_normalized_target", "no_ln_unnormalized_target"):
        plateau = abs(change[arm]) < 0.01 and fl[arm] > fl["ln"]
        comparisons.append(
            comparison(
                f"final loss, {ARM_LABELS[arm]}",
                fl[arm],
                "plateau > 0",
                "reproduced" if plateau else "partial" if fl[arm] > fl["ln"] else "not reproduced",
                f"{100 * change[arm]:+.2f}% over the last quarter; g* = {metrics['g'][arm]:.3g}",
            )
        )
    comparisons.append(
        comparison(
            "per-loop contraction, (i) LN",
            metrics["contraction_ln"],
            f"lambda2/lambda1 = {eigen_ratio:.4g}",
            verdict_within(metrics["contraction_ln"], eigen_ratio, 0.03, 0.1),
            f"predicted (1+g l2)/(1+g l1) with the learned g: {metrics['predicted_contraction']['ln']:.4g}",
        )
    )
    for arm, key in (
        ("no_ln_normalized_target", "contraction_no_ln_normalized_target"),
        ("no_ln_unnormalized_target", "contraction_no_ln_unnormalized_target"),
    ):
        pred = metrics["predicted_contraction"][arm]
        slower = metrics[key] > metrics["contraction_ln"] + 0.02
        close = abs(metrics[key] - pred) < 0.03
        comparisons.append(
            comparison(
                f"per-loop contraction, {ARM_LABELS[arm]}",
                metrics[key],
                f"R* = (1+g*l2)/(1+g*l1) = {pred:.4g} (> lambda2/lambda1)",
                "reproduced" if slower and close else "partial" if slower or close else "not reproduced",
                f"g* = {metrics['g'][arm]:.3g}; LN arm {metrics['contraction_ln']:.4g}",
            )
        )
    return {"metrics": metrics, "comparisons": comparisons, "figures": figures}
