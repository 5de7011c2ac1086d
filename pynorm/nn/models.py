"""The two models the trainer builds, their data, and the registry of experiments.

* ``"power-method"`` -- P1 (Wu, Zhang, Cao): the looped linear transformer with LN,
  :class:`LoopedTransformer`, trained on :func:`pynorm.nn.data.power_method_data` with the
  subspace distance.
* ``"majority"`` -- P2 (Brody, Alon, Yahav): the one-layer pre-norm encoder,
  :class:`MajorityTransformer`, trained on the majority task with cross-entropy.

:func:`build_experiment` turns a name and overrides into an :class:`Experiment` (model, loss,
data, metrics) and the experiment's default :class:`pynorm.nn.train.TrainConfig`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Tuple

import numpy as np

from .attention import LinearAttention, SoftmaxAttention
from .blocks import LoopedBlock, PreNormBlock
from .data import majority_data, power_method_data, stratified_split
from .layers import Embedding, FeedForward, _rng
from .losses import CrossEntropyLoss, Loss, SubspaceDistanceLoss, accuracy
from .module import Module, as_dtype
from .norms import NORM_KINDS, L2Norm, make_norm


class LoopedTransformer(Module):
    """P1's looped linear transformer.

    Input X (batch, d, n) and query a (batch, d) are embedded as the paper's
    ``E_0 = [[X, 0], [0, a]]`` (2d x (n+1)), stored with tokens as rows: (batch, n+1, 2d).
    One block ``E <- LN(E + V E E^T W E)`` (:class:`LoopedBlock` around a merged
    :class:`LinearAttention`, LN = :class:`L2Norm`, or none) runs ``loops`` times with
    shared V, W; the prediction is the bottom d entries of the last token, (batch, d).

    Init: ``W = [[0, w I], [0, 0]]``, ``V = [[0, 0], [v I, 0]]`` plus N(0, init_noise^2) on
    every entry (w = v = 0 is stationary).
    """

    def __init__(
        self,
        d: int = 16,
        loops: int = 10,
        *,
        layer_norm: bool = True,
        init_w: float = 0.1,
        init_v: float = 0.1,
        init_noise: float = 0.01,
        dtype: Any = np.float64,
        rng: np.random.Generator = None,
    ):
        super().__init__(dtype)
        self.d = int(d)
        rng = _rng(rng)
        attention = LinearAttention(2 * self.d, parametrization="merged", dtype=dtype, init_std=init_noise, rng=rng)
        identity = np.eye(self.d)
        attention.params["W"][: self.d, self.d :] += init_w * identity
        attention.params["V"][self.d :, : self.d] += init_v * identity
        self.add_child("block", LoopedBlock(attention, L2Norm(dtype=dtype) if layer_norm else None, loops))

    def forward(self, X: np.ndarray, a: np.ndarray) -> np.ndarray:
        if X.ndim != 3 or X.shape[1] != self.d or a.shape != (X.shape[0], self.d):
            raise ValueError(
                f"LoopedTransformer: need X (batch, {self.d}, n) and a (batch, {self.d}), got X {X.shape}, a {a.shape}"
            )
        batch, _, n = X.shape
        tokens = np.zeros((batch, n + 1, 2 * self.d), dtype=self.dtype)
        tokens[:, :n, : self.d] = np.swapaxes(X, 1, 2)
        tokens[:, n, self.d :] = a
        out = self.block(tokens)
        self.save(out.shape)
        return out[:, -1, self.d :].copy()

    def backward(self, dy: np.ndarray) -> None:
        """Gradients of the parameters (the inputs get none; returns None)."""
        (shape,) = self.saved()
        dout = np.zeros(shape, dtype=self.dtype)
        dout[:, -1, self.d :] = dy
        self.block.backward(dout)


#: P2's choices for the norm before attention, as (make_norm kind, affine).
ATTENTION_NORMS = {
    "with_projection": ("layernorm", False),
    "without_projection": ("scaling", False),
    "none": ("identity", False),
}


class MajorityTransformer(Module):
    """P2's model: a tied embedding (vocab x d_model, also the output projection), one
    pre-norm encoder layer (softmax attention without Q/K/V bias, ReLU FFN) and no
    positional encoding; logits at every position.

    attn_norm: the norm before attention -- ``"with_projection"`` (LN without affine),
    ``"without_projection"`` (scaling only, x / RMS(x) without affine, i.e. norm sqrt(d) like
    LN's scaling half; P2's code scales to 1/sqrt(d) instead, a constant factor the query and
    key weights absorb), ``"none"``, or any :func:`pynorm.nn.make_norm` kind (with affine).
    The norm before the FFN is ``make_norm(ffn_norm)`` with affine: a standard LayerNorm by
    default (P2), any kind for P3's comparisons. No final norm.
    """

    def __init__(
        self,
        vocab: int = 20,
        d_model: int = 8,
        n_heads: int = 1,
        ffn: int = 8,
        *,
        attn_norm: str = "with_projection",
        activation: str = "relu",
        ffn_norm: str = "layernorm",
        dtype: Any = np.float64,
        rng: np.random.Generator = None,
    ):
        super().__init__(dtype)
        if attn_norm in ATTENTION_NORMS:
            kind, affine = ATTENTION_NORMS[attn_norm]
        elif attn_norm in NORM_KINDS:
            kind, affine = attn_norm, True
        else:
            raise ValueError(
                f"MajorityTransformer: unknown attn_norm {attn_norm!r}; choose one of "
                f"{tuple(ATTENTION_NORMS) + NORM_KINDS}"
            )
        rng = _rng(rng)
        self.add_child("embed", Embedding(vocab, d_model, tied=True, dtype=dtype, rng=rng))
        attention = SoftmaxAttention(d_model, n_heads, qkv_bias=False, out_bias=True, dtype=dtype, rng=rng)
        self.add_child(
            "block",
            PreNormBlock(
                attention,
                FeedForward(d_model, ffn, activation, dtype=dtype, rng=rng),
                norm1=make_norm(kind, d_model, affine=affine, dtype=dtype),
                norm2=make_norm(ffn_norm, d_model, dtype=dtype),
            ),
        )

    def forward(self, tokens: np.ndarray) -> np.ndarray:
        return self.embed.project(self.block(self.embed(tokens)))

    def backward(self, dlogits: np.ndarray) -> None:
        """Gradients of the parameters (token ids get none; returns None)."""
        self.embed.backward(self.block.backward(self.embed.project_backward(dlogits)))


# -- experiments -------------------------------------------------------------------------
@dataclass
class LoopedConfig:
    """P1's model and data (defaults: the paper's d = 16, n = 32, L = 10, 10k/2k samples).

    normalize_readout: the loss is Dist^2(y / ||y||, V) = sin^2(angle), the paper's reading
    of Dist^2 for unit y. With the paper's block structure y always has unit norm; with full
    2d x 2d matrices trained from noise, the unnormalised loss can be driven to 0 by moving
    the query's mass into the top half (||y|| -> 0) instead of learning the power method.
    """

    d: int = 16
    n: int = 32
    loops: int = 10
    layer_norm: bool = True
    normalize_readout: bool = True
    init_w: float = 0.1
    init_v: float = 0.1
    init_noise: float = 0.01
    rank: int = 1
    spike: float = 0.0
    n_train: int = 10_000
    n_test: int = 2_000
    seed: int = 0


@dataclass
class MajorityConfig:
    """P2's model and data (defaults: the paper's majority task and model)."""

    vocab: int = 20
    length: int = 50
    d_model: int = 8
    n_heads: int = 1
    ffn: int = 8
    activation: str = "relu"
    attn_norm: str = "with_projection"
    ffn_norm: str = "layernorm"
    n_sequences: int = 100_000
    test_fraction: float = 0.2
    min_gap: int = 6
    per_partition: int = 10
    seed: int = 0


@dataclass
class Experiment:
    """A model with its loss, data and metrics: what the trainer needs.

    ``train`` / ``test`` are dicts of arrays with a common first axis; the model is called
    as ``model(*[batch[k] for k in inputs])`` and the loss as ``loss(pred, batch[target])``.
    """

    name: str
    config: Any
    dtype: np.dtype
    model: Module
    loss: Loss
    train: Dict[str, np.ndarray]
    test: Dict[str, np.ndarray]
    inputs: Tuple[str, ...]
    target: str
    metrics: Dict[str, Callable[[np.ndarray, np.ndarray], float]] = field(default_factory=dict)


def _build_looped(cfg: LoopedConfig, dtype: np.dtype) -> Experiment:
    model = LoopedTransformer(
        cfg.d,
        cfg.loops,
        layer_norm=cfg.layer_norm,
        init_w=cfg.init_w,
        init_v=cfg.init_v,
        init_noise=cfg.init_noise,
        dtype=dtype,
        rng=np.random.default_rng([cfg.seed, 0]),
    )
    data = power_method_data(
        cfg.n_train + cfg.n_test, cfg.d, cfg.n, rank=cfg.rank, spike=cfg.spike, seed=cfg.seed, dtype=dtype
    )
    train = {k: v[: cfg.n_train] for k, v in data.items()}
    test = {k: v[cfg.n_train :] for k, v in data.items()}
    return Experiment(
        "power-method", cfg, dtype, model, SubspaceDistanceLoss(cfg.normalize_readout), train, test, ("X", "a"), "basis"
    )


def _build_majority(cfg: MajorityConfig, dtype: np.dtype) -> Experiment:
    model = MajorityTransformer(
        cfg.vocab,
        cfg.d_model,
        cfg.n_heads,
        cfg.ffn,
        attn_norm=cfg.attn_norm,
        activation=cfg.activation,
        ffn_norm=cfg.ffn_norm,
        dtype=dtype,
        rng=np.random.default_rng([cfg.seed, 0]),
    )
    data = majority_data(
        cfg.n_sequences,
        vocab=cfg.vocab,
        length=cfg.length,
        min_gap=cfg.min_gap,
        per_partition=cfg.per_partition,
        seed=cfg.seed,
    )
    train_idx, test_idx = stratified_split(data["labels"][:, 0], cfg.test_fraction, seed=cfg.seed)
    train = {k: v[train_idx] for k, v in data.items()}
    test = {k: v[test_idx] for k, v in data.items()}
    return Experiment(
        "majority", cfg, dtype, model, CrossEntropyLoss(), train, test, ("tokens",), "labels", {"accuracy": accuracy}
    )


@dataclass
class ExperimentSpec:
    """How to build one experiment: its config class, builder, and training defaults."""

    config_class: type
    build: Callable[[Any, np.dtype], Experiment]
    train_defaults: Dict[str, Any]


#: The experiments by name. Training defaults are the papers' (P2's batch is 6000).
EXPERIMENTS: Dict[str, ExperimentSpec] = {
    "power-method": ExperimentSpec(LoopedConfig, _build_looped, dict(optimizer="sgd", lr=0.1, batch_size=128)),
    "majority": ExperimentSpec(MajorityConfig, _build_majority, dict(optimizer="adam", lr=1e-3, batch_size=6000)),
}


def split_overrides(name: str, overrides: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Splits ``overrides`` into (model/data config fields, TrainConfig fields); unknown names raise."""
    from .train import TrainConfig

    spec = experiment_spec(name)
    model_fields = {f.name for f in dataclasses.fields(spec.config_class)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - model_fields - train_fields)
    if unknown:
        raise ValueError(
            f"{name}: unknown setting(s) {unknown}; model/data settings: {sorted(model_fields)}; "
            f"training settings: {sorted(train_fields)}"
        )
    return (
        {k: v for k, v in overrides.items() if k in model_fields},
        {k: v for k, v in overrides.items() if k in train_fields},
    )


#: Former names, still accepted (checkpoints written under them resume).
ALIASES: Dict[str, str] = {"p1_looped": "power-method", "p2_majority": "majority"}


def canonical_name(name: str) -> str:
    """``name`` with a former name (:data:`ALIASES`) replaced by the current one."""
    return ALIASES.get(name, name)


def experiment_spec(name: str) -> ExperimentSpec:
    """The registry entry of experiment ``name`` (a clear error for unknown names)."""
    if canonical_name(name) not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[canonical_name(name)]


def build_experiment(name: str, dtype: Any = "float64", **overrides: Any):
    """``(Experiment, TrainConfig)`` for experiment ``name`` with settings overridden by name
    (model/data fields of its config class, or :class:`pynorm.nn.train.TrainConfig` fields).

    Example:
        >>> exp, train_cfg = build_experiment("power-method", n_train=256, n_test=64, steps=10)
    """
    from .train import TrainConfig

    spec = experiment_spec(name)
    model_overrides, train_overrides = split_overrides(name, overrides)
    train_config = TrainConfig(**{**spec.train_defaults, **train_overrides})  # validated before any data is made
    config = spec.config_class(**model_overrides)
    return spec.build(config, as_dtype(dtype)), train_config
