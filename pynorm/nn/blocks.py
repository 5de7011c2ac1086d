"""Residual blocks: the pre-norm transformer block and P1's looped block."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .layers import _positive_int
from .module import Module
from .norms import Identity


class PreNormBlock(Module):
    """``h = x + mixer(norm1(x));  y = h + ffn(norm2(h))`` (the FFN half only if ``ffn`` is given).

    mixer is any token mixer (SoftmaxAttention, LinearAttention, ...), norm1 / norm2 any
    normalisation layer (see :func:`pynorm.nn.make_norm`); a missing norm is the identity.
    """

    def __init__(
        self,
        mixer: Module,
        ffn: Optional[Module] = None,
        norm1: Optional[Module] = None,
        norm2: Optional[Module] = None,
    ):
        super().__init__(mixer.dtype)
        self.add_child("norm1", norm1 if norm1 is not None else Identity(dtype=mixer.dtype))
        self.add_child("mixer", mixer)
        self.has_ffn = ffn is not None
        if self.has_ffn:
            self.add_child("norm2", norm2 if norm2 is not None else Identity(dtype=mixer.dtype))
            self.add_child("ffn", ffn)
        elif norm2 is not None:
            raise ValueError("PreNormBlock: norm2 given without an ffn")

    def forward(self, x: np.ndarray) -> np.ndarray:
        h = x + self.mixer(self.norm1(x))
        return h + self.ffn(self.norm2(h)) if self.has_ffn else h

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self.has_ffn:
            dy = dy + self.norm2.backward(self.ffn.backward(dy))
        return dy + self.norm1.backward(self.mixer.backward(dy))


class LoopedBlock(Module):
    """P1's looped block: ``E <- norm(E + attention(E))`` applied ``loops`` times with the
    same weights (norm = :class:`pynorm.nn.L2Norm` for P1's LN, Identity for the no-LN model)."""

    def __init__(self, attention: Module, norm: Optional[Module] = None, loops: int = 10):
        super().__init__(attention.dtype)
        self.loops = _positive_int(loops, "loops", "LoopedBlock")
        self.add_child("attention", attention)
        self.add_child("norm", norm if norm is not None else Identity(dtype=attention.dtype))

    def forward(self, x: np.ndarray) -> np.ndarray:
        for _ in range(self.loops):
            x = self.norm(self.attention.forward_residual(x))  # x + attention(x), fused where possible
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        for _ in range(self.loops):
            dy = self.attention.backward_residual(self.norm.backward(dy))
        return dy
