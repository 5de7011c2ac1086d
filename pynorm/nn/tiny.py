"""Two tiny transformers for the P2/P3 experiments: a causal character GPT and a ViT for
8 x 8 images (scikit-learn's digits). Both are pre-norm stacks of :class:`PreNormBlock`
with multi-head :class:`SoftmaxAttention` and a GELU (tanh form) FFN of width 4 d, learned
positional embeddings (N(0, 0.02^2)) and a final norm; every norm is ``make_norm(norm, d)``
(with affine), so one argument swaps LayerNorm / RMSNorm / DyT / the P2 halves / ablations.
"""

from __future__ import annotations

from typing import Any, List, Optional

import numpy as np

from .attention import SoftmaxAttention
from .blocks import PreNormBlock
from .layers import Embedding, FeedForward, Linear, _positive_int, _rng
from .module import Module, sum_leading
from .norms import make_norm


def _blocks(
    owner: Module,
    d: int,
    n_layers: int,
    n_heads: int,
    causal: bool,
    norm: str,
    alpha0: float,
    dtype: Any,
    rng: np.random.Generator,
) -> List[PreNormBlock]:
    blocks = []
    for i in range(n_layers):
        attention = SoftmaxAttention(d, n_heads, causal=causal, dtype=dtype, rng=rng)
        block = PreNormBlock(
            attention,
            FeedForward(d, 4 * d, "gelu_tanh", dtype=dtype, rng=rng),
            norm1=make_norm(norm, d, alpha0=alpha0, dtype=dtype),
            norm2=make_norm(norm, d, alpha0=alpha0, dtype=dtype),
        )
        blocks.append(owner.add_child(f"h{i}", block))
    return blocks


class TinyGPT(Module):
    """A causal language model: tied token embedding (N(0, 1), as :class:`Embedding`),
    learned positions, ``n_layers`` pre-norm blocks, a final norm, logits = h @ E^T.

    tokens (batch, T <= context) int -> logits (batch, T, vocab).
    """

    def __init__(
        self,
        vocab: int,
        d: int = 8,
        n_layers: int = 4,
        n_heads: int = 4,
        context: int = 32,
        *,
        norm: str = "layernorm",
        alpha0: float = 0.5,
        dtype: Any = np.float64,
        rng: Optional[np.random.Generator] = None,
    ):
        super().__init__(dtype)
        rng = _rng(rng)
        self.context = _positive_int(context, "context", "TinyGPT")
        self.add_child("embed", Embedding(vocab, d, tied=True, dtype=dtype, rng=rng))
        self.add_param("pos", 0.02 * rng.standard_normal((self.context, d)))
        self.blocks = _blocks(self, d, n_layers, n_heads, True, norm, alpha0, dtype, rng)
        self.add_child("norm_f", make_norm(norm, d, alpha0=alpha0, dtype=dtype))

    def forward(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or tokens.shape[1] > self.context:
            raise ValueError(f"TinyGPT: tokens must be (batch, T <= {self.context}), got {tokens.shape}")
        h = self.embed(tokens) + self.params["pos"][: tokens.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.embed.project(self.norm_f(h))

    def backward(self, dlogits: np.ndarray) -> None:
        dh = self.norm_f.backward(self.embed.project_backward(dlogits))
        for block in reversed(self.blocks):
            dh = block.backward(dh)
        self.grads["pos"][: dh.shape[1]] += sum_leading(dh, 2)
        self.embed.backward(dh)


class TinyViT(Module):
    """A ViT for small square images: non-overlapping ``patch`` x ``patch`` patches, a linear
    patch embedding, learned positions, ``n_layers`` pre-norm blocks, a final norm, mean
    pooling over patches (no class token) and a linear classifier.

    images (batch, size, size) -> logits (batch, classes).
    """

    def __init__(
        self,
        size: int = 8,
        patch: int = 2,
        classes: int = 10,
        d: int = 32,
        n_layers: int = 2,
        n_heads: int = 4,
        *,
        norm: str = "layernorm",
        alpha0: float = 0.5,
        dtype: Any = np.float64,
        rng: Optional[np.random.Generator] = None,
    ):
        super().__init__(dtype)
        if size % patch:
            raise ValueError(f"TinyViT: patch {patch} does not divide size {size}")
        rng = _rng(rng)
        self.size, self.patch = int(size), int(patch)
        self.n_patches = (self.size // self.patch) ** 2
        self.add_child("patch_embed", Linear(self.patch * self.patch, d, dtype=dtype, rng=rng))
        self.add_param("pos", 0.02 * rng.standard_normal((self.n_patches, d)))
        self.blocks = _blocks(self, d, n_layers, n_heads, False, norm, alpha0, dtype, rng)
        self.add_child("norm_f", make_norm(norm, d, alpha0=alpha0, dtype=dtype))
        self.add_child("head", Linear(d, classes, dtype=dtype, rng=rng))

    def patches(self, images: np.ndarray) -> np.ndarray:
        """(batch, size, size) -> (batch, n_patches, patch * patch), row-major patches."""
        b, g, p = len(images), self.size // self.patch, self.patch
        x = np.asarray(images, dtype=self.dtype).reshape(b, g, p, g, p)
        return x.transpose(0, 1, 3, 2, 4).reshape(b, g * g, p * p)

    def forward(self, images: np.ndarray) -> np.ndarray:
        h = self.patch_embed(self.patches(images)) + self.params["pos"]
        for block in self.blocks:
            h = block(h)
        h = self.norm_f(h)
        self.save(h.shape)
        return self.head(h.mean(1))

    def backward(self, dlogits: np.ndarray) -> None:
        (shape,) = self.saved()
        dpooled = self.head.backward(dlogits)
        dh = np.broadcast_to(dpooled[:, None, :] / shape[1], shape).copy()
        dh = self.norm_f.backward(dh)
        for block in reversed(self.blocks):
            dh = block.backward(dh)
        self.grads["pos"] += sum_leading(dh, 2)
        self.patch_embed.backward(dh)
