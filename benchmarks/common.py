"""Shared set-up for the asv suite: shapes, dtypes, inputs, and the thread count.

Every benchmark runs pynorm and its comparison (torch, or NumPy where a NumPy formulation
exists) as separate benchmarks in the same asv run, with 2 threads each. Benchmarks whose
comparison library is missing raise NotImplementedError, which asv reports as skipped.
"""

import numpy as np

import pynorm

THREADS = 2
# small (in L1/L2), transformer-sized (exceeds L2), cache-exceeding (exceeds the 32 MiB L3 in float32)
SHAPES = ["64x256", "4096x1024", "16384x1024"]
DTYPES = ["float32", "float64", "bfloat16"]


def torch_or_skip():
    try:
        import torch
    except ImportError:
        raise NotImplementedError("torch is not installed") from None
    torch.set_num_threads(THREADS)
    return torch


def parse_shape(shape):
    return tuple(int(s) for s in shape.split("x"))


def np_dtype(name):
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise NotImplementedError("ml_dtypes is not installed") from None
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def inputs(shape, dtype, seed=0):
    """x, dy, weight, bias of the given shape string and dtype name."""
    pynorm.set_num_threads(THREADS)
    rng = np.random.default_rng(seed)
    rows, dim = parse_shape(shape)
    dt = np_dtype(dtype)
    return (
        rng.standard_normal((rows, dim)).astype(dt),
        rng.standard_normal((rows, dim)).astype(dt),
        (1 + 0.1 * rng.standard_normal(dim)).astype(dt),
        (0.1 * rng.standard_normal(dim)).astype(dt),
    )
