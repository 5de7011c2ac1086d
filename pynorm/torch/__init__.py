"""pynorm's kernels inside torch: operators, differentiable functions and nn modules.

    import pynorm.torch as pt
    model = pt.replace_norms(model) and model   # or build with pt.LayerNorm / pt.RMSNorm / pt.DyT
    y = pt.layer_norm(x, (dim,), weight, bias)  # torch.nn.functional's signature

Importing this module registers ``torch.ops.pynorm.{layer_norm, rms_norm, dyt,
linear_attention}`` and their ``*_backward`` ops (``torch.library.custom_op``, with autograd
and fake implementations, so ``torch.compile(fullgraph=True)``, DDP and FSDP treat them like
torch's own). CPU tensors run on pynorm's CPU kernels with no copy of contiguous inputs; CUDA
tensors on pynorm's CUDA kernels, on torch's current stream. dtypes: float32, float64, float16
and bfloat16 (16-bit storage, float32 arithmetic). Threads: ``pynorm.set_num_threads``; by
default OpenMP's setting, which ``torch.set_num_threads`` also sets. See docs/torch.md.

``import pynorm`` alone never imports torch; this module does.
"""

try:
    import torch  # noqa: F401  (the ops below are registered with it)
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError("pynorm.torch needs torch: pip install torch (or pip install 'pynorm[torch]')") from e

from . import _ops as ops
from .functional import dyt, layer_norm, linear_attention, rms_norm
from .modules import DyT, LayerNorm, RMSNorm, replace_norms

__all__ = ["DyT", "LayerNorm", "RMSNorm", "dyt", "layer_norm", "linear_attention", "ops", "replace_norms", "rms_norm"]
