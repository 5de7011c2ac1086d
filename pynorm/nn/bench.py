"""Training speed of the pynorm.nn trainer against its torch twin (eager), in one process.

    python -m pynorm.nn.bench [--threads 2] [--steps 20] [--repeats 5] [--batch-size 128]

P1's configuration (d = 16, n = 32, L = 10, batch 128, SGD), float32 and float64. Both
sides train on the same batches with the same number of threads: pynorm's kernels and
torch's intra-op pool get ``--threads``; the trainer runs NumPy's BLAS on one thread, as
``Trainer.fit`` does (its small products gain nothing from BLAS threads). Blocks of steps
alternate between the two and the best block of each counts, as the machine is noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Dict

from .models import build_experiment
from .train import Trainer, single_blas_thread
from .twin import TorchTwin


def benchmark(dtype: str = "float64", threads: int = 2, steps: int = 20, repeats: int = 5,
              batch_size: int = 128) -> Dict[str, float]:
    """Steps per second of the pynorm trainer and of the torch twin on P1's configuration;
    returns ``{"pynorm": ..., "torch": ..., "speedup": pynorm / torch}``."""
    import torch

    import pynorm

    experiment, config = build_experiment("power-method", dtype, n_train=steps * batch_size, n_test=batch_size,
                                          batch_size=batch_size, steps=steps, progress=False)
    trainer = Trainer(experiment, config)
    twin = TorchTwin(trainer)
    batches = [trainer.batch(step) for step in range(steps)]
    torch_threads, pynorm_threads = torch.get_num_threads(), pynorm.get_num_threads()
    best = {"pynorm": float("inf"), "torch": float("inf")}
    try:
        torch.set_num_threads(threads)
        pynorm.set_num_threads(threads)
        for _ in range(repeats):
            for name, step, limits in (("pynorm", trainer.train_step, single_blas_thread),
                                       ("torch", twin.train_step, contextlib.nullcontext)):
                with limits():
                    start = time.perf_counter()
                    for batch in batches:
                        step(batch)
                    best[name] = min(best[name], time.perf_counter() - start)
    finally:
        torch.set_num_threads(torch_threads)
        pynorm.set_num_threads(pynorm_threads)
    rates = {name: steps / seconds for name, seconds in best.items()}
    return {**rates, "speedup": rates["pynorm"] / rates["torch"]}


def main() -> None:
    """Prints the steps per second for float32 and float64."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    print(f"P1 looped model, d=16 n=32 L=10, batch {args.batch_size}, {args.threads} threads each, "
          f"best of {args.repeats} x {args.steps} steps")
    for dtype in ("float32", "float64"):
        r = benchmark(dtype, args.threads, args.steps, args.repeats, args.batch_size)
        print(f"  {dtype}: pynorm.nn {r['pynorm']:7.1f} steps/s   torch eager {r['torch']:7.1f} steps/s   "
              f"speedup {r['speedup']:.2f}x")


if __name__ == "__main__":
    main()
