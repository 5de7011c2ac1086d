"""P2's majority task: does LayerNorm's projection help attention count?

Brody, Alon & Yahav train a one-layer pre-norm encoder (d_model 8, 1 head, no positional
encoding) to output, at every position, the most frequent of 20 tokens in a length-50
sequence. The only change between variants is the norm before attention:

* ``"projection"`` -- LN without affine (projection onto 1^perp, then scaling);
* ``"scaling"``    -- scaling only, x / RMS(x) (no projection);
* ``"none"``       -- identity;
* ``"scaling_code"`` -- scaling as P2's code does it, x / ||x|| / sqrt(d) (norm 1/sqrt(d),
  i.e. 1/d of LN's scale): the paper's "without projection" as run.

With the projection, a query parallel to the all-ones vector scores every key equally, so
attention can average (count) the tokens; the paper finds the projection variant learns
faster (test accuracy ~0.74 / 0.86 / 0.93 at 1k / 2k / 5k steps vs ~0.52 / 0.70 / 0.85
without) and that the learned query direction turns toward 1 (~70 -> ~11 degrees).

Choices the paper leaves open (made here, and why):

* Data: :func:`pynorm.nn.majority_data` (partitions of 50 into <= 20 parts, largest part
  ahead of the second by >= 6, 10 sequences per partition, ``n_sequences`` of them drawn
  at random), an 80/20 split stratified by label; the data seed is the run's seed.
* Model/optimiser: :class:`pynorm.nn.MajorityTransformer` (tied embedding, no Q/K/V bias,
  ReLU FFN of width 8, LN with affine before the FFN), Adam lr 1e-3, in float32.
  "scaling" scales to norm sqrt(d) (x / RMS), LN's own scale, so that projection is the
  only difference; "scaling_code" is P2's code's 1/sqrt(d). The scale is not a constant
  the weights absorb at equal speed: with norm 1/sqrt(d) the attention's input, hence its
  scores and values, start 8x smaller relative to the residual stream, and Adam needs many
  steps to grow W_Q, W_K, W_V by that factor. Both are run so the effect of the projection
  and of the scale can be told apart.
* No early stopping at test accuracy 1.0 (the accuracies at the fixed steps are what is
  compared; a run that reached 1.0 would stay there).
* "Accuracy at k steps" is the per-token test accuracy after k optimiser steps.
  ``steps_to_train_loss_0.2`` is the first step whose training-batch loss is <= 0.2
  (None when never reached; the mean is over the seeds that reached it, and the count is
  reported).
* Query angle: for every token x of a fixed set of 256 test sequences, the query direction
  u = W_K^T W_Q n(x) / sqrt(d) (n = the attention-side norm) and the ACUTE angle between
  u and the all-ones vector, arccos(|u . 1| / (||u|| sqrt(d))), averaged over tokens (a
  query along -1 counts as aligned, as in the paper's "+-1"; a random direction in 8-d
  gives ~70 degrees). Measured at every evaluation.
* 3-d view: d_model = 3 (FFN 3), vocabulary 10, length 30, 6000 sequences (600
  partitions), projection variant; keys plotted are the LN outputs of the 10 token
  embeddings (with no positional encoding a token's key depends only on its id), queries
  are the directions u above.
* Quick mode: a smaller batch (the paper's is 6000 sequences = 300,000 tokens per step,
  ~1.5 s per step in NumPy on 2 shared cores), fewer sequences, steps and seeds; metric
  names then carry the steps actually used (``acc_at_<k>``), and the comparison with the
  paper's 1k/2k/5k numbers is marked as such. Batch size matters less for Adam than for
  SGD (its step size is set by lr), but quick numbers are not the paper's setting.
"""

from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple

import numpy as np

from ._common import Presets, mean_or_none, progress_bar, pyplot, save_figure, seconds_per_step, trainer_step
from ._fanout import runner

NAME = "majority"
PAPER = "Brody, Alon & Yahav, On the Expressivity Role of LayerNorm in Transformers' Attention, Findings ACL 2023"

#: variant -> MajorityTransformer attn_norm
VARIANTS = {
    "projection": "with_projection",
    "scaling": "without_projection",
    "none": "none",
    "scaling_code": "without_projection",
}
#: the paper's means over 10 seeds at 1k / 2k / 5k steps
PAPER_ACC = {"projection": {1000: 0.74, 2000: 0.86, 5000: 0.93}, "scaling": {1000: 0.52, 2000: 0.70, 5000: 0.85}}
LOSS_TARGET = 0.2


@dataclass
class Config(Presets):
    """Settings of the majority experiment (``full()`` = the paper's)."""

    variants: Tuple[str, ...] = ("projection", "scaling", "scaling_code", "none")
    seeds: Tuple[int, ...] = (11, 123, 42, 9, 456, 4, 5, 6, 7, 8)
    steps: int = 5000
    report_steps: Tuple[int, ...] = (1000, 2000, 5000)
    eval_every: int = 100
    batch_size: int = 6000
    lr: float = 1e-3
    n_sequences: int = 100_000
    eval_sequences: Optional[int] = None  # None: the whole test split
    angle_sequences: int = 256
    dtype: str = "float32"
    view3d: bool = True
    view3d_steps: int = 3000
    view3d_batch: int = 1000
    view3d_seed: int = 0
    view3d_lr: float = 3e-3

    QUICK: ClassVar[Dict[str, Any]] = dict(
        seeds=(11, 123),
        steps=1000,
        report_steps=(250, 500, 1000),
        eval_every=125,
        batch_size=100,
        n_sequences=20_000,
        eval_sequences=1000,
        angle_sequences=128,
        view3d_steps=600,
        view3d_batch=200,
        view3d_lr=1e-2,
    )
    TINY: ClassVar[Dict[str, Any]] = dict(
        variants=("projection", "scaling_code"),
        seeds=(1,),
        steps=20,
        report_steps=(10, 20),
        eval_every=10,
        batch_size=20,
        n_sequences=1000,
        eval_sequences=100,
        angle_sequences=16,
        view3d_steps=100,
        view3d_batch=50,
    )


def _experiment(cfg: Config, variant: str, seed: int, steps: int):
    """The majority experiment and training config of one (variant, seed)."""
    from pynorm.nn import build_experiment

    exp, tcfg = build_experiment(
        "majority",
        cfg.dtype,
        attn_norm=VARIANTS[variant],
        seed=seed,
        n_sequences=cfg.n_sequences,
        steps=steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        log_every=1,
        eval_every=0,
        progress=False,
    )
    if cfg.eval_sequences is not None:
        exp.test = {k: v[: cfg.eval_sequences] for k, v in exp.test.items()}
    if variant == "scaling_code":  # P2's code: x / ||x|| / sqrt(d), i.e. x / RMS(x) / d
        block = exp.model.block
        block.add_child("norm1", _Scaled(block.norm1, 1.0 / block.norm1.dim))
    return exp, tcfg


def _train_one(cfg: Config, variant: str, seed: int, bar) -> Dict[str, Any]:
    """Trains one (variant, seed); returns its curves."""
    from pynorm.nn import Trainer

    exp, tcfg = _experiment(cfg, variant, seed, cfg.steps)
    trainer = Trainer(exp, tcfg)
    angle_tokens = exp.test["tokens"][: cfg.angle_sequences]
    curve = {
        "step": [0],
        "test_acc": [trainer.evaluate()["test_accuracy"]],
        "angle_deg": [query_angle_deg(exp.model, angle_tokens)],
    }
    losses: List[float] = []
    checkpoints = sorted(set(range(cfg.eval_every, cfg.steps + 1, cfg.eval_every)) | set(cfg.report_steps))
    for stop in checkpoints:
        start = trainer.step
        while trainer.step < stop:
            losses.append(trainer.train_step(trainer.batch(trainer.step))["loss"])
        curve["step"].append(stop)
        curve["test_acc"].append(trainer.evaluate()["test_accuracy"])
        curve["angle_deg"].append(query_angle_deg(exp.model, angle_tokens))
        bar.update(stop - start)
        bar.set_postfix(variant=variant, seed=seed, acc=f"{curve['test_acc'][-1]:.3f}")
    reached = [i + 1 for i, loss in enumerate(losses) if loss <= LOSS_TARGET]
    curve["train_loss"] = losses
    curve["steps_to_loss"] = reached[0] if reached else None
    return curve


def _scaled_class():
    from pynorm.nn import Module

    class Scaled(Module):
        """``factor * inner(x)`` (P2's code's scaling-only norm: norm 1/sqrt(d))."""

        def __init__(self, inner, factor: float):
            super().__init__(inner.dtype)
            self.add_child("inner", inner)
            self.factor, self.dim = float(factor), inner.dim

        def forward(self, x):
            return self.inner(x) * self.factor

        def backward(self, dy):
            return self.inner.backward(dy * self.factor)

    return Scaled


def _Scaled(inner, factor: float):
    return _scaled_class()(inner, factor)


def query_angle_deg(model, tokens: np.ndarray) -> float:
    """Mean acute angle (degrees) between W_K^T W_Q n(x) / sqrt(d) and the all-ones vector
    over all tokens x of ``tokens`` (n = the norm before attention)."""
    model.train(False)
    try:
        x = model.block.norm1(model.embed(tokens)).reshape(-1, model.embed.dim)
    finally:
        model.train(True)
    attention = model.block.mixer
    wq, wk = attention.q_proj.params["weight"], attention.k_proj.params["weight"]
    u = (x @ wq.T) @ wk / math.sqrt(x.shape[1])
    cos = np.abs(u.sum(1)) / (np.linalg.norm(u, axis=1) * math.sqrt(x.shape[1]) + 1e-30)
    return float(np.degrees(np.arccos(np.clip(cos, 0, 1))).mean())


def _view3d_experiment(cfg: Config):
    """The d = 3 majority experiment with LN (projection variant) and its training config."""
    from pynorm.nn import build_experiment

    return build_experiment(
        "majority",
        cfg.dtype,
        attn_norm="with_projection",
        vocab=10,
        length=30,
        d_model=3,
        ffn=3,
        n_sequences=6000,
        seed=cfg.view3d_seed,
        steps=cfg.view3d_steps,
        batch_size=cfg.view3d_batch,
        lr=cfg.view3d_lr,
        log_every=0,
        progress=False,
    )


def _view3d(cfg: Config, bar) -> Dict[str, Any]:
    """Trains the d = 3 model with LN (projection variant); returns its test accuracy, query
    angle, keys (the LN outputs of the 10 token embeddings) and query directions."""
    from pynorm.nn import Trainer

    exp, tcfg = _view3d_experiment(cfg)
    trainer = Trainer(exp, tcfg)
    for step in range(cfg.view3d_steps):
        trainer.train_step(trainer.batch(step))
        if step % 100 == 99:
            bar.update(100)
    acc = trainer.evaluate()["test_accuracy"]
    model = exp.model
    ids = np.arange(10)[None, :]
    model.train(False)
    keys = model.block.norm1(model.embed(ids))[0]
    model.train(True)
    attention = model.block.mixer
    u = (keys @ attention.q_proj.params["weight"].T) @ attention.k_proj.params["weight"] / math.sqrt(3)
    return {
        "test_acc": acc,
        "query_angle_deg": query_angle_deg(model, exp.test["tokens"][:256]),
        "keys": keys,
        "queries": u,
    }


def _plot_view3d(view: Dict[str, Any], out_dir: pathlib.Path) -> str:
    """Keys on the circle of LN's sphere in 1^perp, query directions, the +-1 axis."""
    keys, u = view["keys"], view["queries"]
    plt = pyplot()
    fig = plt.figure(figsize=(6, 6))
    ax = fig.add_subplot(projection="3d")
    ax.scatter(*keys.T, color="C0", s=40, label="keys: LN(token embedding)")
    t = np.linspace(0, 2 * np.pi, 200)
    basis = np.linalg.svd(np.eye(3) - 1 / 3)[0][:, :2]  # orthonormal basis of 1^perp
    circle = math.sqrt(3) * (np.cos(t)[:, None] * basis[:, 0] + np.sin(t)[:, None] * basis[:, 1])
    ax.plot(*circle.T, color="C0", lw=0.8, alpha=0.5, label="sphere of radius sqrt(3) in 1^perp")
    scale = 2.0 / (np.linalg.norm(u, axis=1, keepdims=True) + 1e-30)
    for i, v in enumerate(u * scale):
        ax.plot([0, v[0]], [0, v[1]], [0, v[2]], color="C3", lw=1.5, label="query directions" if i == 0 else None)
    ones = np.ones(3) / math.sqrt(3) * 2.5
    ax.plot(*np.stack([-ones, ones]).T, "k--", lw=1, label="+-1 direction")
    ax.set_title(
        f"d=3 majority model with LN: test acc {view['test_acc']:.2f}, "
        f"query angle to 1: {view['query_angle_deg']:.1f} deg"
    )
    ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, out_dir, "majority_3d_view.png")


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


VIEW3D = "view3d"  # the unit name of the d = 3 model


def units(cfg: Config):
    """One unit per (variant, seed), and ("view3d", its seed) for the 3-d view."""
    for variant in cfg.variants:
        if variant not in VARIANTS:
            raise ValueError(f"majority: unknown variant {variant!r}; choose from {sorted(VARIANTS)}")
    return [(variant, seed) for variant in cfg.variants for seed in cfg.seeds] + (
        [(VIEW3D, cfg.view3d_seed)] if cfg.view3d else []
    )


def run_unit(cfg: Config, unit, out_dir: pathlib.Path, progress: bool) -> Dict[str, Any]:
    """Trains one (variant, seed) (its curves) or the 3-d view's model."""
    variant, seed = unit
    if variant == VIEW3D:
        with progress_bar(progress, cfg.view3d_steps // 100 * 100, f"{NAME} 3-d view") as bar:
            return _view3d(cfg, bar)
    with progress_bar(progress, cfg.steps, f"{NAME} {variant} seed {seed}") as bar:
        return _train_one(cfg, variant, seed, bar)


def unit_seconds(cfg: Config, units) -> Dict[Any, float]:
    """Estimated seconds of each unit: its steps times a few timed steps of its model (the
    variants differ only in one norm, so one variant is timed for all)."""
    per_step = seconds_per_step(trainer_step(*_experiment(cfg, cfg.variants[0], 0, cfg.steps)))
    view = seconds_per_step(trainer_step(*_view3d_experiment(cfg)))
    return {unit: view * cfg.view3d_steps if unit[0] == VIEW3D else per_step * cfg.steps for unit in units}


run = runner(__name__)


def combine(cfg: Config, results: Dict[Any, Dict[str, Any]], out_dir: pathlib.Path) -> Dict[str, Any]:
    """Accuracy and query-angle curves per variant (means over seeds), figures, comparisons."""
    report_steps = tuple(s for s in cfg.report_steps if s <= cfg.steps)
    curves = {variant: [results[(variant, seed)] for seed in cfg.seeds] for variant in cfg.variants}
    view = results.get((VIEW3D, cfg.view3d_seed)) if cfg.view3d else None

    metrics: Dict[str, Any] = {
        "steps": cfg.steps,
        "seeds": list(cfg.seeds),
        "batch_size": cfg.batch_size,
        "report_steps": list(report_steps),
    }
    for variant, runs in curves.items():
        steps = runs[0]["step"]
        acc = np.array([r["test_acc"] for r in runs])
        angle = np.array([r["angle_deg"] for r in runs])
        entry: Dict[str, Any] = {}
        for k in report_steps:
            entry[f"acc_at_{_step_name(k)}"] = float(acc[:, steps.index(k)].mean())
        reached = [r["steps_to_loss"] for r in runs]
        entry[f"steps_to_train_loss_{LOSS_TARGET}"] = mean_or_none(reached)
        entry["runs_reaching_train_loss_0.2"] = sum(r is not None for r in reached)
        entry["acc_at_start"] = float(acc[:, 0].mean())
        entry["acc_final"] = float(acc[:, -1].mean())
        entry["query_angle_deg"] = {
            "start": float(angle[:, 0].mean()),
            "end": float(angle[:, -1].mean()),
            "curve": {int(s): float(a) for s, a in zip(steps, angle.mean(0))},
        }
        entry["acc_curve"] = {int(s): float(a) for s, a in zip(steps, acc.mean(0))}
        metrics[variant] = entry
    figures = [_plot_accuracy(curves, report_steps, out_dir), _plot_angle(curves, out_dir)]
    if view is not None:
        metrics["view3d"] = {"test_acc": view["test_acc"], "query_angle_deg": view["query_angle_deg"]}
        figures.append(_plot_view3d(view, out_dir))
    return {"metrics": metrics, "comparisons": _comparisons(cfg, metrics, report_steps), "figures": figures}


def _step_name(k: int) -> str:
    return f"{k // 1000}k" if k % 1000 == 0 else str(k)


def _comparisons(cfg: Config, metrics: Dict[str, Any], report_steps: Tuple[int, ...]) -> List[Dict[str, Any]]:
    comparisons = []
    paper_steps = report_steps == (1000, 2000, 5000)
    have = "projection" in metrics and "scaling" in metrics
    if have:
        proj, scal = metrics["projection"], metrics["scaling"]
        for other, label, extra in (
            (
                "scaling",
                "same scale (x / RMS, norm sqrt(d))",
                "our 'scaling' has LN's scale, so only the projection differs",
            ),
            (
                "scaling_code",
                "P2's code (x / ||x|| / sqrt(d))",
                "P2's code scales to norm 1/sqrt(d): the projection AND a 1/d smaller scale differ",
            ),
        ):
            if other not in metrics:
                continue
            oth = metrics[other]
            ours = ", ".join(
                f"{_step_name(k)}: {proj[f'acc_at_{_step_name(k)}']:.2f} vs {oth[f'acc_at_{_step_name(k)}']:.2f}"
                for k in report_steps
            )
            ahead = [proj[f"acc_at_{_step_name(k)}"] - oth[f"acc_at_{_step_name(k)}"] for k in report_steps]
            clearly = max(ahead) > 0.03 and min(ahead) > -0.01
            if paper_steps:
                close = all(
                    abs(proj[f"acc_at_{_step_name(k)}"] - PAPER_ACC["projection"][k]) <= 0.08
                    and abs(oth[f"acc_at_{_step_name(k)}"] - PAPER_ACC["scaling"][k]) <= 0.08
                    for k in report_steps
                )
                verdict = "reproduced" if close and clearly else ("partial" if clearly else "not reproduced")
                note = f"{extra}; same steps as the paper; 'reproduced' = every number within 0.08, projection ahead"
            else:
                verdict = "partial" if clearly else "not reproduced"
                note = (
                    f"{extra}; quick run: steps {list(report_steps)} at batch {cfg.batch_size}, "
                    f"{len(cfg.seeds)} seed(s) -- only the ordering (projection ahead by > 0.03) is checked"
                )
            comparisons.append(
                {
                    "name": f"test accuracy with vs without projection, {label}",
                    "ours": ours,
                    "paper": "1k: 0.74 vs 0.52, 2k: 0.86 vs 0.70, 5k: 0.93 vs 0.85",
                    "verdict": verdict,
                    "note": note,
                }
            )
        for other in ("scaling", "scaling_code"):
            if other not in metrics:
                continue
            a, b = proj[f"steps_to_train_loss_{LOSS_TARGET}"], metrics[other][f"steps_to_train_loss_{LOSS_TARGET}"]
            if a is not None and b is not None:
                ratio = b / a
                ours = f"{a:.0f} vs {b:.0f} steps (x{ratio:.1f})"
                verdict = "reproduced" if ratio >= 2 else ("partial" if ratio > 1.2 else "not reproduced")
                note = "means over the seeds that reached it"
            else:
                ours = f"{_fmt(a, 0)} vs {_fmt(b, 0)} steps"
                verdict = "partial" if a is not None else "n/a"
                note = "not every variant reached training loss 0.2 in the steps run"
            comparisons.append(
                {
                    "name": f"steps to training loss 0.2, projection vs {other}",
                    "ours": ours,
                    "paper": "without projection needs ~3x more steps",
                    "verdict": verdict,
                    "note": note,
                }
            )
        pa, sa = proj["query_angle_deg"], scal["query_angle_deg"]
        ours = "; ".join(
            f"{v} {metrics[v]['query_angle_deg']['start']:.0f} -> {metrics[v]['query_angle_deg']['end']:.0f} deg"
            for v in cfg.variants
            if v in metrics
        )
        if pa["end"] < 25 and sa["end"] > 50:
            verdict = "reproduced"
        elif pa["end"] < pa["start"] - 10 and pa["end"] < sa["end"]:
            verdict = "partial"
        else:
            verdict = "not reproduced"
        comparisons.append(
            {
                "name": "query angle to the all-ones vector",
                "ours": ours,
                "paper": "with projection ~70 -> ~11 deg; without stays ~70-83 deg",
                "verdict": verdict,
                "note": "mean acute angle over test tokens" + ("" if paper_steps else "; quick run, fewer steps"),
            }
        )
    if "view3d" in metrics:
        v = metrics["view3d"]
        comparisons.append(
            {
                "name": "3-d view (d=3): queries align with +-1",
                "ours": f"query angle {v['query_angle_deg']:.0f} deg, test acc {v['test_acc']:.2f}",
                "paper": "keys on a circle, queries aligned with +-1 (figure)",
                "verdict": "reproduced"
                if v["query_angle_deg"] < 20
                else ("partial" if v["query_angle_deg"] < 45 else "not reproduced"),
                "note": "keys lie on the circle by construction of LN; the queries' alignment is learned",
            }
        )
    return comparisons


def _plot_over_seeds(curves, key: str, label: Callable[[str, List], str]):
    """A figure of the curve ``key`` against the optimizer step, one line per variant: the mean
    over its seeds' runs, in a min/max band when there are several (``label(variant, runs)``
    names the line). Returns (fig, ax)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (variant, runs) in enumerate(curves.items()):
        steps = np.array(runs[0]["step"])
        values = np.array([r[key] for r in runs])
        ax.plot(steps, values.mean(0), color=f"C{i}", label=label(variant, runs))
        if len(runs) > 1:
            ax.fill_between(steps, values.min(0), values.max(0), color=f"C{i}", alpha=0.2)
    ax.set_xlabel("optimizer step")
    return fig, ax


def _plot_accuracy(curves, report_steps, out_dir: pathlib.Path) -> str:
    fig, ax = _plot_over_seeds(curves, "test_acc", lambda variant, runs: f"{variant} ({len(runs)} seeds)")
    for variant, marker in (("projection", "o"), ("scaling", "s")):
        if variant in curves and max(report_steps, default=0) >= 1000:
            ax.plot(
                list(PAPER_ACC[variant]),
                list(PAPER_ACC[variant].values()),
                marker,
                color="k",
                mfc="none",
                label=f"paper, {variant}",
            )
    ax.set_ylabel("test accuracy (per token)")
    ax.set_title("Majority task: norm before attention (band = min/max over seeds)")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, out_dir, "majority_accuracy.png")


def _plot_angle(curves, out_dir: pathlib.Path) -> str:
    fig, ax = _plot_over_seeds(curves, "angle_deg", lambda variant, runs: variant)
    ax.axhline(11, color="k", ls=":", lw=1, label="paper, with projection (end)")
    ax.set_ylabel("angle(W_K^T W_Q x, 1) [deg]")
    ax.set_ylim(0, 90)
    ax.set_title("Query direction vs the all-ones vector")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, out_dir, "majority_query_angle.png")
