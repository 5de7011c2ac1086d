"""pynorm's kernels as torch operators: ``torch.ops.pynorm.*``.

Each op is a ``torch.library.custom_op`` whose implementation calls pynorm's public function
with the tensors themselves: pynorm's array layer reads CPU tensors as NumPy views of their
memory (no copy of a tensor whose last axis is contiguous; bfloat16 through an int16 view) and
sends CUDA tensors to the CUDA kernels on torch's current stream. So the argument checks, the
dtype conversions and the kernel calls are those of the NumPy API, in one place. The results
come back as NumPy arrays (CPU) or torch tensors (CUDA); CPU results are wrapped with
``torch.from_numpy``, again without a copy.

CPU outputs are allocated by pynorm, not by torch: pynorm keeps large output buffers for reuse
(``pynorm._array.OutputCache``: a buffer is reused only once nothing, a torch tensor included,
refers to it), while torch's CPU allocator hands out fresh pages for every large tensor, and
touching fresh pages costs more than the kernel itself.

Every forward op has a backward op (``*_backward``) on pynorm's backward kernels, connected by
``register_autograd``; the forward returns what the backward needs (LayerNorm's mean and rstd,
RMSNorm's rstd), which autograd saves. ``register_fake`` gives every op its output shapes and
dtypes, so that ``torch.compile(fullgraph=True)`` traces through them. The backward ops return
an empty (0,) tensor for the gradient of an absent weight or bias (an op cannot return None).
"""

from typing import Optional, Tuple

import numpy as np
import torch

import pynorm

try:  # pynorm returns bfloat16 results as ml_dtypes arrays (without ml_dtypes it refuses bfloat16)
    import ml_dtypes

    _BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - exercised only without ml_dtypes
    _BFLOAT16 = None

Tensor = torch.Tensor


def _as_tensor(a):
    """A pynorm result as a torch tensor: NumPy arrays wrapped without a copy, tensors as they are."""
    if not isinstance(a, np.ndarray):
        return a
    if _BFLOAT16 is not None and a.dtype == _BFLOAT16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _accumulate_dtype(x: Tensor) -> torch.dtype:
    """The dtype of pynorm's statistics and row sums: float64 for float64, float32 otherwise."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _grad_of(result, param: Optional[Tensor], like: Tensor) -> Tensor:
    """A parameter's gradient in the parameter's dtype and shape; (0,) when there is no parameter."""
    if param is None:
        return like.new_empty((0,))
    return _as_tensor(result).to(param.dtype).reshape(param.shape)


def _fake_grad(param: Optional[Tensor], like: Tensor) -> Tensor:
    return like.new_empty((0,)) if param is None else param.new_empty(param.shape)


def _present(grad: Tensor, param: Optional[Tensor]) -> Optional[Tensor]:
    """The gradient autograd gets for an optional input: None where there was no parameter."""
    return None if param is None else grad


def _detached(*tensors):
    return tuple(None if t is None else t.detach() for t in tensors)


# --- LayerNorm ---------------------------------------------------------------------------------


@torch.library.custom_op("pynorm::layer_norm", mutates_args=())
def layer_norm(
    x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float
) -> Tuple[Tensor, Tensor, Tensor]:
    """LayerNorm over the last axis: ``(y, mean, rstd)``, the statistics one per row."""
    x, weight, bias = _detached(x, weight, bias)
    return tuple(_as_tensor(a) for a in pynorm.layer_norm(x, weight, bias, eps, return_stats=True))


@layer_norm.register_fake
def _(x, weight, bias, eps):
    stats = x.new_empty(x.shape[:-1], dtype=_accumulate_dtype(x))
    return x.new_empty(x.shape), stats, torch.empty_like(stats)


@torch.library.custom_op("pynorm::layer_norm_backward", mutates_args=())
def layer_norm_backward(
    dy: Tensor, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor, rstd: Tensor, eps: float
) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`layer_norm`: ``(dx, dweight, dbias)`` from the saved mean and rstd."""
    dy, x, weight, bias, mean, rstd = _detached(dy, x, weight, bias, mean, rstd)
    dx, dweight, dbias = pynorm.layer_norm_backward(dy, x, weight, bias, eps, mean=mean, rstd=rstd)
    return _as_tensor(dx), _grad_of(dweight, weight, x), _grad_of(dbias, bias, x)


@layer_norm_backward.register_fake
def _(dy, x, weight, bias, mean, rstd, eps):
    return x.new_empty(x.shape), _fake_grad(weight, x), _fake_grad(bias, x)


def _layer_norm_setup(ctx, inputs, output):
    x, weight, bias, eps = inputs
    _, mean, rstd = output
    ctx.mark_non_differentiable(mean, rstd)
    ctx.save_for_backward(x, weight, bias, mean, rstd)
    ctx.eps = eps


def _layer_norm_grad(ctx, dy, _dmean, _drstd):
    x, weight, bias, mean, rstd = ctx.saved_tensors
    dx, dweight, dbias = torch.ops.pynorm.layer_norm_backward(dy, x, weight, bias, mean, rstd, ctx.eps)
    return dx, _present(dweight, weight), _present(dbias, bias), None


layer_norm.register_autograd(_layer_norm_grad, setup_context=_layer_norm_setup)


# --- RMSNorm -----------------------------------------------------------------------------------


@torch.library.custom_op("pynorm::rms_norm", mutates_args=())
def rms_norm(x: Tensor, weight: Optional[Tensor], eps: float) -> Tuple[Tensor, Tensor]:
    """RMSNorm over the last axis: ``(y, rstd)``, rstd one per row."""
    x, weight = _detached(x, weight)
    return tuple(_as_tensor(a) for a in pynorm.rms_norm(x, weight, eps, return_stats=True))


@rms_norm.register_fake
def _(x, weight, eps):
    return x.new_empty(x.shape), x.new_empty(x.shape[:-1], dtype=_accumulate_dtype(x))


@torch.library.custom_op("pynorm::rms_norm_backward", mutates_args=())
def rms_norm_backward(
    dy: Tensor, x: Tensor, weight: Optional[Tensor], rstd: Tensor, eps: float
) -> Tuple[Tensor, Tensor]:
    """Gradients of :func:`rms_norm`: ``(dx, dweight)`` from the saved rstd."""
    dy, x, weight, rstd = _detached(dy, x, weight, rstd)
    dx, dweight = pynorm.rms_norm_backward(dy, x, weight, eps, rstd=rstd)
    return _as_tensor(dx), _grad_of(dweight, weight, x)


@rms_norm_backward.register_fake
def _(dy, x, weight, rstd, eps):
    return x.new_empty(x.shape), _fake_grad(weight, x)


def _rms_norm_setup(ctx, inputs, output):
    x, weight, eps = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(x, weight, output[1])
    ctx.eps = eps


def _rms_norm_grad(ctx, dy, _drstd):
    x, weight, rstd = ctx.saved_tensors
    dx, dweight = torch.ops.pynorm.rms_norm_backward(dy, x, weight, rstd, ctx.eps)
    return dx, _present(dweight, weight), None


rms_norm.register_autograd(_rms_norm_grad, setup_context=_rms_norm_setup)


# --- DyT ---------------------------------------------------------------------------------------


@torch.library.custom_op("pynorm::dyt", mutates_args=())
def dyt(x: Tensor, alpha: Tensor, weight: Optional[Tensor], bias: Optional[Tensor]) -> Tensor:
    """DyT over the last axis: ``weight * tanh(alpha * x) + bias``; alpha a one-element tensor
    (read on the host: on CUDA that synchronises with the stream)."""
    x, alpha, weight, bias = _detached(x, alpha, weight, bias)
    return _as_tensor(pynorm.dyt(x, alpha, weight, bias))


@dyt.register_fake
def _(x, alpha, weight, bias):
    return x.new_empty(x.shape)


@torch.library.custom_op("pynorm::dyt_backward", mutates_args=())
def dyt_backward(
    dy: Tensor, x: Tensor, alpha: Tensor, weight: Optional[Tensor], bias: Optional[Tensor]
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients of :func:`dyt`: ``(dx, dalpha, dweight, dbias)`` (tanh recomputed from x)."""
    dy, x, alpha, weight, bias = _detached(dy, x, alpha, weight, bias)
    dx, dalpha, dweight, dbias = pynorm.dyt_backward(dy, x, alpha, weight, bias)
    return _as_tensor(dx), _grad_of(dalpha, alpha, x), _grad_of(dweight, weight, x), _grad_of(dbias, bias, x)


@dyt_backward.register_fake
def _(dy, x, alpha, weight, bias):
    return x.new_empty(x.shape), alpha.new_empty(alpha.shape), _fake_grad(weight, x), _fake_grad(bias, x)


def _dyt_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _dyt_grad(ctx, dy):
    x, alpha, weight, bias = ctx.saved_tensors
    dx, dalpha, dweight, dbias = torch.ops.pynorm.dyt_backward(dy, x, alpha, weight, bias)
    return dx, dalpha, _present(dweight, weight), _present(dbias, bias)


dyt.register_autograd(_dyt_grad, setup_context=_dyt_setup)


# --- linear attention --------------------------------------------------------------------------


@torch.library.custom_op("pynorm::linear_attention", mutates_args=())
def linear_attention(
    q: Tensor, k: Tensor, v: Tensor, causal: bool, normalize: bool, eps: float, scale: float
) -> Tensor:
    """Linear attention (see :func:`pynorm.linear_attention`): out of shape (..., N, Dv)."""
    q, k, v = _detached(q, k, v)
    return _as_tensor(pynorm.linear_attention(q, k, v, causal=causal, normalize=normalize, eps=eps, scale=scale))


@linear_attention.register_fake
def _(q, k, v, causal, normalize, eps, scale):
    return q.new_empty(q.shape[:-1] + v.shape[-1:])


@torch.library.custom_op("pynorm::linear_attention_backward", mutates_args=())
def linear_attention_backward(
    dout: Tensor, q: Tensor, k: Tensor, v: Tensor, causal: bool, normalize: bool, eps: float, scale: float
) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`linear_attention`: ``(dq, dk, dv)`` (recomputed from q, k, v)."""
    dout, q, k, v = _detached(dout, q, k, v)
    grads = pynorm.linear_attention_backward(dout, q, k, v, causal=causal, normalize=normalize, eps=eps, scale=scale)
    return tuple(_as_tensor(g) for g in grads)


@linear_attention_backward.register_fake
def _(dout, q, k, v, causal, normalize, eps, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _linear_attention_setup(ctx, inputs, output):
    q, k, v, *ctx.options = inputs
    ctx.save_for_backward(q, k, v)


def _linear_attention_grad(ctx, dout):
    q, k, v = ctx.saved_tensors
    dq, dk, dv = torch.ops.pynorm.linear_attention_backward(dout, q, k, v, *ctx.options)
    return dq, dk, dv, None, None, None, None


linear_attention.register_autograd(_linear_attention_grad, setup_context=_linear_attention_setup)

FORWARD_OPS = (layer_norm, rms_norm, dyt, linear_attention)
BACKWARD_OPS = (layer_norm_backward, rms_norm_backward, dyt_backward, linear_attention_backward)
