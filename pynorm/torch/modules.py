"""torch.nn modules on pynorm's kernels, and :func:`replace_norms` for existing models.

:class:`LayerNorm` and :class:`RMSNorm` subclass ``torch.nn.LayerNorm`` / ``torch.nn.RMSNorm``
and change only ``forward``: the constructor, the parameters, their initialisation and the
state_dict keys are torch's own, so a state_dict saved from one loads into the other, and code
that checks ``isinstance(m, torch.nn.LayerNorm)`` (weight-decay groups, FSDP wrap policies)
still sees a LayerNorm.
"""

from __future__ import annotations

from typing import Dict

import torch

from . import functional


class LayerNorm(torch.nn.LayerNorm):
    """``torch.nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True)``
    computed by :func:`pynorm.torch.layer_norm`."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return functional.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


class RMSNorm(torch.nn.RMSNorm):
    """``torch.nn.RMSNorm(normalized_shape, eps=None, elementwise_affine=True)`` computed by
    :func:`pynorm.torch.rms_norm` (eps None: ``torch.finfo(input.dtype).eps``, as torch)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return functional.rms_norm(input, self.normalized_shape, self.weight, self.eps)


class DyT(torch.nn.Module):
    """Dynamic Tanh (Zhu et al. 2025), a drop-in for a norm layer:
    ``weight * tanh(alpha * x) + bias`` over the trailing ``normalized_shape`` axes.

    Parameters as in the paper's code (``DynamicTanh``): ``alpha`` of shape (1,) initialised to
    ``alpha0``, ``weight`` (ones) and ``bias`` (zeros, absent when ``bias=False``) of shape
    ``normalized_shape``.
    """

    def __init__(
        self, normalized_shape: functional.Shape, alpha0: float = 0.5, bias: bool = True, device=None, dtype=None
    ):
        super().__init__()
        shape = functional._as_shape(normalized_shape, "pynorm.torch.DyT")
        factory = {"device": device, "dtype": dtype}
        self.normalized_shape = shape
        self.alpha0 = float(alpha0)
        self.alpha = torch.nn.Parameter(torch.full((1,), self.alpha0, **factory))
        self.weight = torch.nn.Parameter(torch.ones(shape, **factory))
        if bias:
            self.bias = torch.nn.Parameter(torch.zeros(shape, **factory))
        else:
            self.register_parameter("bias", None)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return functional.dyt(input, self.alpha, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, alpha0={self.alpha0}, bias={self.bias is not None}"


def _pynorm_twin(module: torch.nn.Module) -> torch.nn.Module:
    """A pynorm module computing what ``module`` computes, holding the same Parameter objects."""
    if type(module) is torch.nn.LayerNorm:
        twin = LayerNorm(
            module.normalized_shape, module.eps, module.elementwise_affine, module.bias is not None, device="meta"
        )
    else:
        twin = RMSNorm(module.normalized_shape, module.eps, module.elementwise_affine, device="meta")
    for name, param in module.named_parameters(recurse=False):
        setattr(twin, name, param)
    twin.train(module.training)
    return twin


def replace_norms(model: torch.nn.Module) -> Dict[str, torch.nn.Module]:
    """Swaps every ``torch.nn.LayerNorm`` and ``torch.nn.RMSNorm`` inside ``model`` for pynorm's,
    in place, and returns ``{qualified name: the module it replaced}``.

    The new modules hold the very same Parameter objects (an optimizer built before keeps
    working, the state_dict is unchanged). Only modules of exactly these types are replaced:
    subclasses may compute something else. Hooks registered on a replaced module do not move
    to its replacement. ``model`` itself must not be a norm (it has no parent to swap it in).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"pynorm.torch.replace_norms: model must be a torch.nn.Module, got {type(model).__name__}")
    if type(model) in (torch.nn.LayerNorm, torch.nn.RMSNorm):
        raise ValueError(
            "pynorm.torch.replace_norms: model is itself a norm; use pynorm.torch.LayerNorm / RMSNorm directly"
        )
    targets = [
        (name, m)
        for name, m in model.named_modules(remove_duplicate=False)
        if type(m) in (torch.nn.LayerNorm, torch.nn.RMSNorm)
    ]
    for name, module in targets:  # in the model's order
        parent_name, _, child_name = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child_name, _pynorm_twin(module))
    return dict(targets)
