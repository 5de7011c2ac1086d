"""Attention layers: linear attention (P1's merged V, W form, or Q/K/V projections) and
multi-head softmax attention. Inputs are (..., N, dim): one token per row."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

import pynorm as _pynorm

from .layers import Linear, _positive_int, _rng
from .module import Module

linear_attention = _pynorm.linear_attention
linear_attention_backward = _pynorm.linear_attention_backward


class LinearAttention(Module):
    """Linear (softmax-free) self-attention, ``out_i = scale * sum_j (q_i . k_j) v_j``.

    parametrization:
      * ``"merged"`` -- P1's ``V E E^T W E``: queries ``W e``, keys ``e``, values ``V e``,
        with V, W of shape (dim, dim) exactly as in the paper (E's columns are tokens;
        here tokens are rows, so the layer computes ``(V E E^T W E)^T``). No output projection.
      * ``"qkv"`` -- Linear projections q, k (dim -> key_dim), v (dim -> value_dim) and an
        output projection (value_dim -> dim); ``bias`` applies to all four.

    ``causal``, ``normalize``, ``eps`` and ``scale`` are passed to the kernel. The merged form,
    non-causal and unnormalised (P1's), runs on :func:`pynorm.merged_linear_attention`, which
    also fuses the residual of :meth:`forward_residual`; otherwise the merged projections are
    :func:`pynorm.matmul` products around :func:`pynorm.linear_attention`.
    """

    PARAMETRIZATIONS = ("merged", "qkv")

    def __init__(
        self,
        dim: int,
        *,
        parametrization: str = "merged",
        causal: bool = False,
        normalize: bool = False,
        eps: float = 1e-6,
        scale: float = 1.0,
        key_dim: Optional[int] = None,
        value_dim: Optional[int] = None,
        bias: bool = False,
        init_std: float = 0.02,
        dtype: Any = np.float64,
        rng: Optional[np.random.Generator] = None,
    ):
        super().__init__(dtype)
        if parametrization not in self.PARAMETRIZATIONS:
            raise ValueError(
                f"LinearAttention: unknown parametrization {parametrization!r}; choose one of {self.PARAMETRIZATIONS}"
            )
        self.dim = _positive_int(dim, "dim", "LinearAttention")
        self.parametrization = parametrization
        self.kernel_args = dict(causal=bool(causal), normalize=bool(normalize), eps=float(eps), scale=float(scale))
        rng = _rng(rng)
        if parametrization == "merged":
            if key_dim is not None or value_dim is not None:
                raise ValueError("LinearAttention: key_dim / value_dim need parametrization='qkv'")
            self.add_param("V", init_std * rng.standard_normal((self.dim, self.dim)))
            self.add_param("W", init_std * rng.standard_normal((self.dim, self.dim)))
        else:
            key_dim, value_dim = key_dim or self.dim, value_dim or self.dim
            for name, width in (("q_proj", key_dim), ("k_proj", key_dim), ("v_proj", value_dim)):
                self.add_child(name, Linear(self.dim, width, bias, dtype=dtype, rng=rng))
            self.add_child("out_proj", Linear(value_dim, self.dim, bias, dtype=dtype, rng=rng))

    @property
    def fused(self) -> bool:
        """Whether the layer runs on pynorm.merged_linear_attention (P1's merged form,
        non-causal, unnormalised): projections, attention and their gradients in one kernel."""
        return self.parametrization == "merged" and not self.kernel_args["causal"] and not self.kernel_args["normalize"]

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._forward(x, False)

    def forward_residual(self, x: np.ndarray) -> np.ndarray:
        return self._forward(x, True) if self.fused else super().forward_residual(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return self._backward(dy, False)

    def backward_residual(self, dy: np.ndarray) -> np.ndarray:
        return self._backward(dy, True) if self.fused else super().backward_residual(dy)

    def _forward(self, x: np.ndarray, residual: bool) -> np.ndarray:
        x = self.check_input(x, self.dim)
        if x.ndim < 2:
            raise ValueError(f"LinearAttention: x must have shape (..., N, {self.dim}), got {x.shape}")
        if self.fused:
            self.save(x)
            return _pynorm.merged_linear_attention(
                x, self.params["W"], self.params["V"], scale=self.kernel_args["scale"], residual=residual
            )
        if self.parametrization == "merged":  # q and v from ONE product: x [W^T V^T]
            qv = _pynorm.matmul(x, np.concatenate([self.params["W"].T, self.params["V"].T], axis=1))
            q, k, v = qv[..., : self.dim], x, qv[..., self.dim :]
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        self.save(x, q, k, v)
        out = linear_attention(q, k, v, **self.kernel_args)
        return out if self.parametrization == "merged" else self.out_proj(out)

    def _backward(self, dy: np.ndarray, residual: bool) -> np.ndarray:
        if self.fused:
            (x,) = self.saved()
            dx, dW, dV = _pynorm.merged_linear_attention_backward(
                dy, x, self.params["W"], self.params["V"], scale=self.kernel_args["scale"], residual=residual
            )
            self.accumulate("W", dW)
            self.accumulate("V", dV)
            return dx
        x, q, k, v = self.saved()
        if self.parametrization == "qkv":
            dy = self.out_proj.backward(dy)
        dq, dk, dv = linear_attention_backward(dy, q, k, v, **self.kernel_args)
        if self.parametrization == "qkv":
            return self.q_proj.backward(dq) + self.k_proj.backward(dk) + self.v_proj.backward(dv)
        self.accumulate("W", _pynorm.matmul(dq, x, transpose_a=True))
        self.accumulate("V", _pynorm.matmul(dv, x, transpose_a=True))
        return _pynorm.matmul(dq, self.params["W"], add=_pynorm.matmul(dv, self.params["V"], add=dk))


class SoftmaxAttention(Module):
    """Multi-head scaled dot-product self-attention, as torch's ``nn.MultiheadAttention``
    computes it: ``softmax(q k^T / sqrt(head_dim) + mask) v`` per head, then an output
    projection. The attention runs on :func:`pynorm.softmax_attention` (its backward recomputes
    the probabilities, so only q, k and v are saved); the projections are NumPy.

    ``causal`` masks future tokens; ``qkv_bias`` / ``out_bias`` switch the biases of the
    input and output projections.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int = 1,
        *,
        causal: bool = False,
        qkv_bias: bool = True,
        out_bias: bool = True,
        dtype: Any = np.float64,
        rng: Optional[np.random.Generator] = None,
    ):
        super().__init__(dtype)
        self.dim = _positive_int(dim, "dim", "SoftmaxAttention")
        self.n_heads = _positive_int(n_heads, "n_heads", "SoftmaxAttention")
        if self.dim % self.n_heads:
            raise ValueError(f"SoftmaxAttention: dim {self.dim} is not divisible by n_heads {self.n_heads}")
        self.head_dim = self.dim // self.n_heads
        self.causal = bool(causal)
        rng = _rng(rng)
        for name in ("q_proj", "k_proj", "v_proj"):
            self.add_child(name, Linear(self.dim, self.dim, qkv_bias, dtype=dtype, rng=rng))
        self.add_child("out_proj", Linear(self.dim, self.dim, out_bias, dtype=dtype, rng=rng))

    def _split(self, a: np.ndarray) -> np.ndarray:  # (..., N, dim) -> (..., heads, N, head_dim)
        return np.swapaxes(a.reshape(*a.shape[:-1], self.n_heads, self.head_dim), -2, -3)

    def _merge(self, a: np.ndarray) -> np.ndarray:  # the inverse of _split
        a = np.swapaxes(a, -2, -3)
        return a.reshape(*a.shape[:-2], self.dim)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.check_input(x, self.dim)
        if x.ndim < 2:
            raise ValueError(f"SoftmaxAttention: x must have shape (..., N, {self.dim}), got {x.shape}")
        q, k, v = (self._split(p(x)) for p in (self.q_proj, self.k_proj, self.v_proj))
        self.save(q, k, v)
        return self.out_proj(self._merge(_pynorm.softmax_attention(q, k, v, causal=self.causal)))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        q, k, v = self.saved()
        dout = self._split(self.out_proj.backward(dy))
        dq, dk, dv = _pynorm.softmax_attention_backward(dout, q, k, v, causal=self.causal)
        return (
            self.q_proj.backward(self._merge(dq))
            + self.k_proj.backward(self._merge(dk))
            + self.v_proj.backward(self._merge(dv))
        )
