"""Normalisation layers on pynorm's kernels: LayerNorm and its P2 halves, RMSNorm, P1's
column l2 normalisation, DyT (P3), and :func:`make_norm` to pick one by name.

All of them normalise the last axis (one token per row).
"""

from __future__ import annotations

import math
from typing import Any, Dict

import numpy as np

from .. import ops
from .module import Module, sum_leading


def _add_affine(norm: Module, dim: int, weight: bool, bias: bool) -> None:
    """Registers a norm's per-channel affine parameters, each only if asked for: ``weight``
    (ones) and then ``bias`` (zeros), so that a fresh norm's affine part is the identity."""
    if weight:
        norm.add_param("weight", np.ones(dim))
    if bias:
        norm.add_param("bias", np.zeros(dim))


def _accumulate_affine(norm: Module, dweight: Any, dbias: Any) -> None:
    """Adds a kernel's affine gradients to ``norm.grads``; the kernels return None for a
    parameter the norm does not have, and that one is skipped."""
    for name, grad in (("weight", dweight), ("bias", dbias)):
        if grad is not None:
            norm.accumulate(name, grad)


class LayerNorm(Module):
    """LayerNorm with P2's variants (Brody et al.), on ``pynorm.layer_norm``::

        y = (x - mean(x) if center else x) * (rstd if scale else 1) * weight + bias

    * ``center=True,  scale=True``  -- LayerNorm (projection, then scaling to norm sqrt(dim));
    * ``center=True,  scale=False`` -- projection only (onto the hyperplane orthogonal to 1);
    * ``center=False, scale=True``  -- scaling only (x / RMS(x): norm sqrt(dim));
    * ``center=False, scale=False`` -- none (only the affine part, if any).

    ``affine=False`` drops weight and bias; ``bias=False`` keeps only the weight.
    """

    def __init__(
        self,
        dim: int,
        *,
        center: bool = True,
        scale: bool = True,
        affine: bool = True,
        bias: bool = True,
        eps: float = 1e-5,
        dtype: Any = np.float64,
    ):
        super().__init__(dtype)
        self.dim, self.center, self.scale, self.eps = int(dim), bool(center), bool(scale), float(eps)
        _add_affine(self, self.dim, affine, affine and bias)

    def _kernel_args(self) -> Dict[str, Any]:
        """What ``ops.layer_norm`` and its backward both take from the layer: the affine
        parameters as they are now (None where absent), eps and the variant."""
        weight, bias = self.params.get("weight"), self.params.get("bias")
        return dict(weight=weight, bias=bias, eps=self.eps, center=self.center, scale=self.scale)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.check_input(x, self.dim)
        y, mean, rstd = ops.layer_norm(x, **self._kernel_args(), return_stats=True)
        self.save(x, mean, rstd)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x, mean, rstd = self.saved()
        dx, dweight, dbias = ops.layer_norm_backward(dy, x, **self._kernel_args(), mean=mean, rstd=rstd)
        _accumulate_affine(self, dweight, dbias)
        return dx


class RMSNorm(Module):
    """``x / sqrt(mean(x^2) + eps) * weight`` (weight only with ``affine=True``), on ``pynorm.rms_norm``."""

    def __init__(self, dim: int, *, affine: bool = True, eps: float = 1e-6, dtype: Any = np.float64):
        super().__init__(dtype)
        self.dim, self.eps = int(dim), float(eps)
        _add_affine(self, self.dim, affine, False)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.check_input(x, self.dim)
        y, rstd = ops.rms_norm(x, self.params.get("weight"), self.eps, return_stats=True)
        self.save(x, rstd)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x, rstd = self.saved()
        dx, dweight = ops.rms_norm_backward(dy, x, self.params.get("weight"), self.eps, rstd=rstd)
        _accumulate_affine(self, dweight, None)
        return dx


class L2Norm(Module):
    """P1's LN: every token (row here, column in the paper) divided by its l2 norm,
    ``x / sqrt(||x||^2 + eps)`` (eps = 0 by default: no centring, no sqrt(dim), no affine).

    Computed as ``rms_norm(x, eps / dim)`` with every weight 1 / sqrt(dim), which is the same
    function, in one pass over x (forward and backward).
    """

    def __init__(self, *, eps: float = 0.0, dtype: Any = np.float64):
        super().__init__(dtype)
        self.eps = float(eps)
        self._scales = {}  # dim -> the constant weight vector 1 / sqrt(dim)

    def _scale(self, x: np.ndarray) -> np.ndarray:
        dim = x.shape[-1]
        if dim not in self._scales:
            self._scales[dim] = np.full(dim, 1.0 / math.sqrt(dim), dtype=self.dtype)
        return self._scales[dim]

    def forward(self, x: np.ndarray) -> np.ndarray:
        y, rstd = ops.rms_norm(x, self._scale(x), self.eps / x.shape[-1], return_stats=True)
        self.save(x, rstd)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x, rstd = self.saved()
        dx, _ = ops.rms_norm_backward(dy, x, self._scale(x), self.eps / x.shape[-1], rstd=rstd)
        return dx


class DyT(Module):
    """Dynamic Tanh (P3): ``weight * tanh(alpha * x) + bias``, on ``pynorm.dyt``.

    alpha is ONE learnable scalar (shape (1,), initialised to ``alpha0``); weight (ones) and
    bias (zeros) are per channel, dropped with ``affine=False`` / ``bias=False``.
    """

    def __init__(
        self, dim: int, *, alpha0: float = 0.5, affine: bool = True, bias: bool = True, dtype: Any = np.float64
    ):
        super().__init__(dtype)
        self.dim = int(dim)
        self.add_param("alpha", np.full(1, float(alpha0)))
        _add_affine(self, self.dim, affine, bias)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.check_input(x, self.dim)
        self.save(x)
        return ops.dyt(x, self.params["alpha"], self.params.get("weight"), self.params.get("bias"))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        (x,) = self.saved()
        dx, dalpha, dweight, dbias = ops.dyt_backward(
            dy, x, self.params["alpha"], self.params.get("weight"), self.params.get("bias")
        )
        self.accumulate("alpha", dalpha)
        _accumulate_affine(self, dweight, dbias)
        return dx


class Squash(Module):
    """P3's ablations of DyT: ``weight * f(alpha * x) + bias`` with f = ``"tanh"``,
    ``"hardtanh"`` (clip to [-1, 1]) or ``"sigmoid"`` (the plain logistic, not centred), in
    NumPy. ``learn_alpha=False`` fixes alpha at ``alpha0`` (P3's "without alpha": tanh(x),
    alpha0 = 1). With f = tanh and a learned alpha this is DyT (see :class:`DyT`, on the kernel).
    """

    KINDS = ("tanh", "hardtanh", "sigmoid")

    def __init__(
        self, dim: int, kind: str = "tanh", *, alpha0: float = 0.5, learn_alpha: bool = True, dtype: Any = np.float64
    ):
        super().__init__(dtype)
        if kind not in self.KINDS:
            raise ValueError(f"Squash: unknown kind {kind!r}; choose one of {self.KINDS}")
        self.dim, self.kind, self.learn_alpha = int(dim), kind, bool(learn_alpha)
        if self.learn_alpha:
            self.add_param("alpha", np.full(1, float(alpha0)))
        else:
            self.alpha = np.full(1, float(alpha0), dtype=self.dtype)
        _add_affine(self, self.dim, True, True)

    def _alpha(self) -> np.ndarray:
        return self.params["alpha"] if self.learn_alpha else self.alpha

    def _f(self, z: np.ndarray):
        """(f(z), f'(z))."""
        if self.kind == "tanh":
            t = np.tanh(z)
            return t, 1 - t * t
        if self.kind == "hardtanh":
            return np.clip(z, -1, 1), (np.abs(z) < 1).astype(z.dtype)
        s = 1 / (1 + np.exp(-z))
        return s, s * (1 - s)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.check_input(x, self.dim)
        self.save(x)
        return self._f(self._alpha() * x)[0] * self.params["weight"] + self.params["bias"]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        (x,) = self.saved()
        alpha = self._alpha()
        f, df = self._f(alpha * x)
        dyw = dy * self.params["weight"]
        self.accumulate("weight", sum_leading(dy * f))
        self.accumulate("bias", sum_leading(dy))
        if self.learn_alpha:
            self.accumulate("alpha", np.array([np.sum(dyw * df * x)]))
        return dyw * df * alpha


class Identity(Module):
    """No normalisation: y = x."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy


#: LayerNorm variants by name: (center, scale).
LAYER_NORM_VARIANTS = {
    "layernorm": (True, True),
    "projection": (True, False),
    "scaling": (False, True),
    "none": (False, False),
}
#: P3's ablations (see :class:`Squash`): kind -> (function, learn alpha).
SQUASH_KINDS = {
    "tanh": ("tanh", True),
    "hardtanh": ("hardtanh", True),
    "sigmoid": ("sigmoid", True),
    "tanh_no_alpha": ("tanh", False),
}
NORM_KINDS = tuple(LAYER_NORM_VARIANTS) + ("rmsnorm", "l2", "dyt", "identity") + tuple(SQUASH_KINDS)


def make_norm(
    kind: str, dim: int, *, affine: bool = True, eps: float = 1e-5, alpha0: float = 0.5, dtype: Any = np.float64
) -> Module:
    """A normalisation layer by name.

    kind: ``"layernorm"``, ``"projection"``, ``"scaling"``, ``"none"`` (the LayerNorm
    variants, see :class:`LayerNorm`), ``"rmsnorm"``, ``"l2"`` (P1's x/||x||, never
    affine), ``"dyt"`` (alpha0 used), ``"identity"``, or P3's ablations ``"tanh"``, ``"hardtanh"``,
    ``"sigmoid"`` (alpha0 used) and ``"tanh_no_alpha"`` (tanh(x), alpha fixed at 1): see :class:`Squash`.
    """
    if kind in LAYER_NORM_VARIANTS:
        center, scale = LAYER_NORM_VARIANTS[kind]
        return LayerNorm(dim, center=center, scale=scale, affine=affine, eps=eps, dtype=dtype)
    if kind == "rmsnorm":
        return RMSNorm(dim, affine=affine, eps=eps, dtype=dtype)
    if kind == "l2":
        return L2Norm(dtype=dtype)
    if kind == "dyt":
        return DyT(dim, alpha0=alpha0, affine=affine, bias=affine, dtype=dtype)
    if kind == "identity":
        return Identity(dtype=dtype)
    if kind in SQUASH_KINDS:
        function, learn_alpha = SQUASH_KINDS[kind]
        return Squash(dim, function, alpha0=alpha0 if learn_alpha else 1.0, learn_alpha=learn_alpha, dtype=dtype)
    raise ValueError(f"make_norm: unknown norm {kind!r}; choose one of {NORM_KINDS}")
