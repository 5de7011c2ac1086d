"""Differentiable functional forms of pynorm's ops on torch tensors, with the signatures of
``torch.nn.functional`` where torch has the op (layer_norm, rms_norm).

A ``normalized_shape`` of several axes is the last axes flattened into one (a view for
contiguous input): normalising over them is normalising over that one axis, which is what
pynorm's kernels do.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

from . import _ops

Shape = Union[int, Sequence[int]]


def _as_shape(normalized_shape: Shape, fn: str) -> tuple:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(
            f"{fn}: normalized_shape must be a positive int or a non-empty sequence of them, got {normalized_shape!r}"
        )
    return shape


def _flatten_last(x: torch.Tensor, shape: tuple, fn: str, name: str = "input") -> torch.Tensor:
    """x with its trailing ``shape`` axes as one (x itself for a one-axis shape)."""
    if x.dim() < len(shape) or tuple(x.shape[x.dim() - len(shape) :]) != shape:
        raise ValueError(f"{fn}: {name} of shape {tuple(x.shape)} does not end in normalized_shape {shape}")
    return x if len(shape) == 1 else x.reshape(*x.shape[: x.dim() - len(shape)], math.prod(shape))


def _flat_param(p: Optional[torch.Tensor], shape: tuple, fn: str, name: str) -> Optional[torch.Tensor]:
    """A parameter of shape ``shape`` as a vector; one-axis parameters pass as they are (pynorm
    checks their shape)."""
    if p is None or len(shape) == 1:
        return p
    if tuple(p.shape) != shape:
        raise ValueError(f"{fn}: {name} must have shape {shape}, got {tuple(p.shape)}")
    return p.reshape(-1)


def _unflatten(y: torch.Tensor, input: torch.Tensor, shape: tuple) -> torch.Tensor:
    return y if len(shape) == 1 else y.view(input.shape)


def layer_norm(
    input: torch.Tensor,
    normalized_shape: Shape,
    weight: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``torch.nn.functional.layer_norm`` on pynorm's kernels (``torch.ops.pynorm.layer_norm``).

    Differentiable in input, weight and bias; weight and bias are used in input's dtype and
    their gradients come back in their own dtype.
    """
    fn = "pynorm.torch.layer_norm"
    shape = _as_shape(normalized_shape, fn)
    x = _flatten_last(input, shape, fn)
    y, _, _ = _ops.layer_norm(
        x, _flat_param(weight, shape, fn, "weight"), _flat_param(bias, shape, fn, "bias"), float(eps)
    )
    return _unflatten(y, input, shape)


def rms_norm(
    input: torch.Tensor,
    normalized_shape: Shape,
    weight: Optional[torch.Tensor] = None,
    eps: Optional[float] = None,
) -> torch.Tensor:
    """``torch.nn.functional.rms_norm`` on pynorm's kernels (``torch.ops.pynorm.rms_norm``):
    ``x / sqrt(mean(x^2) + eps) * weight``; eps None is ``torch.finfo(input.dtype).eps``, as in torch."""
    fn = "pynorm.torch.rms_norm"
    shape = _as_shape(normalized_shape, fn)
    x = _flatten_last(input, shape, fn)
    eps = torch.finfo(input.dtype).eps if eps is None else float(eps)
    y, _ = _ops.rms_norm(x, _flat_param(weight, shape, fn, "weight"), eps)
    return _unflatten(y, input, shape)


def dyt(
    input: torch.Tensor,
    alpha: Union[torch.Tensor, float],
    weight: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Dynamic Tanh over the last axes: ``weight * tanh(alpha * input) + bias``
    (``torch.ops.pynorm.dyt``). alpha is a one-element tensor (differentiable) or a number;
    weight and bias have the shape of input's last axes (their number of axes decides how
    many are flattened into one)."""
    fn = "pynorm.torch.dyt"
    if not isinstance(alpha, torch.Tensor):
        alpha = torch.full((1,), float(alpha), dtype=input.dtype, device=input.device)
    param = weight if weight is not None else bias
    shape = _as_shape((input.shape[-1],) if param is None else tuple(param.shape), fn)
    x = _flatten_last(input, shape, fn)
    y = _ops.dyt(x, alpha, _flat_param(weight, shape, fn, "weight"), _flat_param(bias, shape, fn, "bias"))
    return _unflatten(y, input, shape)


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    normalize: bool = False,
    eps: float = 1e-6,
    scale: float = 1.0,
) -> torch.Tensor:
    """Linear attention ``out_i = scale * sum_j (q_i . k_j) v_j`` over j (causal: j <= i),
    normalised by ``scale * sum_j q_i . k_j + eps`` when ``normalize``; q, k of shape
    (..., N, Dk), v (..., N, Dv), one dtype (``torch.ops.pynorm.linear_attention``; see
    :func:`pynorm.linear_attention`). Differentiable in q, k and v."""
    return _ops.linear_attention(q, k, v, bool(causal), bool(normalize), float(eps), float(scale))
