"""pynorm.torch beside torch (the cases of ``python -m pynorm.torch.bench``): forward+backward
of the norm modules at [4096 x 4096] float32, a pre-norm transformer block's training step
with and without replace_norms, and the per-call overhead on a [1 x 32] tensor; 2 threads."""

import pynorm
import pynorm.bench as pb

from .common import THREADS, torch_or_skip


def _bench():
    torch_or_skip()
    pynorm.set_num_threads(THREADS)
    import pynorm.torch.bench as bench

    return bench


class TorchNorms:
    params = (["RMSNorm", "LayerNorm", "DyT"],)
    param_names = ["module"]
    timeout = 300

    def setup(self, module):
        bench = _bench()
        cases, _ = bench.norm_cases(bench.NORM_SHAPE)
        self.fn, self.torch_fn = cases[module]

    def time_pynorm(self, module):
        self.fn()

    def time_torch(self, module):
        self.torch_fn()

    def track_speedup_over_torch(self, module):
        return pb.best_time(self.torch_fn, repeats=5) / pb.best_time(self.fn, repeats=5)

    track_speedup_over_torch.unit = "x"


class TorchBlockStep:
    timeout = 300

    def setup(self):
        bench = _bench()
        self.step, self.torch_step, _ = bench.block_steps(**bench.BLOCK)

    def time_replace_norms(self):
        self.step()

    def time_torch_nn(self):
        self.torch_step()

    def track_speedup_over_torch(self):
        return pb.best_time(self.torch_step, repeats=3) / pb.best_time(self.step, repeats=3)

    track_speedup_over_torch.unit = "x"


class TorchCallOverhead:
    params = (["LayerNorm module forward (no grad)", "layer_norm op (no grad)", "LayerNorm module forward+backward"],)
    param_names = ["call"]

    def setup(self, call):
        self.fn, self.torch_fn = _bench().overhead_cases()[call]

    def time_pynorm(self, call):
        self.fn()

    def time_torch(self, call):
        self.torch_fn()
