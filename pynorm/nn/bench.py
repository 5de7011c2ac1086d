"""Training speed of the pynorm.nn trainer against its torch twin (eager), in one process.

    python -m pynorm.nn.bench [--threads 2] [--steps 20] [--repeats 5] [--only power-method|majority]

Both papers' models at their own batch: P1's looped model (d = 16, n = 32, L = 10, batch 128,
SGD) in float32 and float64, and P2's majority transformer (d = 8, 50 tokens, 20 symbols,
batch 6,000 sequences, Adam) in float32. Both sides train on the same batches with the same
number of threads: pynorm's kernels and torch's intra-op pool get ``--threads``; the trainer
runs NumPy's BLAS on one thread, as ``Trainer.fit`` does (its small products gain nothing
from BLAS threads). Blocks of steps alternate between the two and the best block of each
counts, as the machine is noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Dict, Optional

from .models import build_experiment
from .train import Trainer, single_blas_thread
from .twin import TorchTwin


#: experiment -> (its paper's batch, the data overrides that give ``steps`` batches of it)
PAPER_BATCH = {"power-method": 128, "majority": 6000}


def _data_overrides(name: str, batch_size: int, steps: int) -> Dict[str, int]:
    if name == "power-method":
        return {"n_train": steps * batch_size, "n_test": batch_size}
    return {"n_sequences": max(1000, steps * batch_size * 5 // 4)}  # 80% of them train


def benchmark(
    dtype: str = "float64",
    threads: int = 2,
    steps: int = 20,
    repeats: int = 5,
    batch_size: Optional[int] = None,
    experiment_name: str = "power-method",
) -> Dict[str, float]:
    """Steps per second of the pynorm trainer and of the torch twin on one experiment's model
    (``batch_size`` None: the paper's); returns ``{"pynorm": ..., "torch": ..., "speedup":
    pynorm / torch}``."""
    import torch

    import pynorm

    batch_size = batch_size or PAPER_BATCH[experiment_name]
    experiment, config = build_experiment(
        experiment_name,
        dtype,
        batch_size=batch_size,
        steps=steps,
        progress=False,
        **_data_overrides(experiment_name, batch_size, steps),
    )
    trainer = Trainer(experiment, config)
    twin = TorchTwin(trainer)
    batches = [trainer.batch(step) for step in range(steps)]
    torch_threads, pynorm_threads = torch.get_num_threads(), pynorm.get_num_threads()
    best = {"pynorm": float("inf"), "torch": float("inf")}
    try:
        torch.set_num_threads(threads)
        pynorm.set_num_threads(threads)
        for _ in range(repeats):
            for name, step, limits in (
                ("pynorm", trainer.train_step, single_blas_thread),
                ("torch", twin.train_step, contextlib.nullcontext),
            ):
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
    parser.add_argument("--batch-size", type=int, default=None, help="default: each paper's")
    parser.add_argument("--only", choices=sorted(PAPER_BATCH), default=None, help="one model only")
    args = parser.parse_args()
    runs = [
        ("power-method", "P1 looped model, d=16 n=32 L=10", ("float32", "float64")),
        ("majority", "P2 majority transformer, d=8, 50 tokens", ("float32",)),
    ]
    for name, title, dtypes in runs:
        if args.only not in (None, name):
            continue
        batch = args.batch_size or PAPER_BATCH[name]
        print(f"{title}, batch {batch}, {args.threads} threads each, best of {args.repeats} x {args.steps} steps")
        for dtype in dtypes:
            r = benchmark(dtype, args.threads, args.steps, args.repeats, batch, name)
            print(
                f"  {dtype}: pynorm.nn {r['pynorm']:7.2f} steps/s ({1 / r['pynorm']:.3f} s/step)   torch eager "
                f"{r['torch']:7.2f} steps/s ({1 / r['torch']:.3f} s/step)   speedup {r['speedup']:.2f}x"
            )


if __name__ == "__main__":
    main()
