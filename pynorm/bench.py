"""Speed of pynorm's kernels beside torch and beside the machine's own limits, in one run.

    python -m pynorm.bench [--ops layer_norm projection scaling rms_norm dyt linear_attention] [--threads 2]
                           [--dtypes float32 bfloat16] [--simd all|LEVEL ...] [--json FILE] [--plot FILE] [--markdown]

For every case it reports the effective bandwidth (bytes the op must move / time) of pynorm
and torch, the speedup, and the fraction of the machine's bound measured in the same run: a
copy of the same bytes (the faster of torch's ``out.copy_(x)`` and NumPy's ``copyto``, with
the same thread count), timed in turns with the kernel and torch's version of it. A forward
moves 2 elements per element (read x, write y): its bound is the copy time. A backward moves
3 (read x and dy, write dx): its bound is 1.5 copies; LayerNorm's and RMSNorm's backward get
the forward's statistics, as torch's autograd keeps them. Linear attention is compute-bound:
it is rated in GFLOP/s of useful work beside NumPy's (BLAS) float32 matmul in the same run,
and beside torch formulations of the same algorithm (see linear_attention_cases). Times are
the best of several repeats; on a shared, noisy machine compare the ratios of one run, never
absolute numbers across runs. Without torch the torch columns are empty.

``--simd all`` (or a list of levels) times the norm ops once per SIMD level the CPU runs, each in a
child process with ``PYNORM_SIMD`` set (the level is fixed at import), one after the other; every
result row carries its ``simd`` level, and the markdown table has a column per level.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from typing import Callable, List, Optional

import numpy as np

import pynorm
from pynorm._array import BFLOAT16

NORM_SHAPES = [(16384, 1024), (4096, 4096), (65536, 256), (64, 262144)]
NORM_OPS = ["layer_norm", "projection", "scaling", "rms_norm", "dyt"]
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
class Case:
    """What a row of timings is of: an op's pass on a shape and dtype, moving ``bytes`` (the
    leading keys of a JSON row, here and in :mod:`pynorm.bench_cuda`)."""

    op: str
    pass_: str
    shape: tuple
    dtype: str
    bytes: int

    def case_row(self) -> dict:
        """The case's keys of a JSON row."""
        return {"op": self.op, "pass": self.pass_, "shape": list(self.shape), "dtype": self.dtype, "bytes": self.bytes}


@dataclasses.dataclass
class Result(Case):
    pynorm_s: float
    torch_s: Optional[float]
    bound_s: float
    simd: str = dataclasses.field(default_factory=pynorm.simd_level)

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
            **self.case_row(), "pynorm_s": self.pynorm_s, "torch_s": self.torch_s, "bound_s": self.bound_s,
            "pynorm_GBps": self.pynorm_gbs, "torch_GBps": self.torch_gbs, "speedup": self.speedup,
            "fraction_of_bound": self.of_bound, "simd": self.simd,
        }  # fmt: skip


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def to_torch(torch, a: np.ndarray):
    """A torch CPU tensor sharing a's memory (bfloat16 included)."""
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def copy_functions(x: np.ndarray, torch) -> List[Callable[[], object]]:
    """Copies of x's bytes: NumPy's copyto and (with its thread setting) torch's copy_."""
    out = np.empty_like(x)
    fns = [lambda: np.copyto(out, x)]
    if torch is not None:
        tx, tout = to_torch(torch, x), to_torch(torch, out)
        fns.append(lambda: tout.copy_(tx))
    return fns


def copy_seconds(x: np.ndarray, torch) -> float:
    """The faster of NumPy's copyto and torch's copy_ (torch with its thread setting)."""
    return min(best_time(fn) for fn in copy_functions(x, torch))


def norm_cases(torch):
    """(op, forward, backward, torch forward, torch backward) builders for the norm ops."""
    F = torch.nn.functional if torch is not None else None

    # The backward is given the forward's statistics, as torch's autograd keeps them.
    def layer_norm(x, w, b, dy):
        fwd = lambda: pynorm.layer_norm(x, w, b)  # noqa: E731
        _, mean, rstd = pynorm.layer_norm(x, w, b, return_stats=True)
        bwd = lambda: pynorm.layer_norm_backward(dy, x, w, b, mean=mean, rstd=rstd)  # noqa: E731
        if torch is None:
            return fwd, bwd, None, None
        tx, tw, tb = (to_torch(torch, a).requires_grad_() for a in (x, w, b))
        ty = F.layer_norm(tx, (x.shape[-1],), tw, tb)
        tdy = to_torch(torch, dy)
        return (
            fwd, bwd,
            lambda: F.layer_norm(tx.detach(), (x.shape[-1],), tw.detach(), tb.detach()),
            lambda: torch.autograd.grad(ty, (tx, tw, tb), tdy, retain_graph=True),
        )  # fmt: skip

    # LayerNorm's halves (with weight and bias): centring alone, and scaling by the RMS alone;
    # torch's versions are composites of its own ops, differentiated by autograd.
    def halves(center, scale):
        def case(x, w, b, dy):
            fwd = lambda: pynorm.layer_norm(x, w, b, center=center, scale=scale)  # noqa: E731
            _, mean, rstd = pynorm.layer_norm(x, w, b, center=center, scale=scale, return_stats=True)
            bwd = lambda: pynorm.layer_norm_backward(dy, x, w, b, center=center, scale=scale, mean=mean, rstd=rstd)  # noqa: E731
            if torch is None:
                return fwd, bwd, None, None

            def composite(tx, tw, tb):
                if center:
                    tx = tx - tx.mean(-1, keepdim=True)
                if scale:
                    tx = tx * torch.rsqrt(tx.square().mean(-1, keepdim=True) + 1e-5)
                return tx * tw + tb

            tx, tw, tb = (to_torch(torch, a).requires_grad_() for a in (x, w, b))
            ty = composite(tx, tw, tb)
            tdy = to_torch(torch, dy)
            return (
                fwd, bwd,
                lambda: composite(tx.detach(), tw.detach(), tb.detach()),
                lambda: torch.autograd.grad(ty, (tx, tw, tb), tdy, retain_graph=True),
            )  # fmt: skip

        return case

    def rms_norm(x, w, b, dy):
        fwd = lambda: pynorm.rms_norm(x, w)  # noqa: E731
        _, rstd = pynorm.rms_norm(x, w, return_stats=True)
        bwd = lambda: pynorm.rms_norm_backward(dy, x, w, rstd=rstd)  # noqa: E731
        if torch is None:
            return fwd, bwd, None, None
        tx, tw = (to_torch(torch, a).requires_grad_() for a in (x, w))
        ty = F.rms_norm(tx, (x.shape[-1],), tw, 1e-6)
        tdy = to_torch(torch, dy)
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
        tx, tw, tb = (to_torch(torch, a).requires_grad_() for a in (x, w, b))
        ta = torch.tensor([0.5], dtype=tx.dtype, requires_grad=True)
        ty = tw * torch.tanh(ta * tx) + tb
        tdy = to_torch(torch, dy)
        dx_, da_, dw_, db_ = (t.detach() for t in (tx, ta, tw, tb))
        return (
            fwd, bwd,
            lambda: dw_ * torch.tanh(da_ * dx_) + db_,
            lambda: torch.autograd.grad(ty, (tx, ta, tw, tb), tdy, retain_graph=True),
        )  # fmt: skip

    return {"layer_norm": layer_norm, "projection": halves(True, False), "scaling": halves(False, True),
            "rms_norm": rms_norm, "dyt": dyt}  # fmt: skip


def storage_dtype(name: str) -> np.dtype:
    """A NumPy dtype by name; bfloat16 as pynorm's array layer knows it (from ml_dtypes)."""
    if name == "bfloat16":
        if BFLOAT16 is None:
            raise ValueError("bfloat16 needs ml_dtypes: pip install ml_dtypes")
        return BFLOAT16
    return np.dtype(name)


def run(ops: List[str], shapes=None, dtype=np.float32, threads: int = 2, progress=print) -> List[Result]:
    """Measures forward and backward of each op at each shape (at the SIMD level this process
    runs); returns the results."""
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
    dtype = storage_dtype(dtype) if isinstance(dtype, str) else np.dtype(dtype)
    for shape in shapes or NORM_SHAPES + [TINY_SHAPE]:
        x = rng.standard_normal(shape, np.float32).astype(dtype)
        dy = rng.standard_normal(shape, np.float32).astype(dtype)
        w = rng.standard_normal(shape[-1], np.float32).astype(dtype)
        b = rng.standard_normal(shape[-1], np.float32).astype(dtype)
        copies = copy_functions(x, torch)
        for op in ops:
            fwd, bwd, tfwd, tbwd = builders[op](x, w, b, dy)
            for pass_, fn, tfn, elements, bound in [("forward", fwd, tfwd, 2, 1.0), ("backward", bwd, tbwd, 3, 1.5)]:
                # pynorm, torch and the copies in turns: a noisy spell of the machine hits all alike
                times = interleaved_best([fn] + ([] if tfn is None else [tfn]) + copies, repeats=7)
                r = Result(
                    op, pass_, shape, dtype.name, elements * x.nbytes,
                    times[0], None if tfn is None else times[1], bound * min(times[-len(copies):]),
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


# ---------------------------------------------------------------------------------------
# Linear attention
LA_CHUNK = 64


def linear_attention_flops(problems, n, dk, dv, causal, backward):
    """Useful work of linear attention: the chunked algorithm's multiply-adds x 2, counting only
    the causal triangle of each 64-row chunk. Per problem of n tokens: forward 4 n dk dv (state
    update + apply) + n C (dk + dv) (masked chunk); backward 10 n dk dv (dq: update + apply;
    dk, dv: update + two applies) + 3 n C (dk + dv). Non-causal: 4 n dk dv and 8 n dk dv."""
    if not causal:
        return problems * n * (8 if backward else 4) * dk * dv
    if backward:
        return problems * n * (10 * dk * dv + 3 * LA_CHUNK * (dk + dv))
    return problems * n * (4 * dk * dv + LA_CHUNK * (dk + dv))


def interleaved_best(fns: List[Callable[[], object]], repeats: int, min_seconds: float = 0.05) -> List[float]:
    """Best seconds per call of each function, timed in turns (a, b, a, b, ...), so that a
    noisy spell of the machine hits all of them alike."""
    inner = []
    for fn in fns:
        fn()  # warm up
        start = time.perf_counter()
        fn()
        inner.append(max(1, int(min_seconds / max(time.perf_counter() - start, 1e-7) / repeats)))
    best = [math.inf] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            for _ in range(inner[i]):
                fn()
            best[i] = min(best[i], (time.perf_counter() - start) / inner[i])
    return best


def linear_attention_cases(threads: int = 2, repeats: int = 7, progress=print) -> List[dict]:
    """Linear attention vs torch, float32: causal forward+backward at B=4, H=8, N=2048, D=64
    against torch's chunked form (chunk 64, batched matmuls, autograd) and its masked quadratic
    form; non-causal forward (+backward) against q @ (k^T @ v); the trainer's regime
    (128, 33, 32) and P1's fused form of it (projections included, flops counted as the
    projections plus attention); per-call overhead; the trainer's projection and weight-gradient products
    (pynorm.matmul) against torch's; NumPy's 2048^3 float32 matmul as the machine's rate.
    pynorm and torch are timed in turns. Returns rows {case, seconds, flops, pynorm_seconds}:
    for a torch row, pynorm_seconds is the time of the pynorm row it is compared with, and
    "speedup" is seconds / pynorm_seconds."""
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(threads)
    pynorm.set_num_threads(threads)
    rows: List[dict] = []
    rng = np.random.default_rng(0)
    flops = linear_attention_flops
    B, H, N, D = 4, 8, 2048, 64
    q, k, v, dout = ((0.3 * rng.standard_normal((B, H, N, D))).astype(np.float32) for _ in range(4))
    Bt, Nt, Dt = 128, 33, 32  # the trainer's regime
    qs, ks, vs, ds = (rng.standard_normal((Bt, Nt, Dt)).astype(np.float32) for _ in range(4))
    one = np.ones((1, 1, 1), np.float32)
    xm, wm, gm = (
        rng.standard_normal(shape).astype(np.float32) for shape in ((Bt * Nt, Dt), (Dt, 2 * Dt), (Bt * Nt, 2 * Dt))
    )
    wq, wv = np.ascontiguousarray(wm[:, :Dt]), np.ascontiguousarray(wm[:, Dt:].T)  # P1's W, V

    def la(q, k, v, dout=None, causal=False):
        def run():
            pynorm.linear_attention(q, k, v, causal=causal, n_threads=threads)
            if dout is not None:
                pynorm.linear_attention_backward(dout, q, k, v, causal=causal, n_threads=threads)

        return run

    # (pynorm case, work, pynorm function, [(torch case, torch function)], slow torch)
    groups = [
        (f"pynorm causal fwd+bwd B={B} H={H} N={N} D={D}",
         flops(B * H, N, D, D, True, False) + flops(B * H, N, D, D, True, True), la(q, k, v, dout, True)),
        ("pynorm causal fwd", flops(B * H, N, D, D, True, False), la(q, k, v, causal=True)),
        ("pynorm non-causal fwd", flops(B * H, N, D, D, False, False), la(q, k, v)),
        ("pynorm non-causal fwd+bwd", flops(B * H, N, D, D, False, False) + flops(B * H, N, D, D, False, True),
         la(q, k, v, dout)),
        (f"pynorm non-causal fwd ({Bt}, {Nt}, {Dt})", flops(Bt, Nt, Dt, Dt, False, False), la(qs, ks, vs)),
        (f"pynorm non-causal fwd+bwd ({Bt}, {Nt}, {Dt})",
         flops(Bt, Nt, Dt, Dt, False, False) + flops(Bt, Nt, Dt, Dt, False, True), la(qs, ks, vs, ds)),
        ("pynorm per-call overhead (1 token, D=1)", None, la(one, one, one)),
        (f"pynorm P1 fused fwd+bwd ({Bt}, {Nt}, {Dt})",
         2 * flops(Bt, Nt, Dt, Dt, False, False) + 2 * flops(Bt, Nt, Dt, Dt, False, True),
         lambda: (pynorm.merged_linear_attention(qs, wq, wv, n_threads=threads),
                  pynorm.merged_linear_attention_backward(ds, qs, wq, wv, n_threads=threads))),
        # the trainer's projection (x [W^T V^T]) and weight gradient ([dq dv]^T x)
        (f"pynorm matmul [{Bt * Nt} x {Dt}] @ [{Dt} x {2 * Dt}]", 2 * Bt * Nt * Dt * 2 * Dt,
         lambda: pynorm.matmul(xm, wm, n_threads=threads)),
        (f"pynorm matmul [{Bt * Nt} x {2 * Dt}]^T [{Bt * Nt} x {Dt}]", 2 * Bt * Nt * Dt * 2 * Dt,
         lambda: pynorm.matmul(gm, xm, transpose_a=True, n_threads=threads)),
    ]  # fmt: skip
    against = [[] for _ in groups]
    if torch is not None:
        tq, tk, tv = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
        tqs, tks, tvs = (torch.from_numpy(x).requires_grad_() for x in (qs, ks, vs))
        tdout, tds, t1 = torch.from_numpy(dout), torch.from_numpy(ds), torch.ones(1, 1, 1)
        chunk_mask = torch.tril(torch.ones(LA_CHUNK, LA_CHUNK, dtype=torch.bool))
        full_mask = torch.tril(torch.ones(N, N, dtype=torch.bool))

        def chunked(q, k, v):
            n_chunks = q.shape[-2] // LA_CHUNK
            qc, kc, vc = (x.reshape(x.shape[:-2] + (n_chunks, LA_CHUNK, x.shape[-1])) for x in (q, k, v))
            kv = kc.transpose(-1, -2) @ vc  # every chunk's state
            states = kv.cumsum(-3) - kv  # the sum of the chunks before
            scores = (qc @ kc.transpose(-1, -2)).masked_fill(~chunk_mask, 0)
            return (qc @ states + scores @ vc).reshape(q.shape[:-1] + v.shape[-1:])

        def quadratic(q, k, v):
            return (q @ k.transpose(-1, -2)).masked_fill(~full_mask, 0) @ v

        def linear(q, k, v):
            return q @ (k.transpose(-1, -2) @ v)

        def merged(x, W, V):
            return (x @ W.T) @ (x.transpose(-1, -2) @ (x @ V.T))

        def fwd(f, *inputs):
            def run():
                with torch.no_grad():
                    f(*inputs)

            return run

        def fwd_bwd(f, grad, *inputs):
            def run():
                for x in inputs:
                    x.grad = None
                f(*inputs).backward(grad)

            return run

        with torch.no_grad():
            assert np.allclose(pynorm.linear_attention(q, k, v, causal=True), chunked(tq, tk, tv).numpy(), atol=1e-3)
        against = [
            [("torch chunked (C=64, autograd) fwd+bwd", fwd_bwd(chunked, tdout, tq, tk, tv)),
             ("torch quadratic masked (autograd) fwd+bwd", fwd_bwd(quadratic, tdout, tq, tk, tv))],
            [("torch chunked fwd", fwd(chunked, tq, tk, tv))],
            [("torch q @ (k^T @ v) fwd", fwd(linear, tq, tk, tv))],
            [("torch q @ (k^T @ v) fwd+bwd (autograd)", fwd_bwd(linear, tdout, tq, tk, tv))],
            [(f"torch q @ (k^T @ v) fwd ({Bt}, {Nt}, {Dt})", fwd(linear, tqs, tks, tvs))],
            [(f"torch fwd+bwd (autograd) ({Bt}, {Nt}, {Dt})", fwd_bwd(linear, tds, tqs, tks, tvs))],
            [("torch per-call overhead (same)", fwd(linear, t1, t1, t1))],
            [(f"torch autograd, same ({Bt}, {Nt}, {Dt})",
              fwd_bwd(merged, tds, tqs, *(torch.from_numpy(a).requires_grad_() for a in (wq, wv))))],
            [("torch x @ w (same)", fwd(torch.matmul, *(torch.from_numpy(a) for a in (xm, wm))))],
            [("torch g^T @ x (same)", fwd(lambda g, x: g.T @ x, *(torch.from_numpy(a) for a in (gm, xm))))],
        ]  # fmt: skip
    else:
        progress("torch is not installed: the torch rows are skipped")

    def add(case, seconds, work=None, pynorm_seconds=None):
        rows.append({"case": case, "seconds": seconds, "flops": work, "pynorm_seconds": pynorm_seconds})
        progress(format_linear_attention_row(rows[-1]))

    try:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(limits=threads)
    except ImportError:  # NumPy's BLAS then runs with its own thread count
        limits = None
    try:
        a, b = (rng.standard_normal((2048, 2048)).astype(np.float32) for _ in range(2))
        add("numpy matmul 2048^3 float32", best_time(lambda: a @ b, repeats=repeats), 2 * 2048**3)
        for (case, work, fn), others in zip(groups, against):
            # the quadratic form takes seconds a call: its group is timed a few times only
            slow = any("quadratic" in name for name, _ in others)
            times = interleaved_best([fn] + [f for _, f in others], max(3, repeats // 2) if slow else repeats,
                                     0.0 if slow else 0.05)  # fmt: skip
            add(case, times[0], work)
            for (name, _), t in zip(others, times[1:]):
                add(name, t, work, times[0])
    finally:
        if limits is not None:
            limits.unregister()
    return rows


def format_linear_attention_row(row: dict) -> str:
    seconds = row["seconds"]
    t = f"{seconds * 1e3:9.3f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:8.1f} us"
    rate = f"{row['flops'] / seconds / 1e9:9.1f}" if row["flops"] else " " * 9
    ratio = f"{seconds / row['pynorm_seconds']:10.2f}x" if row["pynorm_seconds"] else ""
    return f"{row['case']:<48}{t:>12}{rate}{ratio}"


LA_HEADER = f"{'linear attention (float32)':<48}{'time':>12}{'GFLOP/s':>9}{'speedup':>11}"


HEADER = (
    f"{'op':<11}{'pass':<9}{'shape':<14}{'dtype':<8}{'pynorm GB/s':>12}{'torch GB/s':>11}{'speedup':>9}{'of bound':>9}"
)


def format_row(r: Result) -> str:
    torch_gbs = "-" if r.torch_gbs is None else f"{r.torch_gbs:.2f}"
    speedup = "-" if r.speedup is None else f"{r.speedup:.2f}x"
    shape = "x".join(map(str, r.shape))
    figures = f"{r.pynorm_gbs:>12.2f}{torch_gbs:>11}{speedup:>9}{r.of_bound:>9.2f}"
    return f"{r.op:<11}{r.pass_:<9}{shape:<14}{r.dtype:<8}{figures}"


def markdown_table(results: List[Result]) -> str:
    """One row per case; with one SIMD level its GB/s, torch's and the fractions, with several
    a column per level (fraction of the copy bound) and the speedup over torch at each."""
    levels = list(dict.fromkeys(r.simd for r in results))
    if len(levels) == 1:
        lines = [
            f"| op | pass | shape | pynorm GB/s | torch GB/s | speedup | fraction of copy bound ({levels[0]}) |",
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
    cases: dict = {}
    for r in results:
        cases.setdefault((r.op, r.pass_, tuple(r.shape), r.dtype), {})[r.simd] = r
    lines = [
        "| op | pass | shape | "
        + " | ".join(f"of bound, {lv}" for lv in levels)
        + " | "
        + " | ".join(f"x torch, {lv}" for lv in levels)
        + " |",
        "|---|---|---|" + "---:|" * (2 * len(levels)),
    ]
    for (op, pass_, shape, dtype), by_level in cases.items():
        fractions = [f"{by_level[lv].of_bound:.2f}" if lv in by_level else "-" for lv in levels]
        speedups = ["-" if lv not in by_level or by_level[lv].speedup is None else f"{by_level[lv].speedup:.1f}x"
                    for lv in levels]  # fmt: skip
        lines.append(
            f"| {op} | {pass_} | {'x'.join(map(str, shape))} {dtype} | " + " | ".join(fractions + speedups) + " |"
        )
    return "\n".join(lines)


def _shape(text: str) -> tuple:
    """'4096x4096' -> (4096, 4096)."""
    try:
        rows, dim = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROWSxDIM, e.g. 4096x4096, got {text!r}") from None
    if rows < 1 or dim < 1:
        raise argparse.ArgumentTypeError(f"rows and dim must be positive, got {text!r}")
    return rows, dim


def cpu_name() -> str:
    """The CPU's model name (Linux), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def results_from_rows(rows: List[dict]) -> List[Result]:
    """Result objects from the JSON rows of --json."""
    return [Result(row["op"], row["pass"], tuple(row["shape"]), row["dtype"], row["bytes"], row["pynorm_s"],
                   row["torch_s"], row["bound_s"], row["simd"]) for row in rows]  # fmt: skip


def render(path: str) -> str:
    """A markdown page from a --json file: where and how it was measured, then the table."""
    with open(path) as f:
        return render_data(json.load(f), path)


def render_data(data: dict, path: str) -> str:
    """:func:`render` of the already loaded JSON ``data`` of file ``path``."""
    results = results_from_rows(data["results"])
    meta = data.get("meta", {})
    lines = [
        "# Norm kernels: speed against the copy bound and against torch",
        "",
        f"Generated (`python -m pynorm.docs`, or `pynorm bench --render {path}`) from {path}, which",
        f"`{meta.get('command', 'pynorm bench --json ' + path)}` wrote"
        + (f" on {meta['date']}" if "date" in meta else "")
        + ".",
        "",
        f"CPU: {meta.get('cpu', 'unknown')}; {meta.get('threads', '?')} threads; "
        f"pynorm {data['config'].get('version')},"
        f" SIMD levels timed: {', '.join(dict.fromkeys(r.simd for r in results))}.",
        "",
        "Fraction of the copy bound: the time of a copy of the same bytes (forward: one copy of x;",
        "backward: 1.5 copies, reading x and dy and writing dx), measured in turns with the kernel in",
        "the same run, over the kernel's time; plain calls (outputs allocated by pynorm), the backward",
        "given the forward's statistics as torch's autograd keeps them. x torch: torch's time over",
        "pynorm's, same run (torch's ops do not depend on pynorm's SIMD level). The tiny [4224x32]",
        "case lives in cache: its fraction of a copy is not a bound, its speedup is the figure.",
        "",
        markdown_table(results),
    ]
    overhead = data.get("overhead") or {}
    if overhead:
        calls = ", ".join(f"{k.replace('_s', '')} {v * 1e6:.2f} us" for k, v in overhead.items())
        lines += ["", f"Per-call overhead (1 x 32 row LayerNorm forward): {calls}."]
    return "\n".join(lines) + "\n"


def run_levels(levels: List[str], ops: List[str], dtypes: List[str], threads: int, shapes=None) -> List[Result]:
    """run() at each SIMD level, each in a child process with PYNORM_SIMD set, one after the other."""
    results = []
    for level in levels:
        print(f"-- SIMD {level} (child process)", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "results.json")
            command = [sys.executable, "-m", "pynorm.bench", "--ops", *ops, "--dtypes", *dtypes,
                       "--threads", str(threads), "--json", path, "--no-overhead"]  # fmt: skip
            if shapes:
                command += ["--shapes", *("x".join(map(str, s)) for s in shapes)]
            # the child imports the pynorm this process runs (installed or a built source tree),
            # first on its path; cwd is not the caller's folder, whose pynorm/ could shadow it
            root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            path_env = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
            env = {**os.environ, "PYNORM_SIMD": level, "PYTHONPATH": path_env}
            subprocess.run(command, env=env, cwd=tmp, check=True)
            with open(path) as f:
                rows = json.load(f)["results"]
        results += results_from_rows(rows)
    return results


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
    parser.add_argument("--ops", nargs="+", default=NORM_OPS + ["linear_attention"],
                        choices=NORM_OPS + ["linear_attention"])  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    dtypes = ["float32", "float64", "bfloat16", "float16"]
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=dtypes,
                        help="storage types of the norm cases (default float32)")  # fmt: skip
    parser.add_argument(
        "--shapes",
        nargs="+",
        metavar="ROWSxDIM",
        type=_shape,
        help=f"norm shapes (default {' '.join('x'.join(map(str, s)) for s in NORM_SHAPES + [TINY_SHAPE])})",
    )
    parser.add_argument("--simd", nargs="+", metavar="LEVEL",
                        help="time the norm ops at these SIMD levels ('all': every level this CPU runs), "
                             "each in a child process; default: the level pynorm picked")  # fmt: skip
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument("--plot", help="draw a bar chart to this PNG file")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    parser.add_argument("--render", metavar="JSON", help="print a markdown page from a --json file and exit")
    parser.add_argument("--no-overhead", action="store_true", help=argparse.SUPPRESS)  # the children of --simd
    args = parser.parse_args(argv)
    if args.render:
        print(render(args.render), end="")
        return 0
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    supported = pynorm.config()["simd_levels_supported"]
    levels = supported[::-1] if args.simd == ["all"] else args.simd
    unknown = [lv for lv in levels or [] if lv not in supported]
    if unknown:
        parser.error(f"--simd: {unknown} not supported here; this CPU runs {supported} (or 'all')")
    print(
        f"pynorm {pynorm.__version__}, SIMD {', '.join(levels) if levels else pynorm.simd_level()}, "
        f"{args.threads} threads"
    )
    norm_ops = [op for op in args.ops if op != "linear_attention"]
    results = []
    if norm_ops and levels:
        results = run_levels(levels, norm_ops, args.dtypes, args.threads, args.shapes)
    elif norm_ops:
        print(HEADER)
        for dtype in args.dtypes:
            results += run(norm_ops, args.shapes, dtype=dtype, threads=args.threads)
    la_rows = []
    if "linear_attention" in args.ops:
        print(LA_HEADER)
        la_rows = linear_attention_cases(args.threads)
    overhead = {} if args.no_overhead else per_call_overhead(args.threads)
    if overhead:
        print("per-call overhead (1 x 32 row): " + ", ".join(f"{k} = {v * 1e6:.2f} us" for k, v in overhead.items()))
    if args.markdown:
        print(markdown_table(results))
    if args.json:
        with open(args.json, "w") as f:
            meta = {
                "cpu": cpu_name(),
                "threads": args.threads,
                "date": time.strftime("%Y-%m-%d"),
                "command": "pynorm bench " + " ".join(sys.argv[1:] if argv is None else argv),
            }
            json.dump({"config": pynorm.config(), "meta": meta, "results": [r.row() for r in results],
                       "overhead": overhead, "linear_attention": la_rows}, f, indent=1)  # fmt: skip
    if args.plot and results:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
