"""P3: transformers without normalization -- DyT against LayerNorm and RMSNorm, at toy scale.

Zhu, Chen, He, LeCun & Liu replace every norm of a transformer by DyT(x) = gamma *
tanh(alpha x) + beta (alpha one learnable scalar per layer, alpha0 = 0.5) and find it
matches LN/RMSNorm (ViT-B 82.3 -> 82.5 % on ImageNet, ...). Ablations (ViT-B): identity
diverges; tanh 82.5, hardtanh 82.2, sigmoid 81.6; tanh without alpha 81.1. LN's input-output
map in trained models looks like a tanh S-curve, and the learned alpha tracks 1/std of the
activations.

Here, on CPU in NumPy (pynorm.nn), with every norm of the model swapped:

* (a) a tiny ViT (:class:`pynorm.nn.TinyViT`) on scikit-learn's bundled 8x8 digits
  (1797 images, offline): 2x2 patches (16 tokens of 4 pixels; quick mode: 4x4 patches, 4
  tokens of 16 pixels, 4x fewer tokens per step), d = 32, 2 layers, 4 heads, GELU FFN 128,
  learned positions, final norm, mean pooling, linear head;
* (b) P2's majority model (:class:`pynorm.nn.MajorityTransformer`) with both its norms
  (before attention, with affine, and before the FFN) of the given kind.

Choices the paper leaves open (made here, and why):

* Digits: pixels / 16, standardised with the training set's mean and std; 80/20 split
  stratified by class (seeded, :func:`pynorm.nn.stratified_split`); no augmentation.
  AdamW (lr 2e-3, weight decay 0.05, not on norm parameters or biases), batch 64, 10 %
  linear warm-up and cosine decay, float32. Accuracy = final test accuracy.
* Majority: the P2 task with batch 100 sequences (quick) / 1000 (full), Adam lr 1e-3 --
  not P2's batch of 6000, which costs ~1.5 s a step in NumPy here.
* Ablations on the digits ViT only (cheap): ``identity`` (no norm and no affine: the norm
  layer is removed), ``hardtanh`` and ``sigmoid`` (gamma * f(alpha x) + beta, learnable
  alpha0 = 0.5, sigmoid NOT re-centred, as in the paper), ``no_alpha`` (gamma * tanh(x) +
  beta). ``tanh`` is the DyT run itself (pynorm's kernel; :class:`pynorm.nn.Squash` computes
  the same function in NumPy).
* S-curves: the trained LayerNorm ViT (first seed); for every LN in the model, input x vs
  output before the affine, (x - mean) / sqrt(var + eps) per token, over the test set.
  ``tanh_fit_r2`` is the R^2 of a least-squares fit y = a tanh(b x) (scipy curve_fit on up
  to 20,000 points); ``linear_fit_r2`` of y = c x, reported beside it because a tanh with a
  small b is a line: only tanh R^2 clearly above the linear one means an S shape.
* alpha vs 1/std: the DyT ViT (first seed); every ``track_every`` steps each DyT layer's
  alpha and 1/std of its input (all elements of a fixed batch of 256 test images).
  ``alpha_vs_inv_std[layer]`` holds both series, their Pearson correlation over training
  and the final ratio alpha * std.
"""

from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Tuple

import numpy as np

from ._common import Presets, capture_norms, progress_bar, pyplot, save_figure, seconds_per_step, trainer_step
from ._fanout import runner

NAME = "dyt"
PAPER = "Zhu, Chen, He, LeCun & Liu, Transformers without Normalization, CVPR 2025"

ABLATIONS = {"identity": "identity", "hardtanh": "hardtanh", "sigmoid": "sigmoid", "no_alpha": "tanh_no_alpha"}


@dataclass
class Config(Presets):
    """Settings (``full()``: 3 seeds, longer training)."""

    norms: Tuple[str, ...] = ("layernorm", "rmsnorm", "dyt")
    seeds: Tuple[int, ...] = (0, 1, 2)
    alpha0: float = 0.5
    vit_steps: int = 3000
    vit_batch: int = 64
    vit_lr: float = 2e-3
    vit_patch: int = 2
    vit_d: int = 32
    vit_layers: int = 6  # the S-curves are a deep-layer effect (quick and tiny: 2)
    vit_heads: int = 4
    ablations: Tuple[str, ...] = ("identity", "hardtanh", "sigmoid", "no_alpha")
    track_every: int = 50
    majority: bool = True
    majority_steps: int = 3000
    majority_batch: int = 1000
    majority_sequences: int = 100_000
    majority_eval_sequences: int = 5000
    dtype: str = "float32"

    QUICK: ClassVar[Dict[str, Any]] = dict(
        seeds=(0,),
        vit_steps=400,
        vit_patch=4,
        vit_layers=2,
        track_every=20,
        majority_steps=300,
        majority_batch=100,
        majority_sequences=20_000,
        majority_eval_sequences=1000,
    )
    TINY: ClassVar[Dict[str, Any]] = dict(
        norms=("layernorm", "dyt"),
        seeds=(0,),
        vit_steps=150,
        vit_patch=4,
        vit_layers=2,
        ablations=("no_alpha",),
        track_every=50,
        majority=False,
    )


# -- digits ViT ------------------------------------------------------------------------------
def digits_data(seed: int) -> Dict[str, np.ndarray]:
    """scikit-learn's 8x8 digits: standardised images and labels, train/test split."""
    from sklearn.datasets import load_digits

    from pynorm.nn import stratified_split

    digits = load_digits()
    images, labels = digits.images / 16.0, digits.target.astype(np.int64)
    train, test = stratified_split(labels, 0.2, seed=seed)
    mean, std = images[train].mean(), images[train].std()
    images = (images - mean) / std
    return {"x_train": images[train], "y_train": labels[train], "x_test": images[test], "y_test": labels[test]}


def vit_trainer(norm: str, seed: int, cfg: Config, data: Dict[str, np.ndarray]):
    """A TinyViT and ``step()``, which trains it one step on a random training batch and
    returns the loss (a non-finite loss is returned without an update)."""
    from pynorm.nn import AdamW, CrossEntropyLoss, TinyViT
    from pynorm.nn.optim import make_schedule

    model = TinyViT(
        8,
        cfg.vit_patch,
        10,
        cfg.vit_d,
        cfg.vit_layers,
        cfg.vit_heads,
        norm=norm,
        alpha0=cfg.alpha0,
        dtype=cfg.dtype,
        rng=np.random.default_rng([seed, 0]),
    )
    schedule = make_schedule("cosine", cfg.vit_steps, max(1, cfg.vit_steps // 10), 0.0)
    optimizer = AdamW(model, cfg.vit_lr, weight_decay=0.05, schedule=schedule)
    loss_fn = CrossEntropyLoss()
    rng = np.random.default_rng([seed, 1])
    x, y = data["x_train"], data["y_train"]

    def step() -> float:
        index = rng.integers(0, len(x), cfg.vit_batch)
        loss = loss_fn(model(x[index]), y[index])
        if np.isfinite(loss):
            model.zero_grad()
            model.backward(loss_fn.backward())
            optimizer.step()
        return loss

    return model, step


def train_vit(norm: str, seed: int, cfg: Config, data: Dict[str, np.ndarray], bar, track: bool = False):
    """Trains a TinyViT; returns (model, test accuracy, loss curve, alpha track)."""
    from pynorm.nn.norms import DyT

    model, train_step = vit_trainer(norm, seed, cfg, data)
    probe = data["x_test"][:256]
    losses: List[float] = []
    tracked: Dict[str, Dict[str, List[float]]] = {}

    def record(step: int) -> None:
        model.train(False)
        with capture_norms(model, (DyT,)) as log:
            model(probe)
        model.train(True)
        for name, records in log:
            layer = _layer_name(name)
            entry = tracked.setdefault(layer, {"step": [], "alpha": [], "inv_std": []})
            module = dict(model.modules())[name + "."]
            entry["step"].append(step)
            entry["alpha"].append(float(module.params["alpha"][0]))
            entry["inv_std"].append(float(1.0 / records[0][0].std()))

    for step in range(cfg.vit_steps):
        if track and step % cfg.track_every == 0:
            record(step)
        loss = train_step()
        if not np.isfinite(loss):
            losses.append(float("nan"))
            break
        losses.append(loss)
        bar.update(1)
    else:
        if track:
            record(cfg.vit_steps)
    bar.update(cfg.vit_steps - len(losses))
    return model, _vit_accuracy(model, data), losses, tracked


def _layer_name(dotted: str) -> str:
    """'h0.norm1' -> 'block0.norm1', 'norm_f' -> 'final'."""
    if dotted == "norm_f":
        return "final"
    head, _, tail = dotted.partition(".")
    return f"block{head[1:]}.{tail}"


def _vit_accuracy(model, data) -> float:
    model.train(False)
    logits = model(data["x_test"])
    model.train(True)
    if not np.all(np.isfinite(logits)):
        return float("nan")
    return float(np.mean(logits.argmax(-1) == data["y_test"]))


# -- majority -------------------------------------------------------------------------------
def _majority_experiment(norm: str, seed: int, cfg: Config, steps: int):
    """P2's majority model with both norms of kind ``norm``, and its training config."""
    from pynorm.nn import build_experiment

    exp, tcfg = build_experiment(
        "majority",
        cfg.dtype,
        attn_norm=norm,
        ffn_norm=norm,
        seed=seed,
        n_sequences=cfg.majority_sequences,
        steps=steps,
        batch_size=cfg.majority_batch,
        lr=1e-3,
        log_every=0,
        progress=False,
    )
    exp.test = {k: v[: cfg.majority_eval_sequences] for k, v in exp.test.items()}
    return exp, tcfg


def train_majority(norm: str, seed: int, cfg: Config, bar) -> float:
    """Trains the majority model with ``norm``; returns its test accuracy."""
    from pynorm.nn import Trainer

    trainer = Trainer(*_majority_experiment(norm, seed, cfg, cfg.majority_steps))
    for step in range(cfg.majority_steps):
        trainer.train_step(trainer.batch(step))
        bar.update(1)
    return float(trainer.evaluate()["test_accuracy"])


# -- S-curves -------------------------------------------------------------------------------
def s_curves(model, data) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Per LayerNorm of ``model``: (input, output before affine), flattened, on the test set."""
    from pynorm.nn.norms import LayerNorm

    model.train(False)
    with capture_norms(model, (LayerNorm,)) as log:
        model(data["x_test"])
    model.train(True)
    curves = {}
    modules = dict(model.modules())
    for name, records in log:
        x = records[0][0].astype(np.float64)
        eps = modules[name + "."].eps
        centred = x - x.mean(-1, keepdims=True)
        y = centred / np.sqrt((centred * centred).mean(-1, keepdims=True) + eps)
        curves[_layer_name(name)] = (x.reshape(-1), y.reshape(-1))
    return curves


def fit_r2(x: np.ndarray, y: np.ndarray, seed: int = 0) -> Dict[str, float]:
    """R^2 of y = a tanh(b x) and of y = c x (least squares, on <= 20,000 points)."""
    from scipy.optimize import curve_fit

    rng = np.random.default_rng(seed)
    if len(x) > 20_000:
        pick = rng.choice(len(x), 20_000, replace=False)
        x, y = x[pick], y[pick]
    total = float(np.sum((y - y.mean()) ** 2))
    c = float(x @ y / (x @ x))
    linear = 1 - float(np.sum((y - c * x) ** 2)) / total
    best = -math.inf
    scale = 1.0 / (np.std(x) + 1e-12)
    for b0 in (0.3 * scale, scale, 3 * scale):  # a few starts: curve_fit is local
        try:
            (a, b), _ = curve_fit(
                lambda t, a, b: a * np.tanh(b * t), x, y, p0=(max(2.0, np.abs(y).max()), b0 / 2), maxfev=5000
            )
        except RuntimeError:
            continue
        best = max(best, 1 - float(np.sum((y - a * np.tanh(b * x)) ** 2)) / total)
    return {"tanh": best, "linear": linear}


# -- the experiment -------------------------------------------------------------------------
VIT, ABLATION, MAJORITY = "vit", "ablation", "majority"  # the kinds of unit


def units(cfg: Config):
    """One unit per (task, norm, seed): every norm and seed on the digits ViT and (with
    ``cfg.majority``) on the majority task; every ablation on the ViT with the first seed."""
    vit = [(VIT, norm, seed) for norm in cfg.norms for seed in cfg.seeds]
    ablations = [(ABLATION, name, cfg.seeds[0]) for name in cfg.ablations]
    majority = [(MAJORITY, norm, seed) for norm in cfg.norms for seed in cfg.seeds] if cfg.majority else []
    return vit + ablations + majority


def run_unit(cfg: Config, unit, out_dir: pathlib.Path, progress: bool) -> Dict[str, Any]:
    """Trains one model: its test accuracy and (ViT) loss curve. The first seed's LayerNorm ViT
    also gives its LN S-curves (fits and a plotting sample), its DyT ViT the alpha track."""
    task, name, seed = unit
    if task == MAJORITY:
        with progress_bar(progress, cfg.majority_steps, f"{NAME}: majority {name} seed {seed}") as bar:
            return {"accuracy": train_majority(name, seed, cfg, bar)}
    first = seed == cfg.seeds[0]
    norm = ABLATIONS[name] if task == ABLATION else name
    data = digits_data(seed)
    with progress_bar(progress, cfg.vit_steps, f"{NAME}: {task} {name} seed {seed}") as bar:
        model, accuracy, losses, tracked = train_vit(
            norm, seed, cfg, data, bar, track=task == VIT and first and norm == "dyt"
        )
    result = {"accuracy": accuracy, "losses": losses, "tracked": tracked}
    if task == VIT and first and norm == "layernorm":
        result["s_curves"] = _s_curve_summary(model, data)
    return result


def _s_curve_summary(model, data) -> Dict[str, Dict[str, Any]]:
    """Per LN layer: the tanh and linear fits' R^2 and up to 6,000 (input, output) points to plot."""
    rng = np.random.default_rng(0)
    summary = {}
    for layer, (x, y) in s_curves(model, data).items():
        pick = rng.choice(len(x), min(len(x), 6000), replace=False)
        summary[layer] = {"fit": fit_r2(x, y), "x": x[pick], "y": y[pick]}
    return summary


def unit_seconds(cfg: Config, units) -> Dict[Any, float]:
    """Estimated seconds of each unit: its steps times a few timed steps of its model (the ViT
    timed with DyT, the majority model with LayerNorm)."""
    vit = seconds_per_step(vit_trainer("dyt", 0, cfg, digits_data(cfg.seeds[0]))[1])
    costs = {VIT: vit * cfg.vit_steps, ABLATION: vit * cfg.vit_steps}
    if cfg.majority:
        costs[MAJORITY] = seconds_per_step(trainer_step(*_majority_experiment("layernorm", 0, cfg, 10)))
        costs[MAJORITY] *= cfg.majority_steps
    return {unit: costs[unit[0]] for unit in units}


run = runner(__name__)


def combine(cfg: Config, results: Dict[Any, Dict[str, Any]], out_dir: pathlib.Path) -> Dict[str, Any]:
    """Accuracies (means over seeds, per seed), ablations, S-curve fits and the alpha track of
    the first seed, figures and comparisons."""
    first_seed = cfg.seeds[0]
    runs: Dict[str, Dict[str, List[float]]] = {
        "digits_vit": {norm: [results[(VIT, norm, seed)]["accuracy"] for seed in cfg.seeds] for norm in cfg.norms},
        "majority": {norm: [results[(MAJORITY, norm, seed)]["accuracy"] for seed in cfg.seeds] for norm in cfg.norms}
        if cfg.majority
        else {},
    }
    loss_curves = {norm: results[(VIT, norm, first_seed)]["losses"] for norm in cfg.norms}
    ablation_acc = {name: results[(ABLATION, name, first_seed)]["accuracy"] for name in cfg.ablations}
    loss_curves.update({f"ablation: {name}": results[(ABLATION, name, first_seed)]["losses"] for name in cfg.ablations})
    if "dyt" in cfg.norms:
        ablation_acc["tanh"] = runs["digits_vit"]["dyt"][0]
    acc = {
        task: {
            norm: float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
            for norm, values in by_norm.items()
        }
        for task, by_norm in runs.items()
    }

    metrics: Dict[str, Any] = {"acc": acc, "acc_runs": runs, "ablation_acc": ablation_acc, "seeds": list(cfg.seeds)}
    figures = [_plot_accuracy(cfg, acc, runs, ablation_acc, out_dir), _plot_losses(loss_curves, out_dir)]
    if "layernorm" in cfg.norms:
        curves = results[(VIT, "layernorm", first_seed)]["s_curves"]
        metrics["tanh_fit_r2"] = {layer: c["fit"]["tanh"] for layer, c in curves.items()}
        metrics["linear_fit_r2"] = {layer: c["fit"]["linear"] for layer, c in curves.items()}
        figures.append(_plot_s_curves(curves, out_dir))
    tracked = results[(VIT, "dyt", first_seed)]["tracked"] if "dyt" in cfg.norms else {}
    if tracked:
        summary = {}
        for layer, t in tracked.items():
            alpha, inv_std = np.array(t["alpha"]), np.array(t["inv_std"])
            corr = float(np.corrcoef(alpha, inv_std)[0, 1]) if np.std(alpha) > 0 and np.std(inv_std) > 0 else None
            summary[layer] = {
                "step": t["step"],
                "alpha": t["alpha"],
                "inv_std": t["inv_std"],
                "pearson": corr,
                "final_alpha_times_std": float(alpha[-1] / inv_std[-1]),
            }
        metrics["alpha_vs_inv_std"] = summary
        figures.append(_plot_alpha(tracked, out_dir))
    metrics["vit_patch"] = cfg.vit_patch
    return {"metrics": metrics, "comparisons": _comparisons(cfg, metrics), "figures": figures}


def _comparisons(cfg: Config, metrics: Dict[str, Any]) -> List[Dict[str, Any]]:
    out = []
    runs = metrics["acc_runs"]
    for task, label in (("digits_vit", "tiny ViT on 8x8 digits"), ("majority", "majority task")):
        acc = metrics["acc"][task]
        if not {"layernorm", "dyt"} <= set(acc):
            continue
        spread = max(np.ptp(v) if len(v) > 1 else 0.0 for v in runs[task].values())
        tol = max(0.02, 2 * spread)
        gap = acc["dyt"] - acc["layernorm"]
        ours = ", ".join(f"{n} {acc[n]:.3f}" for n in acc)
        verdict = "reproduced" if gap >= -tol else ("partial" if gap >= -3 * tol else "not reproduced")
        out.append(
            {
                "name": f"DyT matches LN: {label}",
                "ours": ours,
                "paper": "ViT-B 82.3 (LN) vs 82.5 (DyT); LLaMA 7B loss 1.59 vs 1.60",
                "verdict": verdict,
                "note": f"{len(cfg.seeds)} seed(s); 'matches' = DyT no worse than LN by more "
                f"than {tol:.3f} (2x the seed spread, at least 0.02)",
            }
        )
    if metrics["ablation_acc"]:
        ab = metrics["ablation_acc"]
        ours = ", ".join(f"{k} {v:.3f}" for k, v in ab.items())
        order_ok = all(k in ab for k in ("tanh", "no_alpha")) and ab["tanh"] >= ab["no_alpha"]
        out.append(
            {
                "name": "ablations (digits ViT)",
                "ours": ours,
                "paper": "identity diverges; tanh 82.5, hardtanh 82.2, sigmoid 81.6, without alpha 81.1",
                "verdict": "partial" if order_ok else "not reproduced",
                "note": "one seed; at this scale nothing diverges without a norm, so only the ordering "
                "tanh >= no_alpha is checked",
            }
        )
    if "tanh_fit_r2" in metrics:
        t, lin = metrics["tanh_fit_r2"], metrics["linear_fit_r2"]
        s_shaped = [k for k in t if t[k] - lin[k] > 0.02]
        out.append(
            {
                "name": "LN input-output: tanh-like S-curves in deeper layers",
                "ours": ", ".join(f"{k}: tanh R2 {t[k]:.3f} / linear {lin[k]:.3f}" for k in t),
                "paper": "early layers ~linear, deeper layers S-shaped (ViT, wav2vec, DiT)",
                "verdict": "partial" if s_shaped else "not reproduced",
                "note": f"layers where tanh beats a line by > 0.02 R2: {s_shaped or 'none'}",
            }
        )
    if "alpha_vs_inv_std" in metrics:
        corr = {k: v["pearson"] for k, v in metrics["alpha_vs_inv_std"].items()}
        ratio = {k: v["final_alpha_times_std"] for k, v in metrics["alpha_vs_inv_std"].items()}
        good = [c for c in corr.values() if c is not None and c > 0.5]
        out.append(
            {
                "name": "learned alpha tracks 1/std of its input",
                "ours": ", ".join(f"{k}: r={_fmt(corr[k])}, alpha*std={ratio[k]:.2f}" for k in corr),
                "paper": "alpha follows 1/std during and after training",
                "verdict": "reproduced" if len(good) == len(corr) else ("partial" if good else "not reproduced"),
                "note": "Pearson correlation of alpha and 1/std over training, per DyT layer",
            }
        )
    return out


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _plot_accuracy(cfg, acc, runs, ablation_acc, out_dir: pathlib.Path) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, task, title in ((axes[0], "digits_vit", "tiny ViT, 8x8 digits"), (axes[1], "majority", "majority task")):
        names = list(runs[task])
        for i, name in enumerate(names):
            ax.bar(i, acc[task][name], color=f"C{i}", alpha=0.7)
            ax.plot([i] * len(runs[task][name]), runs[task][name], "k.", ms=6)
        ax.set_xticks(range(len(names)), names)
        ax.set_ylim(0, 1)
        ax.set_title(f"{title} (test accuracy, dots = seeds)")
        ax.grid(axis="y", alpha=0.3)
    names = list(ablation_acc)
    axes[2].bar(range(len(names)), [ablation_acc[n] for n in names], color="C4", alpha=0.7)
    axes[2].set_xticks(range(len(names)), names)
    axes[2].set_ylim(0, 1)
    axes[2].set_title("ablations on the digits ViT")
    axes[2].grid(axis="y", alpha=0.3)
    return save_figure(fig, out_dir, "dyt_accuracy.png")


def _plot_losses(curves: Dict[str, List[float]], out_dir: pathlib.Path) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (label, losses) in enumerate(curves.items()):
        losses = np.asarray(losses, dtype=float)
        k = max(1, len(losses) // 40)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(
            np.arange(len(smooth)) + k,
            smooth,
            color=f"C{i % 10}",
            ls="-" if "ablation" not in label else "--",
            label=label,
        )
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("Digits ViT training loss (first seed)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, out_dir, "dyt_vit_losses.png")


def _panel_per_layer(by_layer: Dict[str, Any]):
    """A figure with one panel per layer (key) of ``by_layer``, in a row: (fig, axes), axes an
    array also for a single layer."""
    fig, axes = pyplot().subplots(1, len(by_layer), figsize=(3.2 * len(by_layer), 3.4))
    return fig, np.atleast_1d(axes)


def _plot_s_curves(curves, out_dir: pathlib.Path) -> str:
    fig, axes = _panel_per_layer(curves)
    for ax, (layer, c) in zip(axes, curves.items()):
        ax.scatter(c["x"], c["y"], s=1, alpha=0.3, color="C0")
        ax.set_title(f"{layer}\ntanh R2 {c['fit']['tanh']:.3f}, line {c['fit']['linear']:.3f}", fontsize=9)
        ax.set_xlabel("LN input")
    axes[0].set_ylabel("LN output (before affine)")
    fig.suptitle("LayerNorm input vs output in the trained digits ViT", y=1.08)
    return save_figure(fig, out_dir, "dyt_ln_s_curves.png")


def _plot_alpha(tracked, out_dir: pathlib.Path) -> str:
    fig, axes = _panel_per_layer(tracked)
    for ax, (layer, t) in zip(axes, tracked.items()):
        ax.plot(t["step"], t["alpha"], color="C0", label="alpha")
        ax.plot(t["step"], t["inv_std"], color="C3", label="1/std(input)")
        ax.set_title(layer, fontsize=9)
        ax.set_xlabel("step")
    axes[0].legend()
    fig.suptitle("DyT: learned alpha vs 1/std of its input over training (digits ViT)", y=1.04)
    return save_figure(fig, out_dir, "dyt_alpha_vs_inv_std.png")
