"""Every CUDA op, forward and backward, once on small awkward shapes: what .ci/gpu runs under
compute-sanitizer (memcheck, racecheck), where only the memory accesses matter."""

import torch

import pynorm

torch.manual_seed(0)
dev = "cuda"
for dtype in (torch.float32, torch.bfloat16):
    for shape in [(1, 1), (3, 7), (5, 33), (2, 1000), (4, 4099), (3, 40000)]:
        x = torch.randn(shape, device=dev).to(dtype) + 3
        dy = torch.randn(shape, device=dev).to(dtype)
        w = torch.randn(shape[-1], device=dev).to(dtype)
        b = torch.randn(shape[-1], device=dev).to(dtype)
        for center, scale in [(True, True), (True, False), (False, True)]:
            _, mean, rstd = pynorm.layer_norm(x, w, b, center=center, scale=scale, return_stats=True)
            pynorm.layer_norm_backward(dy, x, w, b, mean=mean, rstd=rstd, center=center, scale=scale)
        _, rstd = pynorm.rms_norm(x, w, return_stats=True)
        pynorm.rms_norm_backward(dy, x, w, rstd=rstd)
        pynorm.dyt(x, 0.7, w, b)
        pynorm.dyt_backward(dy, x, 0.7, w, b)
        xs = x[:, 1:]  # unaligned rows: the scalar path
        pynorm.layer_norm(xs, w[1:], b[1:])
        pynorm.dyt(xs, 0.7, w[1:], b[1:])
    for n, d in [(1, 1), (13, 8), (70, 17), (130, 64)]:
        q, k, v, do = (0.3 * torch.randn(2, 3, n, d, device=dev).to(dtype) for _ in range(4))
        for causal in (False, True):
            for normalize in (False, True):
                pynorm.linear_attention(q, k, v, causal=causal, normalize=normalize)
                pynorm.linear_attention_backward(do, q, k, v, causal=causal, normalize=normalize)
torch.cuda.synchronize()
print("gpu_exercise: every op ran")
