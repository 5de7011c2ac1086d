"""pynorm.nn: a small NumPy trainer on pynorm's kernels, with a torch twin.

Layers keep what their backward needs, ``backward(dy)`` returns dx and ADDS to the layers'
parameter gradients; parameters and gradients are plain NumPy arrays
(``layer.params`` / ``layer.grads``; ``model.parameters()`` / ``model.gradients()`` by dotted
name). float32 and float64. torch is never imported by pynorm.nn itself, only by
:mod:`pynorm.nn.twin` (and only inside its functions).
"""

from .attention import LinearAttention, SoftmaxAttention, linear_attention, linear_attention_backward
from .blocks import LoopedBlock, PreNormBlock
from .data import majority_data, majority_partitions, power_method_data, stratified_split
from .layers import Activation, Embedding, FeedForward, Linear
from .losses import CrossEntropyLoss, MSELoss, SubspaceDistanceLoss, accuracy
from .models import (
    EXPERIMENTS,
    Experiment,
    LoopedConfig,
    LoopedTransformer,
    MajorityConfig,
    MajorityTransformer,
    build_experiment,
)
from .module import Module
from .norms import DyT, Identity, L2Norm, LayerNorm, RMSNorm, Squash, make_norm
from .optim import SGD, Adam, AdamW, clip_grad_norm, make_schedule
from .tiny import TinyGPT, TinyViT
from .train import Trainer, TrainConfig

__all__ = [
    "EXPERIMENTS",
    "Activation",
    "Adam",
    "AdamW",
    "CrossEntropyLoss",
    "DyT",
    "Embedding",
    "Experiment",
    "FeedForward",
    "Identity",
    "L2Norm",
    "LayerNorm",
    "Linear",
    "LinearAttention",
    "LoopedBlock",
    "LoopedConfig",
    "LoopedTransformer",
    "MSELoss",
    "MajorityConfig",
    "MajorityTransformer",
    "Module",
    "PreNormBlock",
    "RMSNorm",
    "SGD",
    "SoftmaxAttention",
    "Squash",
    "TinyGPT",
    "TinyViT",
    "SubspaceDistanceLoss",
    "TrainConfig",
    "Trainer",
    "accuracy",
    "build_experiment",
    "clip_grad_norm",
    "linear_attention",
    "linear_attention_backward",
    "majority_data",
    "majority_partitions",
    "make_norm",
    "make_schedule",
    "power_method_data",
    "stratified_split",
]
