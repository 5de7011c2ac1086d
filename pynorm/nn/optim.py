"""Optimizers (SGD with momentum, Adam, AdamW), learning-rate schedules and gradient
clipping by global norm. The update formulas follow torch.optim's single-tensor code
operation by operation, so the torch twin reproduces them to rounding."""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from .module import Module
from .norms import DyT, LayerNorm, RMSNorm

Schedule = Callable[[int], float]


# -- schedules ---------------------------------------------------------------------------
def make_schedule(
    name: str = "constant", total_steps: int = 0, warmup_steps: int = 0, min_factor: float = 0.0
) -> Schedule:
    """A learning-rate multiplier as a function of the step (0, 1, ...).

    * ``"constant"``: 1 (after an optional linear warmup);
    * ``"linear"``: linear warmup over ``warmup_steps``, then linear decay to ``min_factor`` at
      ``total_steps``;
    * ``"cosine"``: linear warmup, then half a cosine down to ``min_factor`` at ``total_steps``.
    """
    if name not in SCHEDULES:
        raise ValueError(f"make_schedule: unknown schedule {name!r}; choose one of {SCHEDULES}")
    if warmup_steps < 0 or (name != "constant" and total_steps <= warmup_steps):
        raise ValueError(
            f"make_schedule: need 0 <= warmup_steps < total_steps for {name!r}, "
            f"got warmup_steps={warmup_steps}, total_steps={total_steps}"
        )

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if name == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
        shape = 1.0 - progress if name == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return min_factor + (1.0 - min_factor) * shape

    return schedule


SCHEDULES = ("constant", "linear", "cosine")


def clip_grad_norm(grads: Dict[str, np.ndarray], max_norm: float) -> float:
    """Scales all gradients in place so that their global l2 norm is at most ``max_norm``
    (torch's ``clip_grad_norm_``: factor ``max_norm / (norm + 1e-6)`` when below 1).
    Returns the norm before clipping."""
    norms = np.array([np.linalg.norm(g.reshape(-1)) for g in grads.values()])
    total = float(np.linalg.norm(norms))
    factor = max_norm / (total + 1e-6)
    if factor < 1.0:
        for g in grads.values():
            g *= g.dtype.type(factor)
    return total


def default_no_decay(module: Module, local_name: str) -> bool:
    """True for parameters that AdamW should not decay: biases and normalisation parameters."""
    return local_name == "bias" or isinstance(module, (LayerNorm, RMSNorm, DyT))


# -- optimizers --------------------------------------------------------------------------
class Optimizer:
    """Base class. Updates ``model``'s parameters in place from ``model``'s gradients.

    lr is the base learning rate, multiplied at step t by ``schedule(t)``. State (moments,
    the step count) is kept per dotted parameter name; :meth:`state_dict` /
    :meth:`load_state_dict` save and restore it exactly.
    """

    SLOTS: Tuple[str, ...] = ()

    def __init__(
        self,
        model: Module,
        lr: float,
        *,
        weight_decay: float = 0.0,
        schedule: Optional[Schedule] = None,
        no_decay: Optional[Callable[[Module, str], bool]] = None,
    ):
        if not lr > 0:
            raise ValueError(f"{type(self).__name__}: lr must be > 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"{type(self).__name__}: weight_decay must be >= 0, got {weight_decay}")
        self.model = model
        self.lr = float(lr)
        self.schedule = schedule or make_schedule("constant")
        self.steps = 0
        no_decay = no_decay or (lambda module, local: False)
        #: dotted name -> the weight decay applied to it
        self.weight_decay = {
            name: 0.0 if no_decay(m, local) else float(weight_decay) for name, m, local in model.named_parameters()
        }
        self.state: Dict[str, Dict[str, np.ndarray]] = {}

    def current_lr(self) -> float:
        """The learning rate of the next step."""
        return self.lr * self.schedule(self.steps)

    def step(self) -> None:
        """One update of every parameter from its gradient."""
        lr = self.current_lr()
        self.steps += 1
        grads = self.model.gradients()
        for name, param in self.model.parameters().items():
            self._update(name, param, grads[name], lr, self.weight_decay[name])

    def _update(self, name: str, param: np.ndarray, grad: np.ndarray, lr: float, decay: float) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    def _slots(self, name: str, param: np.ndarray) -> Dict[str, np.ndarray]:
        if name not in self.state:
            self.state[name] = {slot: np.zeros_like(param) for slot in self.SLOTS}
        return self.state[name]

    def state_dict(self) -> Tuple[int, Dict[str, np.ndarray]]:
        """(step count, {"<param>/<slot>": array copy})."""
        return self.steps, {f"{n}/{s}": a.copy() for n, slots in self.state.items() for s, a in slots.items()}

    def load_state_dict(self, steps: int, arrays: Dict[str, np.ndarray]) -> None:
        """Restores what :meth:`state_dict` returned."""
        self.steps = int(steps)
        self.state = {}
        for key, value in arrays.items():
            name, slot = key.rsplit("/", 1)
            self.state.setdefault(name, {})[slot] = np.array(value)


class SGD(Optimizer):
    """SGD with optional momentum and L2 weight decay (torch.optim.SGD, no dampening/nesterov)."""

    def __init__(self, model: Module, lr: float, momentum: float = 0.0, **kwargs):
        super().__init__(model, lr, **kwargs)
        self.momentum = float(momentum)
        self.SLOTS = ("momentum",) if self.momentum else ()

    def _update(self, name, param, grad, lr, decay):
        if decay:
            grad = grad + decay * param
        if self.momentum:
            first = name not in self.state
            buf = self._slots(name, param)["momentum"]
            if first:
                buf[...] = grad
            else:
                buf *= self.momentum
                buf += grad
            grad = buf
        param -= lr * grad


class Adam(Optimizer):
    """Adam (torch.optim.Adam, no amsgrad); weight_decay is L2 added to the gradient."""

    SLOTS = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(
        self, model: Module, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, **kwargs
    ):
        super().__init__(model, lr, **kwargs)
        self.betas, self.eps = (float(betas[0]), float(betas[1])), float(eps)

    def _update(self, name, param, grad, lr, decay):
        beta1, beta2 = self.betas
        if decay and self.decoupled:
            param *= 1 - lr * decay
        elif decay:
            grad = grad + decay * param
        slots = self._slots(name, param)
        exp_avg, exp_avg_sq = slots["exp_avg"], slots["exp_avg_sq"]
        exp_avg += (1 - beta1) * (grad - exp_avg)  # torch: exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad
        bias_correction1 = 1 - beta1**self.steps
        bias_correction2_sqrt = math.sqrt(1 - beta2**self.steps)
        denom = np.sqrt(exp_avg_sq) / bias_correction2_sqrt + self.eps
        param -= (lr / bias_correction1) * exp_avg / denom


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay (default 0.01), which by default skips biases
    and normalisation parameters (see :func:`default_no_decay`)."""

    decoupled = True

    def __init__(
        self, model: Module, lr: float = 1e-3, weight_decay: float = 0.01, no_decay=default_no_decay, **kwargs
    ):
        super().__init__(model, lr, weight_decay=weight_decay, no_decay=no_decay, **kwargs)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
