"""Speed of pynorm's kernels beside torch and beside the machine's own limits, in one run.

    python -m pynorm.bench [--ops layer_norm rms_norm dyt] [--threads 2] [--json FILE] [--plot FILE]

For every case it reports the effective bandwidth (bytes the op must move / time) of pynorm
and torch, the speedup, and the fraction of the machine's bound measured in the same run:
a copy of the same bytes (the faster of torch's ``out.copy_(x)`` and NumPy's ``copyto``,
with the same thread count). A forward moves 2 elements per element (read x, write y): its
bound is the copy time. A backward moves 3 (read x and dy, write dx): its bound is 1.5
copies. Times are the best of several repeats; on a shared, noisy machine compare the ratios
of one run, never absolute numbers across runs. Without torch the torch columns are empty.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from typing import Callable, List, Optional

import numpy as np

import pynorm

NORM_SHAPES = [(16384, 1024), (4096, 4096), (65536, 256)]
TINY_SHAPE = (4224, 32)  # the trainer's regime: P1's 128 x 33 tokens of width 32


def best_time(fn: Callable[[], object], min_seconds: float = 0.05, repeats: int = 7) -> float:
    """Best seconds per call over ``repeats`` timings of enough calls to last ``min_seconds``."""
    fn()  # warm up (page faults, thread start)
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    inner = max(1, int(min_seconds / once / repeats))
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - start) / inner)
    return best


@dataclasses.dataclass
class Result:
    op: str
    pass_: str
    shape: tuple
    dtype: str
    bytes: int
    pynorm_s: float
    torch_s: Optional[float]
    bound_s: float

    @property
    def pynorm_gbs(self) -> float:
        return self.bytes / self.pynorm_s / 1e9

    @property
    def torch_gbs(self) -> Optional[float]:
        return None if self.torch_s is None else self.bytes / self.torch_s / 1e9

    @property
    def speedup(self) -> Optional[float]:
        return None if self.torch_s is None else self.torch_s / self.pynorm_s

    @property
    def of_bound(self) -> float:
        return self.bound_s / self.pynorm_s

    def row(self) -> dict:
        return {
            "op": self.op, "pass": self.pass_, "shape": list(self.shape), "dtype": self.dtype,
            "bytes": self.bytes, "pynorm_s": self.pynorm_s, "torch_s": self.torch_s, "bound_s": self.bound_s,
            "pynorm_GBps": self.pynorm_gbs, "torch_GBps": self.torch_gbs, "speedup": self.speedup,
            "fraction_of_bound": self.of_bound,
        }  # fmt: skip


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def copy_seconds(x: np.ndarray, torch) -> float:
    """The faster of NumPy's copyto and torch's copy_ (torch with its thread setting)."""
    out = np.empty_like(x)
    best = best_time(lambda: np.copyto(out, x))
    if torch is not None:
        tx, tout = torch.from_numpy(x), torch.from_numpy(out)
        best = min(best, best_time(lambda: tout.copy_(tx)))
    return best


def norm_cases(torch):
    """(op, forward, backward, torch forward, torch backward) builders for the norm ops."""
    F = torch.nn.functional if torch is not None else None

    def layer_norm(x, w, b, dy):
        fwd = lambda: pynorm.layer_norm(x, w, b)  # noqa: E731
        bwd = lambda: pynorm.layer_norm_backward(dy, x, w, b)  # noqa: E731
        if torch is None:
            return fwd, bwd, None, None
        tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
        ty = F.layer_norm(tx, (x.shape[-1],), tw, tb)
        tdy = torch.from_numpy(dy)
        return (
            fwd, bwd,
            lambda: F.layer_norm(tx.detach(), (x.shape[-1],), tw.detach(), tb.detach()),
            lambda: torch.autograd.grad(ty, (tx, tw, tb), tdy, retain_graph=True),
        )  # fmt: skip

    def rms_norm(x, w, b, dy):
        fwd = lambda: pynorm.rms_norm(x, w)  # noqa: E731
        bwd = lambda: pynorm.rms_norm_backward(dy, x, w)  # noqa: E731
        if torch is None:
            return fwd, bwd, None, None
        tx, tw = (torch.from_numpy(a).requires_grad_() for a in (x, w))
        ty = F.rms_norm(tx, (x.shape[-1],), tw, 1e-6)
        tdy = torch.from_numpy(dy)
        return (
            fwd, bwd,
            lambda: F.rms_norm(tx.detach(), (x.shape[-1],), tw.detach(), 1e-6),
            lambda: torch.autograd.grad(ty, (tx, tw), tdy, retain_graph=True),
        )  # fmt: skip

    def dyt(x, w, b, dy):
        fwd = lambda: pynorm.dyt(x, 0.5, w, b)  # noqa: E731
        bwd = lambda: pynorm.dyt_backward(dy, x, 0.5, w, b)  # noqa: E731
        if torch is None:
            return fwd, bwd, None, None
        tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
        ta = torch.tensor([0.5], dtype=tx.dtype, requires_grad=True)
        ty = tw * torch.tanh(ta * tx) + tb
        tdy = torch.from_numpy(dy)
        dx_, da_, dw_, db_ = (t.detach() for t in (tx, ta, tw, tb))
        return (
            fwd, bwd,
            lambda: dw_ * torch.tanh(da_ * dx_) + db_,
            lambda: torch.autograd.grad(ty, (tx, ta, tw, tb), tdy, retain_graph=True),
        )  # fmt: skip

    return {"layer_norm": layer_norm, "rms_norm": rms_norm, "dyt": dyt}


def run(ops: List[str], shapes=None, dtype=np.float32, threads: int = 2, progress=print) -> List[Result]:
    """Measures forward and backward of each op at each shape; returns the results."""
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(threads)
    else:
        progress("torch is not installed: the torch columns are skipped")
    pynorm.set_num_threads(threads)
    builders = norm_cases(torch)
    unknown = [op for op in ops if op not in builders]
    if unknown:
        raise ValueError(f"unknown ops {unknown}; choose from {sorted(builders)}")
    rng = np.random.default_rng(0)
    results = []
    for shape in shapes or NORM_SHAPES + [TINY_SHAPE]:
        x = rng.standard_normal(shape).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        w = rng.standard_normal(shape[-1]).astype(dtype)
        b = rng.standard_normal(shape[-1]).astype(dtype)
        copy_s = copy_seconds(x, torch)
        for op in ops:
            fwd, bwd, tfwd, tbwd = builders[op](x, w, b, dy)
            for pass_, fn, tfn, elements, bound in [("forward", fwd, tfwd, 2, 1.0), ("backward", bwd, tbwd, 3, 1.5)]:
                r = Result(
                    op, pass_, shape, np.dtype(dtype).name, elements * x.nbytes,
                    best_time(fn), None if tfn is None else best_time(tfn), bound * copy_s,
                )  # fmt: skip
                results.append(r)
                progress(format_row(r))
    return results


def per_call_overhead(threads: int = 2) -> dict:
    """Seconds per call on a single 32-element row (pure call overhead), pynorm and torch."""
    x = np.ones((1, 32), np.float32)
    out = {"pynorm_layer_norm_s": best_time(lambda: pynorm.layer_norm(x))}
    torch = _torch()
    if torch is not None:
        tx = torch.from_numpy(x)
        out["torch_layer_norm_s"] = best_time(lambda: torch.nn.functional.layer_norm(tx, (32,)))
    return out


HEADER = f"{'op':<11}{'pass':<9}{'shape':<14}{'dtype':<8}{'pynorm GB/s':>12}{'torch GB/s':>11}{'speedup':>9}{'of bound':>9}"


def format_row(r: Result) -> str:
    torch_gbs = "-" if r.torch_gbs is None else f"{r.torch_gbs:.2f}"
    speedup = "-" if r.speedup is None else f"{r.speedup:.2f}x"
    shape = "x".join(map(str, r.shape))
    return f"{r.op:<11}{r.pass_:<9}{shape:<14}{r.dtype:<8}{r.pynorm_gbs:>12.2f}{torch_gbs:>11}{speedup:>9}{r.of_bound:>9.2f}"


def markdown_table(results: List[Result]) -> str:
    lines = [
        "| op | pass | shape | pynorm GB/s | torch GB/s | speedup | fraction of copy bound |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        torch_gbs = "-" if r.torch_gbs is None else f"{r.torch_gbs:.2f}"
        speedup = "-" if r.speedup is None else f"{r.speedup:.2f}x"
        lines.append(
            f"| {r.op} | {r.pass_} | {'x'.join(map(str, r.shape))} {r.dtype} | {r.pynorm_gbs:.2f} | {torch_gbs} | "
            f"{speedup} | {r.of_bound:.2f} |"
        )
    return "\n".join(lines)


def plot(results: List[Result], path: str) -> None:
    """Bar chart: pynorm and torch as fractions of the copy bound, per case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.op}\n{r.pass_}\n{'x'.join(map(str, r.shape))}" for r in results]
    ours = [r.of_bound for r in results]
    theirs = [0.0 if r.torch_s is None else r.bound_s / r.torch_s for r in results]
    xs = np.arange(len(results))
    fig, ax = plt.subplots(figsize=(max(8, 0.7 * len(results)), 4.5))
    ax.bar(xs - 0.2, ours, 0.4, label="pynorm")
    ax.bar(xs + 0.2, theirs, 0.4, label="torch")
    ax.axhline(1.0, color="k", lw=0.8, ls="--", label="copy bound")
    ax.set_xticks(xs, labels, fontsize=6)
    ax.set_ylabel("fraction of the copy bound (same run)")
    ax.set_title(f"pynorm vs torch, {pynorm.get_num_threads()} threads, SIMD {pynorm.simd_level()}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pynorm bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", nargs="+", default=["layer_norm", "rms_norm", "dyt"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument("--plot", help="draw a bar chart to this PNG file")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    args = parser.parse_args(argv)
    print(f"pynorm {pynorm.__version__}, SIMD {pynorm.simd_level()}, {args.threads} threads")
    print(HEADER)
    results = run(args.ops, threads=args.threads)
    overhead = per_call_overhead(args.threads)
    print("per-call overhead (1 x 32 row): " + ", ".join(f"{k} = {v * 1e6:.2f} us" for k, v in overhead.items()))
    if args.markdown:
        print(markdown_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": pynorm.config(), "results": [r.row() for r in results], "overhead": overhead}, f, indent=1)
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
