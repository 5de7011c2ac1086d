"""LayerNorm, RMSNorm and DyT, forward and backward: pynorm, torch, NumPy, and pynorm's speed as
a fraction of the machine's copy bandwidth measured in the same process."""

import numpy as np

import pynorm.bench as pb

from .common import DTYPES, SHAPES, inputs, torch_or_skip

OPS = ["layer_norm", "rms_norm", "dyt"]
PASSES = ["forward", "backward"]


def _numpy_forward(op, x, w, b):
    if op == "layer_norm":
        return lambda: (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b
    if op == "rms_norm":
        return lambda: x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-6) * w
    return lambda: w * np.tanh(0.5 * x) + b


class NormKernels:
    params = (OPS, PASSES, SHAPES, DTYPES)
    param_names = ["op", "pass", "shape", "dtype"]
    timeout = 120

    def setup(self, op, pass_, shape, dtype):
        self.x, dy, w, b = inputs(shape, dtype)
        try:
            torch = torch_or_skip()
        except NotImplementedError:
            torch = None
        fwd, bwd, tfwd, tbwd = pb.norm_cases(torch)[op](self.x, w, b, dy)
        self.pynorm_fn, self.torch_fn = (fwd, tfwd) if pass_ == "forward" else (bwd, tbwd)
        numpy_ok = pass_ == "forward" and dtype != "bfloat16"
        self.numpy_fn = _numpy_forward(op, self.x, w, b) if numpy_ok else None
        self.bound = 1.0 if pass_ == "forward" else 1.5  # copies of x's bytes the pass must move

    def time_pynorm(self, *params):
        self.pynorm_fn()

    def time_torch(self, *params):
        if self.torch_fn is None:
            raise NotImplementedError("torch is not installed")
        self.torch_fn()

    def time_numpy(self, *params):
        if self.numpy_fn is None:
            raise NotImplementedError("no NumPy formulation for this pass/dtype")
        self.numpy_fn()

    def track_fraction_of_copy_bound(self, *params):
        """Copy time of the same bytes / pynorm's time, both measured now (1.0 = at the bound)."""
        try:
            torch = torch_or_skip()
        except NotImplementedError:
            torch = None
        return self.bound * pb.copy_seconds(self.x, torch) / pb.best_time(self.pynorm_fn, repeats=5)

    track_fraction_of_copy_bound.unit = "fraction"

    def track_speedup_over_torch(self, *params):
        if self.torch_fn is None:
            raise NotImplementedError("torch is not installed")
        return pb.best_time(self.torch_fn, repeats=5) / pb.best_time(self.pynorm_fn, repeats=5)

    track_speedup_over_torch.unit = "x"
