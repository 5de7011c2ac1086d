"""Linear attention speed: pynorm vs torch, and the machine's own matmul rate, in ONE run.

    python benchmarks/linear_attention_speed.py [--threads 2] [--repeats 7] [--quick]

Everything is float32 with the same thread count (pynorm n_threads, torch.set_num_threads,
and threadpoolctl for NumPy's BLAS). Each number is the best of several repeats: the machine
is shared and noisy, so compare the ratios printed by one run, not numbers across runs.

Useful work (GFLOP/s columns) is counted for the chunked algorithm (chunk C = 64), counting
only the causal triangle of each chunk, per problem of N tokens:
    forward   2 N Dk Dv (state update) + 2 N Dk Dv (state apply) + N C (Dk + Dv) (masked chunk)
    backward  10 N Dk Dv (dq: update + apply; dk, dv: update + 2 applies) + 3 N C (Dk + Dv)
Non-causal: forward 4 N Dk Dv. The quadratic torch form does more arithmetic than this; it is
rated by the same useful work.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

CHUNK = 64


def best_time(fn, repeats, min_time=0.05):
    """Best seconds per call over `repeats` repeats of enough calls to last min_time."""
    fn()  # warm up
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    calls = max(1, int(min_time / once))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def flops(n_problems, n, dk, dv, causal, backward):
    if not causal:
        return n_problems * n * (8 if backward else 4) * dk * dv
    if backward:
        return n_problems * n * (10 * dk * dv + 3 * CHUNK * (dk + dv))
    return n_problems * n * (4 * dk * dv + CHUNK * (dk + dv))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller quadratic case")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats

    import torch
    from threadpoolctl import threadpool_limits

    import pynorm

    threads = args.threads
    torch.set_num_threads(threads)
    pynorm.set_num_threads(threads)
    rows = []

    def row(name, seconds, work=None, ref=None):
        rows.append((name, seconds, work, ref))

    with threadpool_limits(limits=threads):
        # ---- the machine: NumPy (BLAS) float32 matmul
        a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
        b = np.random.default_rng(1).standard_normal((2048, 2048)).astype(np.float32)
        t = best_time(lambda: a @ b, repeats)
        row("numpy 2048x2048 @ 2048x2048 float32", t, 2 * 2048**3)

        # ---- causal forward + backward, B=4, H=8, N=2048, D=64
        B, H, N, D = 4, 8, 2048, 64
        rng = np.random.default_rng(2)
        q, k, v, dout = (rng.standard_normal((B, H, N, D)).astype(np.float32) * 0.3 for _ in range(4))
        work_fb = flops(B * H, N, D, D, True, False) + flops(B * H, N, D, D, True, True)

        def pynorm_causal():
            pynorm.linear_attention(q, k, v, causal=True, n_threads=threads)
            pynorm.linear_attention_backward(dout, q, k, v, causal=True, n_threads=threads)

        t_py = best_time(pynorm_causal, repeats)
        t_py_f = best_time(lambda: pynorm.linear_attention(q, k, v, causal=True, n_threads=threads), repeats)
        tq, tk, tv = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
        tdout = torch.from_numpy(dout)
        mask_c = torch.tril(torch.ones(CHUNK, CHUNK, dtype=torch.bool))

        def torch_chunked(q, k, v):
            nc = q.shape[-2] // CHUNK
            qc, kc, vc = (x.reshape(x.shape[0], x.shape[1], nc, CHUNK, x.shape[-1]) for x in (q, k, v))
            kv = kc.transpose(-1, -2) @ vc  # per-chunk states
            states = kv.cumsum(2) - kv  # the states of the earlier chunks
            scores = (qc @ kc.transpose(-1, -2)).masked_fill(~mask_c, 0)
            out = qc @ states + scores @ vc
            return out.reshape(q.shape[:-1] + v.shape[-1:])

        def torch_fb(f):
            def run():
                for x in (tq, tk, tv):
                    x.grad = None
                f(tq, tk, tv).backward(tdout)

            return run

        t_ch = best_time(torch_fb(torch_chunked), repeats)
        t_ch_f = best_time(lambda: torch_chunked(tq, tk, tv).detach(), repeats)
        mask_n = torch.tril(torch.ones(N, N, dtype=torch.bool))

        def torch_quadratic(q, k, v):
            return (q @ k.transpose(-1, -2)).masked_fill(~mask_n, 0) @ v

        t_qd = best_time(torch_fb(torch_quadratic), max(2, repeats // 2), min_time=0.0)
        with torch.no_grad():
            ref = torch_chunked(tq, tk, tv).numpy()
        assert np.allclose(pynorm.linear_attention(q, k, v, causal=True), ref, rtol=1e-3, atol=1e-3)
        row(f"pynorm causal fwd+bwd B={B} H={H} N={N} D={D}", t_py, work_fb)
        row("torch chunked (C=64, autograd) fwd+bwd", t_ch, work_fb, t_py)
        row("torch quadratic masked (autograd) fwd+bwd", t_qd, work_fb, t_py)
        work_f = flops(B * H, N, D, D, True, False)
        row("pynorm causal fwd", t_py_f, work_f)
        row("torch chunked fwd", t_ch_f, work_f, t_py_f)

        # ---- non-causal forward, same shape
        work_nc = flops(B * H, N, D, D, False, False)
        t_py_nc = best_time(lambda: pynorm.linear_attention(q, k, v, n_threads=threads), repeats)
        with torch.no_grad():
            t_t_nc = best_time(lambda: tq @ (tk.transpose(-1, -2) @ tv), repeats)
        row("pynorm non-causal fwd", t_py_nc, work_nc)
        row("torch q @ (k^T @ v) fwd", t_t_nc, work_nc, t_py_nc)
        work_nc_fb = work_nc + flops(B * H, N, D, D, False, True)
        t_py_nc_fb = best_time(
            lambda: (
                pynorm.linear_attention(q, k, v, n_threads=threads),
                pynorm.linear_attention_backward(dout, q, k, v, n_threads=threads),
            ),
            repeats,
        )
        t_t_nc_fb = best_time(torch_fb(lambda q, k, v: q @ (k.transpose(-1, -2) @ v)), repeats)
        row("pynorm non-causal fwd+bwd", t_py_nc_fb, work_nc_fb)
        row("torch q @ (k^T @ v) fwd+bwd", t_t_nc_fb, work_nc_fb, t_py_nc_fb)

        # ---- the trainer regime: (128, 33, 32) non-causal
        Bt, Nt, Dt = 128, 33, 32
        qs, ks, vs, ds = (rng.standard_normal((Bt, Nt, Dt)).astype(np.float32) for _ in range(4))
        tqs, tks, tvs = (torch.from_numpy(x) for x in (qs, ks, vs))
        work_t = flops(Bt, Nt, Dt, Dt, False, False)
        t_py_t = best_time(lambda: pynorm.linear_attention(qs, ks, vs, n_threads=threads), repeats)
        with torch.no_grad():
            t_t_t = best_time(lambda: tqs @ (tks.transpose(-1, -2) @ tvs), repeats)
        row(f"pynorm non-causal fwd ({Bt}, {Nt}, {Dt})", t_py_t, work_t)
        row("torch q @ (k^T @ v) fwd", t_t_t, work_t, t_py_t)
        t_py_tb = best_time(lambda: pynorm.linear_attention_backward(ds, qs, ks, vs, n_threads=threads), repeats)
        tqs2, tks2, tvs2 = (torch.from_numpy(x).requires_grad_() for x in (qs, ks, vs))
        tds = torch.from_numpy(ds)

        def torch_small_fb():
            for x in (tqs2, tks2, tvs2):
                x.grad = None
            (tqs2 @ (tks2.transpose(-1, -2) @ tvs2)).backward(tds)

        t_t_tfb = best_time(torch_small_fb, repeats)
        t_py_tfb = best_time(
            lambda: (
                pynorm.linear_attention(qs, ks, vs, n_threads=threads),
                pynorm.linear_attention_backward(ds, qs, ks, vs, n_threads=threads),
            ),
            repeats,
        )
        work_tfb = work_t + flops(Bt, Nt, Dt, Dt, False, True)
        row(f"pynorm non-causal bwd ({Bt}, {Nt}, {Dt})", t_py_tb, flops(Bt, Nt, Dt, Dt, False, True))
        row(f"pynorm non-causal fwd+bwd ({Bt}, {Nt}, {Dt})", t_py_tfb, work_tfb)
        row("torch (autograd) fwd+bwd", t_t_tfb, work_tfb, t_py_tfb)
        one = np.ones((1, 1, 1), np.float32)
        t_over = best_time(lambda: pynorm.linear_attention(one, one, one, n_threads=1), repeats)
        t1 = torch.ones(1, 1, 1)
        with torch.no_grad():
            t_over_t = best_time(lambda: t1 @ (t1.transpose(-1, -2) @ t1), repeats)
        row("pynorm per-call overhead (1 token, D=1)", t_over)
        row("torch per-call overhead (same)", t_over_t, None, t_over)

    print(f"pynorm {pynorm.__version__}, SIMD {pynorm.simd_level()}, torch {torch.__version__}, "
          f"threads {threads}, best of {repeats} repeats")  # fmt: skip
    print(f"{'case':<50} {'time':>11} {'GFLOP/s':>9} {'pynorm speedup':>15}")
    for name, seconds, work, ref in rows:
        t = f"{seconds * 1e3:9.3f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:8.1f} us"
        g = f"{work / seconds / 1e9:9.1f}" if work else f"{'':9}"
        r = f"{seconds / ref:14.2f}x" if ref else ""
        print(f"{name:<50} {t:>11} {g} {r}")


if __name__ == "__main__":
    main()
