"""DistributedDataParallel with pynorm's modules: 2 CPU processes (gloo, loopback), spawned,
train the same small model with pynorm.torch's LayerNorm / RMSNorm / DyT and with torch.nn's
(DyT: its torch composite) from the same initial parameters on the same per-rank batches; the
parameters after a few steps must agree to the dtype's tolerance (tests/tolerances.py:
float64 1e-9, float32 2e-5, relative with an elementwise floor at the tensor's size), and be
bitwise equal across the two ranks (DDP's all-reduce).

The training runs in a child interpreter started on this file (``python test_torch_ddp.py
OUT_DIR PORT``), whose ``__main__`` the spawned workers can import, whatever pytest's import
mode.
"""

import os
import socket
import subprocess
import sys

import pytest

import pynorm

torch = pytest.importorskip("torch")

from tolerances import assert_close  # noqa: E402

WORLD_SIZE = 2
STEPS = 5
DTYPES = ("float64", "float32")


class CompositeDyT(torch.nn.Module):
    """DyT as torch ops (the paper's DynamicTanh), the reference for pynorm.torch.DyT."""

    def __init__(self, dim, alpha0=0.5):
        super().__init__()
        self.alpha = torch.nn.Parameter(torch.full((1,), alpha0))
        self.weight = torch.nn.Parameter(torch.ones(dim))
        self.bias = torch.nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return self.weight * torch.tanh(self.alpha * x) + self.bias


def build(kind, dtype):
    """The model with torch.nn's norms ('torch') or pynorm's ('pynorm'); same parameter names."""
    import pynorm.torch as pt

    layer_norm, rms_norm, dyt = (pt.LayerNorm, pt.RMSNorm, pt.DyT) if kind == "pynorm" else (
        torch.nn.LayerNorm, torch.nn.RMSNorm, CompositeDyT)  # fmt: skip
    return torch.nn.Sequential(
        torch.nn.Linear(12, 32), layer_norm(32), torch.nn.GELU(), torch.nn.Linear(32, 32), rms_norm(32, eps=1e-6),
        dyt(32), torch.nn.Linear(32, 4),
    ).to(getattr(torch, dtype))  # fmt: skip


def train(rank, port, out_dir):
    """One DDP rank: both models, every dtype, STEPS SGD steps each; saves the final parameters."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        results = {}
        for dtype in DTYPES:
            torch.manual_seed(0)
            reference = build("torch", dtype)
            for kind in ("torch", "pynorm"):
                model = build(kind, dtype)
                model.load_state_dict(reference.state_dict())
                ddp = torch.nn.parallel.DistributedDataParallel(model)
                opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
                for step in range(STEPS):
                    g = torch.Generator().manual_seed(1000 * rank + step)  # each rank its own batch
                    x = torch.randn((16, 12), generator=g).to(model[0].weight.dtype)
                    target = torch.randn((16, 4), generator=g).to(x.dtype)
                    opt.zero_grad()
                    torch.nn.functional.mse_loss(ddp(x), target).backward()
                    opt.step()
                results[kind, dtype] = {n: p.detach().clone() for n, p in model.named_parameters()}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_pynorm_modules_train_like_torch_nn(tmp_path):
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    root = os.path.dirname(os.path.dirname(pynorm.__file__))  # the pynorm under test (installed, in CI)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, os.path.dirname(os.path.abspath(__file__)), env.get("PYTHONPATH")) if p
    )
    subprocess.run(
        [sys.executable, os.path.abspath(__file__), str(tmp_path), str(_free_port())],
        env=env,
        cwd=tmp_path,
        check=True,
        timeout=300,
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    for dtype in DTYPES:
        torch.manual_seed(0)
        initial = build("torch", dtype).state_dict()
        for name, ours in ranks[0]["pynorm", dtype].items():
            assert torch.equal(ours, ranks[1]["pynorm", dtype][name]), f"{name}: ranks differ"
            assert not torch.equal(ours, initial[name]), f"{name} did not train"
            theirs = ranks[0]["torch", dtype][name]
            assert_close(ours.double().numpy(), theirs.double().numpy(), dtype, f"DDP {dtype} {name}")


if __name__ == "__main__":
    import torch.multiprocessing as mp

    mp.spawn(train, args=(int(sys.argv[2]), sys.argv[1]), nprocs=WORLD_SIZE, join=True)
