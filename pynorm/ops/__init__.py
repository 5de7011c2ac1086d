"""The functional API: one module per op, each with its forward and *_backward."""

from .cross_entropy import cross_entropy, cross_entropy_backward
from .dyt import dyt, dyt_backward
from .linear_attention import linear_attention, linear_attention_backward
from .matmul import matmul
from .merged_attention import merged_linear_attention, merged_linear_attention_backward
from .norm import layer_norm, layer_norm_backward, rms_norm, rms_norm_backward
from .softmax_attention import softmax_attention, softmax_attention_backward

__all__ = [
    "cross_entropy",
    "cross_entropy_backward",
    "dyt",
    "dyt_backward",
    "layer_norm",
    "layer_norm_backward",
    "linear_attention",
    "linear_attention_backward",
    "matmul",
    "merged_linear_attention",
    "merged_linear_attention_backward",
    "rms_norm",
    "rms_norm_backward",
    "softmax_attention",
    "softmax_attention_backward",
]
