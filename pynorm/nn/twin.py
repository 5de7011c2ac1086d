"""The torch twin: the same model in torch (same parameter values and names), fed the same
batches, trained with torch's own autograd, optimizer, scheduler and clipping -- and
compared with the pynorm trainer after every step.

torch is imported only inside these functions; it is never a dependency of pynorm.nn.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from .models import build_experiment
from .train import Trainer

#: Worst relative error allowed per tensor over a twin run, by dtype.
#: float64: both sides round at ~1e-16 per operation; the runs measure <= ~1e-13 over 50
#: steps, so 1e-9 leaves room only for rounding, not for a wrong formula.
#: float32: rounding is ~6e-8 per operation, and gradients are sums over every position of
#: the batch (300,000 for P2's batch of 6000 x 50) taken in different orders by pynorm's
#: kernels, OpenBLAS and torch, then carried forward by training. Measured worst over 50
#: steps: ~4e-6 for power-method, ~3e-4 for majority at batch 6000 (small gradients such as
#: biases lose the most digits). 1e-2 leaves ~30x headroom, while a wrong formula or a
#: missing term gives errors of order 0.1 to 1.
TOLERANCES = {"float64": 1e-9, "float32": 1e-2}


def relative_error(value: np.ndarray, reference: np.ndarray) -> float:
    """max |value - reference| / max |reference| (0 when both are exactly zero)."""
    value, reference = np.asarray(value, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    diff = float(np.max(np.abs(value - reference), initial=0.0))
    scale = float(np.max(np.abs(reference), initial=0.0))
    if diff == 0.0:
        return 0.0
    return diff / scale if scale > 0 else float("inf")


class TorchTwin:
    """The torch copy of a freshly built :class:`pynorm.nn.Trainer`: model, loss, optimizer,
    learning-rate schedule and clipping, starting from the trainer's current parameters."""

    def __init__(self, trainer: Trainer):
        import torch

        from . import _torch_twin

        if trainer.step != 0:
            raise ValueError("TorchTwin: build the twin from a trainer that has not stepped yet")
        self._t = _torch_twin
        self._torch = torch
        exp = trainer.experiment
        self.inputs, self.target, self.clip_norm = exp.inputs, exp.target, trainer.config.clip_norm
        self.model = _torch_twin.to_torch(exp.model)
        self.loss = _torch_twin.loss_fn(exp.loss)
        self.optimizer, self.scheduler = _torch_twin.optimizer(trainer.optimizer, self.model)

    def train_step(self, batch: Dict[str, np.ndarray]) -> float:
        """One step on ``batch`` (forward, backward, clipping, optimizer and scheduler steps);
        returns the loss before the update."""
        t = self._t
        self.optimizer.zero_grad(set_to_none=False)
        pred = self.model(*(t.tensor(batch[k]) for k in self.inputs))
        loss = self.loss(pred, t.tensor(batch[self.target]))
        loss.backward()
        if self.clip_norm is not None:
            t.clip(self.model, self.clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    def parameters(self) -> Dict[str, np.ndarray]:
        """Dotted name -> parameter (a NumPy copy)."""
        return {n: p.detach().numpy().copy() for n, p in self.model.named_parameters()}

    def gradients(self) -> Dict[str, np.ndarray]:
        """Dotted name -> gradient (a NumPy copy; zeros where torch has none)."""
        return {
            n: np.zeros(tuple(p.shape)) if p.grad is None else p.grad.numpy().copy()
            for n, p in self.model.named_parameters()
        }


def compare_with_twin(model_name: str, steps: int = 50, dtype: Any = "float64", **overrides: Any) -> Dict[str, float]:
    """Trains experiment ``model_name`` with pynorm.nn and with its torch twin side by side on
    the same batches for ``steps`` steps; after every step compares the loss, every
    parameter's gradient and every updated parameter.

    ``overrides`` are experiment / TrainConfig settings (see
    :func:`pynorm.nn.build_experiment`). Returns the worst relative error over the run per
    tensor: ``"loss"``, ``"grad:<param>"``, ``"param:<param>"``.
    """
    experiment, config = build_experiment(model_name, dtype, **{"progress": False, **overrides, "steps": steps})
    trainer = Trainer(experiment, config)
    twin = TorchTwin(trainer)
    worst: Dict[str, float] = {}

    def record(key: str, error: float) -> None:
        worst[key] = max(worst.get(key, 0.0), error)

    for step in range(steps):
        batch = trainer.batch(step)
        loss = trainer.train_step(batch)["loss"]
        record("loss", relative_error(loss, twin.train_step(batch)))
        grads, twin_grads = trainer.model.gradients(), twin.gradients()
        params, twin_params = trainer.model.parameters(), twin.parameters()
        for name in params:
            record(f"grad:{name}", relative_error(grads[name], twin_grads[name]))
        for name in params:
            record(f"param:{name}", relative_error(params[name], twin_params[name]))
    return worst


def check_with_twin(
    model_name: str, steps: int = 50, dtype: Any = "float64", **overrides: Any
) -> Tuple[Dict[str, float], float, bool]:
    """:func:`compare_with_twin` plus the verdict: ``(errors, tolerance, all within tolerance)``."""
    errors = compare_with_twin(model_name, steps, dtype, **overrides)
    tolerance = TOLERANCES[np.dtype(dtype).name]
    return errors, tolerance, all(e <= tolerance for e in errors.values())
