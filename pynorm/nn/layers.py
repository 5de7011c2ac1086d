"""Dense layers: Linear, Embedding (optionally tied to the output projection), activations
and the position-wise FeedForward block."""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from .. import ops
from .module import Module, sum_leading


def _rng(rng: Optional[np.random.Generator]) -> np.random.Generator:
    """``rng``, or a fresh ``default_rng(0)`` when None: every layer's and model's default seed."""
    return rng if rng is not None else np.random.default_rng(0)


def _positive_int(value: Any, name: str, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _flat(x: np.ndarray) -> np.ndarray:
    """x as a 2-d [rows, last axis] array."""
    return x.reshape(-1, x.shape[-1])


class Linear(Module):
    """``y = x @ weight.T + bias`` over the last axis; weight has shape (out, in) as in torch.

    Initialised like torch.nn.Linear: uniform(-1/sqrt(in), 1/sqrt(in)).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        dtype: Any = np.float64,
        rng: Optional[np.random.Generator] = None,
    ):
        super().__init__(dtype)
        self.in_features = _positive_int(in_features, "in_features", "Linear")
        self.out_features = _positive_int(out_features, "out_features", "Linear")
        bound = 1.0 / math.sqrt(self.in_features)
        rng = _rng(rng)
        self.add_param("weight", rng.uniform(-bound, bound, (self.out_features, self.in_features)))
        if bias:
            self.add_param("bias", rng.uniform(-bound, bound, self.out_features))

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.check_input(x, self.in_features)
        self.save(x)
        # pynorm's tall-by-small product on its threads, the bias added in the same pass
        bias = self.params.get("bias")
        add = None if bias is None else np.broadcast_to(bias, x.shape[:-1] + (self.out_features,))
        return ops.matmul(x, self.params["weight"].T, add=add)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        (x,) = self.saved()
        self.accumulate("weight", ops.matmul(dy, x, transpose_a=True))  # dy^T x, rows in a fixed order
        if "bias" in self.params:
            self.accumulate("bias", sum_leading(dy))
        return ops.matmul(dy, self.params["weight"])


class Embedding(Module):
    """A lookup table ``weight[ids]`` of shape (vocab, dim), initialised N(0, 1) as in torch.

    With ``tied=True`` the same weight is also the output projection: :meth:`project` maps
    hidden states (..., dim) to logits (..., vocab) as ``h @ weight.T``, and
    :meth:`project_backward` adds that use's gradient to the same ``grads["weight"]``.
    """

    def __init__(
        self,
        vocab: int,
        dim: int,
        *,
        tied: bool = False,
        dtype: Any = np.float64,
        rng: Optional[np.random.Generator] = None,
    ):
        super().__init__(dtype)
        self.vocab = _positive_int(vocab, "vocab", "Embedding")
        self.dim = _positive_int(dim, "dim", "Embedding")
        self.tied = bool(tied)
        self.add_param("weight", _rng(rng).standard_normal((self.vocab, self.dim)))
        self._projected: list = []

    def forward(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"Embedding: ids must be integers, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab):
            raise ValueError(f"Embedding: ids must lie in [0, {self.vocab}), got [{ids.min()}, {ids.max()}]")
        self.save(ids)
        return self.params["weight"][ids]

    def backward(self, dy: np.ndarray) -> None:
        """Adds the lookup's gradient to ``grads["weight"]``; ids have no gradient (returns None)."""
        (ids,) = self.saved()
        ids, rows = ids.reshape(-1), _flat(dy)  # per-id sums by bincount (np.add.at is much slower)
        grad = np.stack([np.bincount(ids, rows[:, c], self.vocab) for c in range(self.dim)], axis=1)
        self.accumulate("weight", grad.astype(self.grads["weight"].dtype, copy=False))

    def project(self, h: np.ndarray) -> np.ndarray:
        """The tied output projection: logits = h @ weight.T."""
        if not self.tied:
            raise RuntimeError("Embedding.project needs an embedding built with tied=True")
        h = self.check_input(h, self.dim, "h")
        if self.training:
            self._projected.append(h)
        return ops.matmul(h, self.params["weight"].T)

    def project_backward(self, dlogits: np.ndarray) -> np.ndarray:
        """Gradient of :meth:`project`: adds to ``grads["weight"]`` and returns dh."""
        if not self._projected:
            raise RuntimeError("Embedding.project_backward called without a matching project in training mode")
        h = self._projected.pop()
        self.accumulate("weight", ops.matmul(dlogits, h, transpose_a=True))
        return ops.matmul(dlogits, self.params["weight"])

    def train(self, mode: bool = True) -> "Embedding":
        self._projected.clear()
        return super().train(mode)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class Activation(Module):
    """An element-wise activation: ``"relu"`` or ``"gelu_tanh"`` (GELU's tanh approximation,
    torch's ``GELU(approximate="tanh")``; the exact erf form needs an erf NumPy lacks)."""

    KINDS = ("relu", "gelu_tanh")

    def __init__(self, kind: str = "relu", *, dtype: Any = np.float64):
        super().__init__(dtype)
        if kind not in self.KINDS:
            raise ValueError(f"Activation: unknown kind {kind!r}; choose one of {self.KINDS}")
        self.kind = kind

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.save(x)
        if self.kind == "relu":
            return np.maximum(x, 0)
        inner = np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3))
        return 0.5 * x * (1 + inner)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        (x,) = self.saved()
        if self.kind == "relu":
            return dy * (x > 0)
        t = np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3))
        dinner = (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
        return dy * (0.5 * (1 + t) + 0.5 * x * dinner)


class FeedForward(Module):
    """``Linear(dim, hidden) -> activation -> Linear(hidden, dim)``."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        activation: str = "relu",
        bias: bool = True,
        *,
        dtype: Any = np.float64,
        rng: Optional[np.random.Generator] = None,
    ):
        super().__init__(dtype)
        rng = _rng(rng)
        self.add_child("fc1", Linear(dim, hidden, bias, dtype=dtype, rng=rng))
        self.add_child("act", Activation(activation, dtype=dtype))
        self.add_child("fc2", Linear(hidden, dim, bias, dtype=dtype, rng=rng))

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.fc2(self.act(self.fc1(x)))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return self.fc1.backward(self.act.backward(self.fc2.backward(dy)))
