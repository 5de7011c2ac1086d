"""Speed of pynorm.torch beside torch's own, in one run.

    python -m pynorm.torch.bench [--threads 2] [--repeats 7] [--json FILE] [--quick]

Three parts, each timed in turns with its torch counterpart (``pynorm.bench.interleaved_best``:
a noisy spell of the machine hits both alike; compare the ratios of one run, never absolute
numbers across runs):

* norms: forward + backward (``torch.autograd.grad`` of the input and the parameters) of
  ``pynorm.torch.RMSNorm`` / ``LayerNorm`` / ``DyT`` against ``torch.nn.RMSNorm`` /
  ``LayerNorm`` / DyT's torch composite at [4096 x 4096] float32, with the time a copy of the
  bytes that pass must move takes (read x, write y; read x and dy, write dx: 2.5 copies of x);
* a training step (forward, backward, AdamW) of a pre-norm transformer block (RMSNorm,
  causal attention, RMSNorm, GELU MLP) with torch.nn's norms and after ``replace_norms``;
* per-call overhead on a [1 x 32] tensor, on one thread: the module's forward (no grad) and
  forward + backward, pynorm's beside torch's, and the bare ``torch.ops.pynorm.layer_norm``
  beside ``torch.nn.functional.layer_norm``.

Threads: both libraries get ``--threads`` (torch.set_num_threads and pynorm.set_num_threads),
except the per-call rows (one thread).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from typing import Callable, List

import torch
import torch.nn.functional as F

import pynorm
import pynorm.bench as pb
import pynorm.torch as pt

NORM_SHAPE = (4096, 4096)
BLOCK = dict(batch=8, tokens=256, dim=512, heads=8)
QUICK_NORM_SHAPE = (256, 512)
QUICK_BLOCK = dict(batch=2, tokens=32, dim=64, heads=4)


class DyTComposite(torch.nn.Module):
    """DyT as torch ops (the DyT paper's DynamicTanh), the comparison for pynorm.torch.DyT."""

    def __init__(self, dim: int, alpha0: float = 0.5):
        super().__init__()
        self.alpha = torch.nn.Parameter(torch.full((1,), alpha0))
        self.weight = torch.nn.Parameter(torch.ones(dim))
        self.bias = torch.nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * torch.tanh(self.alpha * x) + self.bias


class Block(torch.nn.Module):
    """A pre-norm transformer block: x + attn(RMSNorm(x)), then + MLP(RMSNorm(.)), causal
    scaled-dot-product attention, a 4x GELU MLP."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = torch.nn.RMSNorm(dim), torch.nn.RMSNorm(dim)
        self.qkv, self.proj = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)
        self.fc1, self.fc2 = torch.nn.Linear(dim, 4 * dim), torch.nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(batch, tokens, dim)
        x = x + self.proj(attended)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


def _fwd_bwd(module: torch.nn.Module, x: torch.Tensor, dy: torch.Tensor) -> Callable[[], object]:
    wrt = (x, *module.parameters())
    return lambda: torch.autograd.grad(module(x), wrt, dy)


def norm_cases(shape):
    """{name: (pynorm's forward+backward, torch's)} for the norm modules at ``shape``, float32,
    and the input x (its copy time is the bound)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).requires_grad_()
    dy = torch.randn(shape, generator=g)
    dim = shape[-1]
    pairs = {
        "RMSNorm": (pt.RMSNorm(dim), torch.nn.RMSNorm(dim)),
        "LayerNorm": (pt.LayerNorm(dim), torch.nn.LayerNorm(dim)),
        "DyT": (pt.DyT(dim), DyTComposite(dim)),
    }
    return {name: (_fwd_bwd(ours, x, dy), _fwd_bwd(theirs, x, dy)) for name, (ours, theirs) in pairs.items()}, x


def norm_rows(shape, repeats: int) -> List[dict]:
    """Forward + backward of pynorm.torch's norm modules and torch's at ``shape``, float32."""
    cases, x = norm_cases(shape)
    copies = pb.copy_functions(x.detach().numpy(), torch)
    rows = []
    for name, (fn, tfn) in cases.items():
        times = pb.interleaved_best([fn, tfn] + copies, repeats)
        bound = 2.5 * min(times[2:])
        rows.append({
            "case": f"{name} forward+backward", "shape": list(shape), "dtype": "float32",
            "pynorm_s": times[0], "torch_s": times[1], "speedup": times[1] / times[0],
            "pynorm_fraction_of_copy_bound": bound / times[0], "torch_fraction_of_copy_bound": bound / times[1],
        })  # fmt: skip
    return rows


def block_steps(batch: int, tokens: int, dim: int, heads: int):
    """(training step after replace_norms, the same with torch.nn's RMSNorm, norms replaced) for
    one :class:`Block` of the same initial parameters on the same input."""
    torch.manual_seed(0)
    reference = Block(dim, heads)
    ours = copy.deepcopy(reference)
    replaced = pt.replace_norms(ours)
    x = torch.randn(batch, tokens, dim)

    def step_of(model):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            model(x).square().mean().backward()
            opt.step()

        return step

    return step_of(ours), step_of(reference), len(replaced)


def block_row(batch: int, tokens: int, dim: int, heads: int, repeats: int) -> dict:
    """One training step of :class:`Block`, torch.nn's RMSNorm against replace_norms's."""
    step, torch_step, replaced = block_steps(batch, tokens, dim, heads)
    times = pb.interleaved_best([step, torch_step], repeats)
    return {
        "case": f"pre-norm block training step ({replaced} RMSNorms replaced)",
        "shape": [batch, tokens, dim], "heads": heads, "dtype": "float32",
        "pynorm_s": times[0], "torch_s": times[1], "speedup": times[1] / times[0],
    }  # fmt: skip


def overhead_cases() -> dict:
    """{name: (pynorm's call, torch's)} on a [1 x 32] tensor, where call overhead is all there is;
    the no-grad cases run under ``torch.no_grad()``."""
    x = torch.randn(1, 32)
    xg = x.clone().requires_grad_()
    dy = torch.ones(1, 32)
    ours, theirs = pt.LayerNorm(32), torch.nn.LayerNorm(32)
    w, b = theirs.weight.detach(), theirs.bias.detach()

    def no_grad(fn):
        def call():
            with torch.no_grad():
                return fn()

        return call

    return {
        "LayerNorm module forward (no grad)": (no_grad(lambda: ours(x)), no_grad(lambda: theirs(x))),
        "layer_norm op (no grad)": (no_grad(lambda: torch.ops.pynorm.layer_norm(x, w, b, 1e-5)),
                                    no_grad(lambda: F.layer_norm(x, (32,), w, b, 1e-5))),
        "LayerNorm module forward+backward": (_fwd_bwd(ours, xg, dy), _fwd_bwd(theirs, xg, dy)),
    }  # fmt: skip


def overhead_rows(repeats: int) -> List[dict]:
    """Seconds per call of :func:`overhead_cases`, pynorm's beside torch's, on one thread:
    torch's LayerNorm backward opens a parallel region even for one row, and on busy cores
    waking a second thread can cost more than the call itself (pynorm keeps small inputs on
    one thread whatever the setting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = []
        for name, (fn, tfn) in overhead_cases().items():
            times = pb.interleaved_best([fn, tfn], repeats)
            rows.append({"case": f"per call: {name}", "shape": [1, 32], "dtype": "float32", "threads": 1,
                         "pynorm_s": times[0], "torch_s": times[1], "speedup": times[1] / times[0]})  # fmt: skip
        return rows
    finally:
        torch.set_num_threads(threads)


def _format(row: dict) -> str:
    shape = "x".join(str(s) for s in row["shape"])
    bound = row.get("pynorm_fraction_of_copy_bound")
    extra = "" if bound is None else f"  {bound:5.2f} {row['torch_fraction_of_copy_bound']:5.2f}"
    times = f"{row['pynorm_s'] * 1e3:10.3f} {row['torch_s'] * 1e3:10.3f} {row['speedup']:7.2f}x"
    return f"{row['case']:<52} {shape:>11} {times}{extra}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pynorm.torch.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for torch and pynorm (default 2)")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per case; the best counts (default 7)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows, the machine and the settings as JSON")
    parser.add_argument(
        "--quick", action="store_true", help="small shapes: checks that the benchmark runs, times nothing useful"
    )
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be positive")
    torch.set_num_threads(args.threads)
    pynorm.set_num_threads(args.threads)
    norm_shape, block = (QUICK_NORM_SHAPE, QUICK_BLOCK) if args.quick else (NORM_SHAPE, BLOCK)
    print(
        f"{'case':<52} {'shape':>11} {'pynorm ms':>10} {'torch ms':>10} {'speedup':>8}  of copy bound (pynorm, torch)"
    )
    rows = []
    for part in (lambda: norm_rows(norm_shape, args.repeats), lambda: [block_row(**block, repeats=args.repeats)],
                 lambda: overhead_rows(args.repeats)):  # fmt: skip
        for row in part():
            rows.append(row)
            print(_format(row), flush=True)
    if args.json:
        meta = {
            "command": " ".join(["python -m pynorm.torch.bench", *(argv if argv is not None else sys.argv[1:])]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu": pb.cpu_name(),
            "python": platform.python_version(), "torch": torch.__version__, "pynorm": pynorm.__version__,
            "simd": pynorm.simd_level(), "threads": args.threads, "repeats": args.repeats,
        }  # fmt: skip
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
