"""The base class of every layer: parameters, gradients, children and saved activations.

A :class:`Module` owns plain NumPy arrays:

* ``module.params``: name -> parameter array (read them, or assign new arrays of the same
  shape and dtype);
* ``module.grads``: name -> gradient array of the same shape, which ``backward`` ADDS to
  (call :meth:`Module.zero_grad` between steps).

``forward`` pushes what its ``backward`` needs onto a per-module stack and ``backward`` pops
it, so a module applied several times with the same weights (P1's looped block, a tied
embedding) is differentiated correctly as long as the backward calls come in reverse order.
With ``train(False)`` nothing is saved (evaluation).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterator, Tuple

import numpy as np

#: The dtypes the trainer supports.
DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


def as_dtype(dtype: Any) -> np.dtype:
    """float32 / float64 (a name or a NumPy dtype) as a NumPy dtype; anything else is an error."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in DTYPES.values():
        raise ValueError(f"pynorm.nn: dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return dt


def sum_leading(x: np.ndarray, keep: int = 1) -> np.ndarray:
    """The sum of ``x`` over all but its last ``keep`` axes (a parameter's gradient summed over
    the batch), as one BLAS product with a vector of ones: NumPy's ``sum(axis=0)`` of a
    C-contiguous array adds one short row at a time, many times slower on tall arrays."""
    tail = x.shape[len(x.shape) - keep :]
    rows = x.reshape(-1, math.prod(tail))
    return (np.ones(rows.shape[0], rows.dtype) @ rows).reshape(tail)


class Module:
    """A layer with explicit forward/backward, parameters and gradients (see the module doc)."""

    def __init__(self, dtype: Any = np.float64):
        self.dtype = as_dtype(dtype)
        self.params: Dict[str, np.ndarray] = {}
        self.grads: Dict[str, np.ndarray] = {}
        self.training = True
        self._children: Dict[str, Module] = {}
        self._saved: list = []

    # -- structure -------------------------------------------------------------------
    def add_param(self, name: str, value: np.ndarray) -> np.ndarray:
        """Registers a parameter (converted to the module's dtype) and a zero gradient."""
        value = np.array(value, dtype=self.dtype)
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)
        return value

    def add_child(self, name: str, module: "Module") -> "Module":
        """Registers a sub-module; its parameters appear as ``name.<param>``."""
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}.{name} must be a pynorm.nn Module, got {type(module).__name__}")
        if module.dtype != self.dtype:
            raise ValueError(f"{type(self).__name__}.{name} has dtype {module.dtype}, expected {self.dtype}")
        self._children[name] = module
        setattr(self, name, module)
        return module

    def children(self) -> Dict[str, "Module"]:
        """The direct sub-modules, by name."""
        return dict(self._children)

    def modules(self, prefix: str = "") -> Iterator[Tuple[str, "Module"]]:
        """(dotted name, module) for this module and every sub-module, depth first."""
        yield prefix, self
        for name, child in self._children.items():
            yield from child.modules(f"{prefix}{name}.")

    def named_parameters(self) -> Iterator[Tuple[str, "Module", str]]:
        """(dotted name, owning module, local name) for every parameter, in a fixed order."""
        for prefix, module in self.modules():
            for local in module.params:
                yield prefix + local, module, local

    def parameters(self) -> Dict[str, np.ndarray]:
        """Dotted name -> parameter array (the arrays themselves, not copies)."""
        return {name: m.params[local] for name, m, local in self.named_parameters()}

    def gradients(self) -> Dict[str, np.ndarray]:
        """Dotted name -> gradient array (the arrays themselves, not copies)."""
        return {name: m.grads[local] for name, m, local in self.named_parameters()}

    # -- state -----------------------------------------------------------------------
    def zero_grad(self) -> None:
        """Sets every gradient to zero (re-allocating it if its parameter was replaced)."""
        for _, module, local in self.named_parameters():
            p, g = module.params[local], module.grads.get(local)
            if g is None or g.shape != p.shape or g.dtype != p.dtype:
                module.grads[local] = np.zeros_like(p)
            else:
                g.fill(0)

    def train(self, mode: bool = True) -> "Module":
        """Training mode saves activations for backward; ``train(False)`` does not."""
        for _, module in self.modules():
            module.training = mode
            module._saved.clear()
        return self

    def load_parameters(self, values: Dict[str, Any]) -> None:
        """Copies values (dotted name -> array) into the parameters; names and shapes must match."""
        params = self.parameters()
        missing, unknown = sorted(set(params) - set(values)), sorted(set(values) - set(params))
        if missing or unknown:
            raise KeyError(f"load_parameters: missing {missing}, unknown {unknown}")
        for name, value in values.items():
            value = np.asarray(value)
            if value.shape != params[name].shape:
                raise ValueError(f"load_parameters: {name} has shape {value.shape}, expected {params[name].shape}")
            params[name][...] = value

    # -- saved activations -------------------------------------------------------------
    def save(self, *values: Any) -> None:
        """Keeps values for the matching backward (only in training mode)."""
        if self.training:
            self._saved.append(values)

    def saved(self) -> tuple:
        """The values the latest un-differentiated forward saved (removes them)."""
        if not self._saved:
            raise RuntimeError(f"{type(self).__name__}.backward called without a matching forward in training mode")
        return self._saved.pop()

    def accumulate(self, name: str, grad: np.ndarray) -> None:
        """Adds ``grad`` to the gradient of parameter ``name``."""
        self.grads[name] += grad

    # -- to be implemented -------------------------------------------------------------
    def forward(self, *inputs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, *inputs: Any) -> Any:
        return self.forward(*inputs)

    def forward_residual(self, x: Any) -> Any:
        """``x + forward(x)`` (a residual connection around the module); modules that can fuse
        the sum into their kernels override it, with :meth:`backward_residual`."""
        return x + self.forward(x)

    def backward_residual(self, dy: Any) -> Any:
        """The backward of :meth:`forward_residual`: ``dy + backward(dy)``."""
        return dy + self.backward(dy)

    def check_input(self, x: np.ndarray, dim: int, what: str = "x") -> np.ndarray:
        """x as an array of the module's dtype whose last axis has ``dim`` entries."""
        x = np.asarray(x)
        if x.ndim < 1 or x.shape[-1] != dim:
            raise ValueError(f"{type(self).__name__}: {what} must have last axis {dim}, got shape {x.shape}")
        if x.dtype != self.dtype:
            raise TypeError(f"{type(self).__name__}: {what} has dtype {x.dtype}, the module has {self.dtype}")
        return x
