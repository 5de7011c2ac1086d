"""The CUDA kernels in the asv suite: pynorm vs torch eager and a device-to-device copy of the
same bytes, on torch CUDA tensors. Without torch, a CUDA device or a usable pynorm._cuda,
setup raises NotImplementedError (asv reports the benchmarks as skipped). Fuller comparisons
(torch.compile, Liger-Kernel, flash-linear-attention): ``python -m pynorm.bench_cuda``."""

import pynorm.bench_cuda as pbc

OPS = ["layer_norm", "rms_norm", "dyt"]
PASSES = ["forward", "backward"]
SHAPES = ["4096x4096", "16384x1024", "8192x16384"]
DTYPES = ["float32", "bfloat16"]


def _cuda_or_skip():
    reason = pbc.unavailable_reason()
    if reason:
        raise NotImplementedError(reason)
    import torch

    return torch


class CudaNormKernels:
    params = (OPS, PASSES, SHAPES, DTYPES)
    param_names = ["op", "pass", "shape", "dtype"]
    timeout = 300

    def setup(self, op, pass_, shape, dtype):
        torch = _cuda_or_skip()
        import torch.nn.functional as F

        import pynorm

        rows, dim = (int(s) for s in shape.split("x"))
        t = getattr(torch, dtype)
        self.torch = torch
        x, dy = (torch.randn(rows, dim, device="cuda").to(t) for _ in range(2))
        w, b = (torch.randn(dim, device="cuda").to(t) for _ in range(2))
        out = torch.empty_like(x)
        self.copy = lambda: out.copy_(x)
        if pass_ == "forward":
            self.pynorm_fn = {
                "layer_norm": lambda: pynorm.layer_norm(x, w, b),
                "rms_norm": lambda: pynorm.rms_norm(x, w),
                "dyt": lambda: pynorm.dyt(x, 0.7, w, b),
            }[op]
            self.torch_fn = {
                "layer_norm": lambda: F.layer_norm(x, (dim,), w, b),
                "rms_norm": lambda: F.rms_norm(x, (dim,), w, 1e-6),
                "dyt": lambda: w * torch.tanh(0.7 * x) + b,
            }[op]
        else:
            self.pynorm_fn = {
                "layer_norm": lambda: pynorm.layer_norm_backward(dy, x, w, b),
                "rms_norm": lambda: pynorm.rms_norm_backward(dy, x, w),
                "dyt": lambda: pynorm.dyt_backward(dy, x, 0.7, w, b),
            }[op]
            xl, wl, bl = (a.detach().requires_grad_() for a in (x, w, b))
            y = {
                "layer_norm": lambda: F.layer_norm(xl, (dim,), wl, bl),
                "rms_norm": lambda: F.rms_norm(xl, (dim,), wl, 1e-6),
                "dyt": lambda: wl * torch.tanh(0.7 * xl) + bl,
            }[op]()
            inputs = (xl, wl) if op == "rms_norm" else (xl, wl, bl)
            self.torch_fn = lambda: torch.autograd.grad(y, inputs, dy, retain_graph=True)
        self.bound = 1.0 if pass_ == "forward" else 1.5
        self.pynorm_fn()
        torch.cuda.synchronize()

    def _synced(self, fn):
        fn()
        self.torch.cuda.synchronize()

    def time_pynorm(self, *params):
        self._synced(self.pynorm_fn)

    def time_torch(self, *params):
        self._synced(self.torch_fn)

    def track_pynorm_fraction_of_copy_bound(self, *params):
        """bound copies' time / pynorm's time, both measured here with CUDA events."""
        copy_s = pbc.gpu_time([self.copy])
        return self.bound * copy_s / pbc.gpu_time([self.pynorm_fn])

    track_pynorm_fraction_of_copy_bound.unit = "fraction"
