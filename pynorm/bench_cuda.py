"""Speed of pynorm's CUDA kernels beside the GPU's own limit and other GPU implementations.

    python -m pynorm.bench_cuda [--ops layer_norm rms_norm dyt linear_attention]
                                [--dtypes float32 bfloat16] [--no-compile] [--json FILE]

For each norm op, pass, shape and dtype it times, in one process and with CUDA events:

* pynorm (torch CUDA tensors in, on torch's current stream);
* the bound: a device-to-device copy of the same bytes (``dst.copy_(src)``). A forward moves
  2 elements per element (read x, write y), as the copy does: target >= 0.9 of the copy's
  speed. A backward moves 3 (read x, dy, write dx): its bound is 1.5 copies, target >= 0.8;
* torch eager, torch.compile (where it compiles), and Liger-Kernel's Triton kernels when
  ``liger_kernel`` is importable.

Linear attention (causal) is compared with flash-linear-attention's chunked kernel when ``fla``
is importable, else with torch's chunked formulation (chunks of 64, running state by cumsum).

Times are medians of many repetitions after a warm-up, over several rotating input sets so that
inputs do not sit in L2. Without torch or a usable GPU it prints why and exits with status 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from typing import Callable, List, Optional

import pynorm
from pynorm.bench import Case

NORM_SHAPES = [(4096, 4096), (16384, 1024), (8192, 16384)]
ATTENTION_SHAPES = [(4, 16, 4096, 64), (2, 8, 8192, 128)]  # batch, heads, tokens, Dk = Dv
L2_FLUSH_BYTES = 256 << 20  # rotate over enough input sets to exceed any L2 by far


def unavailable_reason() -> Optional[str]:
    """None when torch has a CUDA device and pynorm's CUDA kernels can run; else why not."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    cuda = pynorm.config()["cuda"]
    if not cuda.startswith("built") or "unavailable" in cuda:
        return f"pynorm's CUDA kernels cannot run: {cuda}"
    return None


def gpu_time(fns: List[Callable[[], object]], repeats: int = 50, warmup: int = 5) -> float:
    """Median seconds of one call, timed with CUDA events, cycling through ``fns`` (one per
    input set) so that consecutive calls touch different memory."""
    import torch

    for i in range(warmup):
        fns[i % len(fns)]()
    times = []
    for i in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fns[i % len(fns)]()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def kernel_time(fns: List[Callable[[], object]], repeats: int = 20) -> Optional[float]:
    """Mean device seconds of the kernels one call launches (torch.profiler's CUDA activity):
    the GPU's share alone, without the host's time to check the arguments and launch, which
    ``gpu_time`` includes whenever the GPU waits for the host. None if the profiler cannot
    see the device here."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    try:
        fns[0]()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for i in range(repeats):
                fns[i % len(fns)]()
            torch.cuda.synchronize()
        total_us = sum(e.self_device_time_total for e in prof.key_averages())
    except Exception:
        return None
    return total_us / 1e6 / repeats if total_us > 0 else None


def call_overhead(repeats: int = 2000) -> dict:
    """Host microseconds per call on a tiny (1 x 32) float32 CUDA row, where the launch and the
    argument handling are all there is: pynorm's layer_norm and rms_norm against torch's."""
    import torch
    import torch.nn.functional as F

    x = torch.randn(1, 32, device="cuda")
    w = torch.ones(32, device="cuda")
    calls = {
        "pynorm.layer_norm": lambda: pynorm.layer_norm(x, w, w),
        "torch layer_norm": lambda: F.layer_norm(x, (32,), w, w),
        "pynorm.rms_norm": lambda: pynorm.rms_norm(x, w),
        "torch rms_norm": lambda: F.rms_norm(x, (32,), w),
    }
    out = {}
    for name, fn in calls.items():
        for _ in range(50):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
        out[name] = (time.perf_counter() - t0) / repeats * 1e6
    return out


@dataclasses.dataclass
class Result(Case):
    bound_s: float  # the copy bound of this pass (1 or 1.5 copies)
    seconds: dict  # implementation -> seconds (None: not available)

    def row(self) -> dict:
        return {
            **self.case_row(), "bound_s": self.bound_s, "seconds": self.seconds,
            "of_bound": {k: (None if v is None else self.bound_s / v) for k, v in self.seconds.items()},
        }  # fmt: skip


def _maybe(build: Callable[[], Callable[[], object]]) -> Optional[Callable[[], object]]:
    """An implementation, or None if it cannot be built or run here (checked with one call)."""
    try:
        fn = build()
        fn()
        return fn
    except Exception:
        return None


def _liger(op: str):
    try:
        if op == "layer_norm":
            from liger_kernel.ops.layer_norm import LigerLayerNormFunction

            return lambda x, w, b: LigerLayerNormFunction.apply(x, w, b, 1e-5)
        if op == "rms_norm":
            from liger_kernel.ops.rms_norm import LigerRMSNormFunction

            return lambda x, w, b: LigerRMSNormFunction.apply(x, w, 1e-6)
        if op == "dyt":
            from liger_kernel.ops.dyt import LigerDyTFunction

            return lambda x, w, b, alpha: LigerDyTFunction.apply(x, alpha, w, b)
    except ImportError:
        return None
    return None


def norm_results(op: str, shape: tuple, dtype_name: str, compile_: bool = True) -> List[Result]:
    import torch
    import torch.nn.functional as F

    dtype = getattr(torch, dtype_name)
    rows, dim = shape
    nbytes = rows * dim * torch.finfo(dtype).bits // 8
    sets = max(1, min(8, math.ceil(L2_FLUSH_BYTES / (3 * nbytes))))
    gen = torch.Generator(device="cuda").manual_seed(0)
    xs = [torch.randn(shape, device="cuda", dtype=torch.float32, generator=gen).to(dtype) for _ in range(sets)]
    dys = [torch.randn(shape, device="cuda", dtype=torch.float32, generator=gen).to(dtype) for _ in range(sets)]
    w = (1 + 0.1 * torch.randn(dim, device="cuda", generator=gen)).to(dtype)
    b = (0.1 * torch.randn(dim, device="cuda", generator=gen)).to(dtype)
    alpha = torch.tensor([0.7], device="cuda", dtype=dtype)
    copies = [torch.empty_like(x) for x in xs]
    copy_s = gpu_time([lambda i=i: copies[i].copy_(xs[i]) for i in range(sets)])

    def torch_forward(x, w, b):
        if op == "layer_norm":
            return F.layer_norm(x, (dim,), w, b, 1e-5)
        if op == "rms_norm":
            return F.rms_norm(x, (dim,), w, 1e-6)
        return w * torch.tanh(alpha * x) + b

    def pynorm_forward(i):
        if op == "layer_norm":
            return lambda: pynorm.layer_norm(xs[i], w, b)
        if op == "rms_norm":
            return lambda: pynorm.rms_norm(xs[i], w)
        return lambda: pynorm.dyt(xs[i], 0.7, w, b)

    def pynorm_backward(i):
        if op == "layer_norm":
            _, mean, rstd = pynorm.layer_norm(xs[i], w, b, return_stats=True)
            return lambda: pynorm.layer_norm_backward(dys[i], xs[i], w, b, mean=mean, rstd=rstd)
        if op == "rms_norm":
            _, rstd = pynorm.rms_norm(xs[i], w, return_stats=True)
            return lambda: pynorm.rms_norm_backward(dys[i], xs[i], w, rstd=rstd)
        return lambda: pynorm.dyt_backward(dys[i], xs[i], 0.7, w, b)

    def autograd_backward(forward):
        """Backward of ``forward`` alone: the graph is built once per input set, outside the timing."""

        def build(i):
            x, wl, bl = (t.detach().requires_grad_() for t in (xs[i], w, b))
            y = forward(x, wl, bl)
            inputs = (x, wl) if op == "rms_norm" else (x, wl, bl)
            return lambda: torch.autograd.grad(y, inputs, dys[i], retain_graph=True)

        return build

    liger = _liger(op)
    liger_forward = None
    if liger is not None:
        liger_forward = (lambda x, w, b: liger(x, w, b, alpha)) if op == "dyt" else liger
    compiled = None
    if compile_:  # torch.compile compiles on the first call of each shape: tens of seconds
        try:
            compiled = torch.compile(torch_forward)
        except Exception:
            compiled = None

    results = []
    for pass_, bound in (("forward", 1.0), ("backward", 1.5)):
        seconds = {}
        if pass_ == "forward":
            fns = [pynorm_forward(i) for i in range(sets)]
            seconds["pynorm"] = gpu_time(fns)
            seconds["pynorm kernels"] = kernel_time(fns)
            impls = {"torch": torch_forward, "torch.compile": compiled, "liger": liger_forward}
            for name, f in impls.items():
                fns = None if f is None else [(lambda i=i, f=f: f(xs[i], w, b)) for i in range(sets)]
                if fns is not None and _maybe(lambda fns=fns: fns[0]) is None:
                    fns = None  # does not run here (e.g. torch.compile without a working Triton)
                seconds[name] = gpu_time(fns) if fns else None
                if name == "torch" and fns:
                    seconds["torch kernels"] = kernel_time(fns)
        else:
            fns = [pynorm_backward(i) for i in range(sets)]
            seconds["pynorm"] = gpu_time(fns)
            seconds["pynorm kernels"] = kernel_time(fns)
            for name, f in {"torch": torch_forward, "torch.compile": compiled, "liger": liger_forward}.items():
                fns = None
                if f is not None:
                    try:
                        fns = [autograd_backward(f)(i) for i in range(sets)]
                        fns[0]()
                    except Exception:
                        fns = None
                seconds[name] = gpu_time(fns) if fns else None
                if name == "torch" and fns:
                    seconds["torch kernels"] = kernel_time(fns)
        moved = nbytes * (2 if pass_ == "forward" else 3)
        results.append(Result(op, pass_, shape, dtype_name, moved, bound * copy_s, seconds))
    return results


def torch_chunked_linear_attention(q, k, v, chunk: int = 64):
    """Causal linear attention out_i = sum_{j<=i} (q_i . k_j) v_j in torch, chunked: inside a
    chunk the masked (q k^T) v, across chunks the running Dk x Dv state (an exclusive cumsum of
    the chunks' k^T v). Float32 arithmetic for 16-bit inputs."""
    import torch

    b, h, n, dk = q.shape
    dv = v.shape[-1]
    c = n // chunk
    qc, kc, vc = (t.float().reshape(b, h, c, chunk, t.shape[-1]) for t in (q, k, v))
    kv = kc.transpose(-1, -2) @ vc  # [b, h, c, dk, dv]
    state = torch.cumsum(kv, dim=2) - kv  # the sum over earlier chunks
    mask = torch.ones(chunk, chunk, device=q.device, dtype=torch.bool).tril()
    scores = (qc @ kc.transpose(-1, -2)).masked_fill(~mask, 0)
    out = scores @ vc + qc @ state
    return out.reshape(b, h, n, dv).to(q.dtype)


def attention_results(shape: tuple, dtype_name: str) -> List[Result]:
    import torch

    dtype = getattr(torch, dtype_name)
    b, h, n, d = shape
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, dout = (torch.randn(shape, device="cuda", generator=gen).to(dtype) * 0.1 for _ in range(4))
    nbytes = q.numel() * q.element_size()
    flops = 4 * b * h * n * d * d + 2 * b * h * n * 64 * d * 2  # state products + intra-chunk products
    results = []
    fla = None
    try:
        from fla.ops.linear_attn import chunk_linear_attn

        def fla(q, k, v):  # fla's layout is [batch, tokens, heads, dim]
            t = [a.transpose(1, 2).contiguous() for a in (q, k, v)]
            return chunk_linear_attn(*t, scale=1.0, normalize=False)[0]
    except ImportError:
        fla = None
    for pass_ in ("forward", "backward"):
        seconds = {}
        if pass_ == "forward":
            seconds["pynorm"] = gpu_time([lambda: pynorm.linear_attention(q, k, v, causal=True)])
            seconds["pynorm kernels"] = kernel_time([lambda: pynorm.linear_attention(q, k, v, causal=True)])
            seconds["torch_chunked"] = gpu_time([lambda: torch_chunked_linear_attention(q, k, v)])
            f = _maybe(lambda: lambda: fla(q, k, v)) if fla else None
            seconds["fla"] = gpu_time([f]) if f else None
        else:
            seconds["pynorm"] = gpu_time([lambda: pynorm.linear_attention_backward(dout, q, k, v, causal=True)])
            ql, kl, vl = (t.detach().requires_grad_() for t in (q, k, v))
            out = torch_chunked_linear_attention(ql, kl, vl)
            seconds["torch_chunked"] = gpu_time(
                [lambda: torch.autograd.grad(out, (ql, kl, vl), dout, retain_graph=True)]
            )
            seconds["fla"] = None
            if fla:
                try:
                    out_fla = fla(ql, kl, vl)
                    g = dout.transpose(1, 2)
                    step = lambda: torch.autograd.grad(out_fla, (ql, kl, vl), g, retain_graph=True)  # noqa: E731
                    step()
                    seconds["fla"] = gpu_time([step])
                except Exception:
                    pass
        # no copy bound here: report achieved TFLOP/s in the JSON; the bound column holds the
        # time to move q, k, v, out once at the copy speed is not measured (compute-bound op)
        results.append(Result("linear_attention", pass_, shape, dtype_name, 4 * nbytes, float("nan"),
                              {**seconds, "flops": flops}))  # fmt: skip
    return results


def _format(r: Result) -> str:
    cells = []
    for name, s in r.seconds.items():
        if name == "flops":
            continue
        if s is None:
            cells.append(f"{name} -")
        elif math.isnan(r.bound_s):
            cells.append(f"{name} {s * 1e3:.3f} ms")
        else:
            cells.append(f"{name} {r.bytes / s / 1e9:.0f} GB/s ({r.bound_s / s:.2f} of bound)")
    shape = "x".join(map(str, r.shape))
    return f"{r.op:>16} {r.pass_:>8} {shape:>16} {r.dtype:>8} | " + " | ".join(cells)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", nargs="+", default=["layer_norm", "rms_norm", "dyt", "linear_attention"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out (it compiles per shape)")
    parser.add_argument("--json", help="write every number to this file")
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"pynorm.bench_cuda: skipped: {reason}")
        return 0
    import torch

    print(f"device: {torch.cuda.get_device_name()}; pynorm cuda: {pynorm.config()['cuda']}")
    overhead = call_overhead()
    print("per-call host time, 1x32 float32: " + ", ".join(f"{k} {v:.1f} us" for k, v in overhead.items()))
    results = []
    for op in args.ops:
        for dtype in args.dtypes:
            if op == "linear_attention":
                if not hasattr(pynorm, "linear_attention"):
                    continue
                for shape in ATTENTION_SHAPES:
                    results += attention_results(shape, dtype)
            else:
                for shape in NORM_SHAPES:
                    results += norm_results(op, shape, dtype, compile_=not args.no_compile)
            for r in results[-2 * (len(ATTENTION_SHAPES) if op == "linear_attention" else len(NORM_SHAPES)) :]:
                print(_format(r), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "call_overhead_us": overhead,
                       "results": [r.row() for r in results]}, f, indent=1)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
