"""torch re-implementations of every pynorm.nn layer, loss and optimizer, for the twin.

Imported only from inside :mod:`pynorm.nn.twin`'s functions (this module imports torch at
its top, so importing pynorm.nn never does). Each torch module is written independently
with torch's own ops and autograd -- no pynorm kernel is called -- and registers its
parameters and children under the SAME names as the NumPy module, so that
``named_parameters()`` agree name for name.
"""

from __future__ import annotations

from typing import Callable, Dict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import attention, blocks, layers, losses, models, norms, optim, tiny
from .module import Module


class TwinModule(nn.Module):
    """A torch module with the NumPy module's parameters (copied) and children (converted)."""

    def __init__(self, source: Module):
        super().__init__()
        for name, value in source.params.items():
            self.register_parameter(name, nn.Parameter(torch.from_numpy(value.copy())))
        for name, child in source.children().items():
            self.add_module(name, to_torch(child))

    def opt(self, name: str):
        """Parameter ``name`` or None."""
        return self._parameters.get(name)


class Linear(TwinModule):
    def forward(self, x):
        return F.linear(x, self.weight, self.opt("bias"))


class Embedding(TwinModule):
    def forward(self, ids):
        return self.weight[ids]

    def project(self, h):
        return h @ self.weight.T


class Activation(TwinModule):
    def __init__(self, source):
        super().__init__(source)
        self.kind = source.kind

    def forward(self, x):
        return F.relu(x) if self.kind == "relu" else F.gelu(x, approximate="tanh")


class FeedForward(TwinModule):
    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class LayerNorm(TwinModule):
    def __init__(self, source):
        super().__init__(source)
        self.center, self.scale, self.eps = source.center, source.scale, source.eps

    def forward(self, x):
        if self.center:
            x = x - x.mean(-1, keepdim=True)
        if self.scale:
            x = x / torch.sqrt((x * x).mean(-1, keepdim=True) + self.eps)
        if self.opt("weight") is not None:
            x = x * self.weight
        if self.opt("bias") is not None:
            x = x + self.bias
        return x


class RMSNorm(TwinModule):
    def __init__(self, source):
        super().__init__(source)
        self.eps = source.eps

    def forward(self, x):
        x = x / torch.sqrt((x * x).mean(-1, keepdim=True) + self.eps)
        return x * self.weight if self.opt("weight") is not None else x


class L2Norm(TwinModule):
    def __init__(self, source):
        super().__init__(source)
        self.eps = source.eps

    def forward(self, x):
        return x / torch.sqrt((x * x).sum(-1, keepdim=True) + self.eps)


class DyT(TwinModule):
    def forward(self, x):
        y = torch.tanh(self.alpha * x)
        if self.opt("weight") is not None:
            y = y * self.weight
        return y + self.bias if self.opt("bias") is not None else y


class Squash(TwinModule):
    def __init__(self, source):
        super().__init__(source)
        self.kind = source.kind
        if not source.learn_alpha:
            self.register_buffer("fixed_alpha", torch.from_numpy(source.alpha.copy()))

    def forward(self, x):
        alpha = self.opt("alpha") if self.opt("alpha") is not None else self.fixed_alpha
        z = alpha * x
        f = {"tanh": torch.tanh, "hardtanh": F.hardtanh, "sigmoid": torch.sigmoid}[self.kind](z)
        return f * self.weight + self.bias


class Identity(TwinModule):
    def forward(self, x):
        return x


def linear_attention(q, k, v, *, causal, normalize, eps, scale):
    """pynorm.linear_attention's contract, with the N x N scores."""
    scores = q @ k.transpose(-1, -2)
    if causal:
        scores = torch.tril(scores)
    out = scale * (scores @ v)
    return out / (scale * scores.sum(-1, keepdim=True) + eps) if normalize else out


class LinearAttention(TwinModule):
    def __init__(self, source):
        super().__init__(source)
        self.merged = source.parametrization == "merged"
        self.kernel_args = dict(source.kernel_args)

    def forward(self, x):
        if self.merged:
            return linear_attention(x @ self.W.T, x, x @ self.V.T, **self.kernel_args)
        out = linear_attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), **self.kernel_args)
        return self.out_proj(out)


class SoftmaxAttention(TwinModule):
    def __init__(self, source):
        super().__init__(source)
        self.n_heads, self.head_dim, self.causal = source.n_heads, source.head_dim, source.causal

    def forward(self, x):
        def split(a):
            return a.reshape(*a.shape[:-1], self.n_heads, self.head_dim).transpose(-2, -3)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out_proj(out.transpose(-2, -3).reshape(x.shape))


class PreNormBlock(TwinModule):
    def forward(self, x):
        h = x + self.mixer(self.norm1(x))
        return h + self.ffn(self.norm2(h)) if hasattr(self, "ffn") else h


class LoopedBlock(TwinModule):
    def __init__(self, source):
        super().__init__(source)
        self.loops = source.loops

    def forward(self, x):
        for _ in range(self.loops):
            x = self.norm(x + self.attention(x))
        return x


class LoopedTransformer(TwinModule):
    def __init__(self, source):
        super().__init__(source)
        self.d = source.d

    def forward(self, X, a):
        batch, _, n = X.shape
        tokens = torch.cat(
            [
                torch.cat([X.transpose(1, 2), torch.zeros_like(X.transpose(1, 2))], dim=2),
                torch.cat([torch.zeros_like(a), a], dim=1)[:, None, :],
            ],
            dim=1,
        )
        return self.block(tokens)[:, -1, self.d :]


class TinyGPT(TwinModule):
    def __init__(self, source):
        super().__init__(source)
        self.n_blocks = len(source.blocks)

    def forward(self, tokens):
        h = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for i in range(self.n_blocks):
            h = getattr(self, f"h{i}")(h)
        return self.embed.project(self.norm_f(h))


class TinyViT(TwinModule):
    def __init__(self, source):
        super().__init__(source)
        self.n_blocks, self.size, self.patch = len(source.blocks), source.size, source.patch

    def forward(self, images):
        b, g, p = images.shape[0], self.size // self.patch, self.patch
        x = images.reshape(b, g, p, g, p).permute(0, 1, 3, 2, 4).reshape(b, g * g, p * p)
        h = self.patch_embed(x) + self.pos
        for i in range(self.n_blocks):
            h = getattr(self, f"h{i}")(h)
        return self.head(self.norm_f(h).mean(1))


class MajorityTransformer(TwinModule):
    def forward(self, tokens):
        return self.embed.project(self.block(self.embed(tokens)))


_TWINS: Dict[type, Callable[[Module], nn.Module]] = {
    layers.Linear: Linear,
    layers.Embedding: Embedding,
    layers.Activation: Activation,
    layers.FeedForward: FeedForward,
    norms.LayerNorm: LayerNorm,
    norms.RMSNorm: RMSNorm,
    norms.L2Norm: L2Norm,
    norms.DyT: DyT,
    norms.Identity: Identity,
    norms.Squash: Squash,
    attention.LinearAttention: LinearAttention,
    attention.SoftmaxAttention: SoftmaxAttention,
    blocks.PreNormBlock: PreNormBlock,
    blocks.LoopedBlock: LoopedBlock,
    models.LoopedTransformer: LoopedTransformer,
    models.MajorityTransformer: MajorityTransformer,
    tiny.TinyGPT: TinyGPT,
    tiny.TinyViT: TinyViT,
}


def to_torch(module: Module) -> nn.Module:
    """The torch twin of a pynorm.nn module (parameters copied, same names)."""
    twin = _TWINS.get(type(module))
    if twin is None:
        raise TypeError(f"no torch twin for {type(module).__name__}; known: {sorted(t.__name__ for t in _TWINS)}")
    return twin(module)


def loss_fn(loss: losses.Loss) -> Callable:
    """The torch twin of a pynorm.nn loss, as a function (pred, target) -> scalar tensor."""
    if isinstance(loss, losses.MSELoss):
        return F.mse_loss
    if isinstance(loss, losses.CrossEntropyLoss):
        return lambda logits, labels: F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    if isinstance(loss, losses.SubspaceDistanceLoss):

        def subspace_distance(y, basis):
            if loss.normalize:
                y = y / torch.linalg.vector_norm(y, dim=-1, keepdim=True)
            basis = basis if basis.ndim == 3 else basis[..., None]
            residual = y - (basis @ (basis.transpose(1, 2) @ y[..., None]))[..., 0]
            return (residual * residual).sum(-1).mean()

        return subspace_distance
    raise TypeError(f"no torch twin for loss {type(loss).__name__}")


def optimizer(source: optim.Optimizer, model: nn.Module):
    """(torch optimizer, LambdaLR scheduler) matching ``source`` on the twin ``model``:
    one parameter group per weight-decay value, the same schedule function."""
    params = dict(model.named_parameters())
    groups: Dict[float, list] = {}
    for name, decay in source.weight_decay.items():
        groups.setdefault(decay, []).append(params[name])
    param_groups = [{"params": p, "weight_decay": decay} for decay, p in groups.items()]
    if isinstance(source, optim.SGD):
        opt = torch.optim.SGD(param_groups, lr=source.lr, momentum=source.momentum)
    elif isinstance(source, optim.Adam):
        cls = torch.optim.AdamW if source.decoupled else torch.optim.Adam
        opt = cls(param_groups, lr=source.lr, betas=source.betas, eps=source.eps)
    else:
        raise TypeError(f"no torch twin for optimizer {type(source).__name__}")
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, source.schedule)


def tensor(value: np.ndarray) -> torch.Tensor:
    """A NumPy batch array as a torch tensor (copied)."""
    return torch.from_numpy(np.array(value))


def clip(model: nn.Module, max_norm: float) -> None:
    """torch's clipping of the twin's gradients by global norm."""
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
