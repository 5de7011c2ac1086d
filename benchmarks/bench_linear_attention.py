"""Linear attention, forward and backward, causal and not: pynorm, torch's chunked form, and
pynorm's GFLOP/s as a fraction of NumPy's float32 matmul rate measured in the same process."""

import numpy as np

import pynorm
import pynorm.bench as pb

from .common import THREADS, np_dtype, torch_or_skip

SHAPES = ["8x128x32", "32x2048x64"]  # problems (batch x heads) x tokens x dim: the trainer's, a transformer's


def _chunked_torch(torch, q, k, v, causal):
    """torch's best formulation of the same algorithm: q (k^T v), or chunk-64 states + masked chunks."""
    if not causal:
        return q @ (k.transpose(-1, -2) @ v)
    c = pb.LA_CHUNK
    n = q.shape[-2] // c
    qc, kc, vc = (x.reshape(x.shape[:-2] + (n, c, x.shape[-1])) for x in (q, k, v))
    kv = kc.transpose(-1, -2) @ vc
    mask = torch.tril(torch.ones(c, c, dtype=torch.bool))
    scores = (qc @ kc.transpose(-1, -2)).masked_fill(~mask, 0)
    return (qc @ (kv.cumsum(-3) - kv) + scores @ vc).reshape(q.shape[:-1] + v.shape[-1:])


class LinearAttention:
    params = (["causal", "non-causal"], ["forward", "backward"], SHAPES, ["float32", "float64"])
    param_names = ["mask", "pass", "shape", "dtype"]
    timeout = 180

    def setup(self, mask, pass_, shape, dtype):
        pynorm.set_num_threads(THREADS)
        problems, n, d = (int(s) for s in shape.split("x"))
        rng = np.random.default_rng(0)
        self.q, self.k, self.v, self.dout = (
            (0.3 * rng.standard_normal((problems, n, d))).astype(np_dtype(dtype)) for _ in range(4)
        )
        self.causal = mask == "causal"
        self.backward = pass_ == "backward"
        self.flops = pb.linear_attention_flops(problems, n, d, d, self.causal, self.backward)

    def _pynorm(self):
        if self.backward:
            return pynorm.linear_attention_backward(self.dout, self.q, self.k, self.v, causal=self.causal)
        return pynorm.linear_attention(self.q, self.k, self.v, causal=self.causal)

    def time_pynorm(self, *params):
        self._pynorm()

    def time_torch(self, *params):
        torch = torch_or_skip()
        q, k, v = (torch.from_numpy(x).requires_grad_(self.backward) for x in (self.q, self.k, self.v))
        out = _chunked_torch(torch, q, k, v, self.causal)
        if self.backward:
            torch.autograd.grad(out, (q, k, v), torch.from_numpy(self.dout))

    def track_gflops(self, *params):
        return self.flops / pb.best_time(self._pynorm, repeats=5) / 1e9

    track_gflops.unit = "GFLOP/s"

    def track_fraction_of_matmul(self, *params):
        """pynorm's GFLOP/s over NumPy's 1024^3 matmul in the same dtype, measured now."""
        a = np.ones((1024, 1024), self.q.dtype)
        matmul = 2 * 1024**3 / pb.best_time(lambda: a @ a, repeats=3)
        return self.flops / pb.best_time(self._pynorm, repeats=5) / matmul

    track_fraction_of_matmul.unit = "fraction"
