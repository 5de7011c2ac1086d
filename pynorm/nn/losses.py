"""Losses (forward returns the scalar loss, backward the gradient with respect to the
prediction) and metrics."""

from __future__ import annotations

import numpy as np

from .. import ops


class Loss:
    """Base class: ``forward(pred, target) -> float`` keeps what ``backward() -> dpred`` needs."""

    def __init__(self):
        self._saved = None

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> float:
        return self.forward(pred, target)

    def forward(self, pred: np.ndarray, target: np.ndarray) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _take(self):
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        saved, self._saved = self._saved, None
        return saved


class MSELoss(Loss):
    """Mean over all elements of ``(pred - target)^2`` (torch's ``mse_loss``)."""

    def forward(self, pred, target):
        if pred.shape != target.shape:
            raise ValueError(f"MSELoss: pred {pred.shape} and target {target.shape} differ")
        diff = pred - target
        self._saved = diff
        return float(np.mean(diff * diff))

    def backward(self):
        diff = self._take()
        return diff * (2.0 / diff.size)


class CrossEntropyLoss(Loss):
    """Cross-entropy of logits (..., classes) against integer labels (...), averaged over
    every position (torch's ``cross_entropy`` on the flattened positions), on
    :func:`pynorm.cross_entropy` and its backward (the softmax recomputed from the logits)."""

    def forward(self, logits, labels):
        labels = np.asarray(labels)
        if logits.shape[:-1] != labels.shape:
            raise ValueError(
                f"CrossEntropyLoss: logits {logits.shape} need labels of shape {logits.shape[:-1]}, got {labels.shape}"
            )
        if labels.dtype.kind not in "iu":
            raise TypeError(f"CrossEntropyLoss: labels must be integers, got {labels.dtype}")
        losses = ops.cross_entropy(logits, labels)
        self._saved = (logits, labels)
        return float(losses.mean())

    def backward(self):
        logits, labels = self._take()
        return ops.cross_entropy_backward(1.0 / max(labels.size, 1), logits, labels)


class SubspaceDistanceLoss(Loss):
    """P1's loss: the mean over the batch of ``Dist^2(y, V) = ||(I - P_V) y||^2``.

    pred y: (batch, d); target: an orthonormal basis of V, (batch, d, r) or (batch, d) for
    r = 1. With ``normalize=True`` y is first scaled to unit norm, so the loss is sin^2 of
    the angle between y and V (r = 1) whatever ||y|| is.

    Gradient: ``2 r / batch`` with ``r = (I - P_V) y``; normalised,
    ``2 (r - u ||r||^2) / (||y|| batch)`` with ``u = y / ||y||`` and ``r = (I - P_V) u``.
    """

    def __init__(self, normalize: bool = False):
        super().__init__()
        self.normalize = bool(normalize)

    def forward(self, pred, basis):
        if basis.ndim == pred.ndim:
            basis = basis[..., None]
        if pred.ndim != 2 or basis.shape[:2] != pred.shape:
            raise ValueError(
                f"SubspaceDistanceLoss: pred (batch, d) {pred.shape} needs a basis of shape "
                f"(batch, d, r), got {basis.shape}"
            )
        norm = np.sqrt((pred * pred).sum(-1, keepdims=True)) if self.normalize else None
        unit = pred / norm if self.normalize else pred
        residual = unit - (basis @ (np.swapaxes(basis, -1, -2) @ unit[..., None]))[..., 0]
        distance = (residual * residual).sum(-1, keepdims=True)
        self._saved = (residual, unit, norm, distance)
        return float(distance.mean())

    def backward(self):
        residual, unit, norm, distance = self._take()
        scale = 2.0 / residual.shape[0]
        if not self.normalize:
            return residual * scale
        return (residual - unit * distance) * (scale / norm)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of positions whose arg-max logit is the label."""
    return float(np.mean(logits.argmax(-1) == labels))


#: Losses by name.
LOSSES = {"mse": MSELoss, "cross_entropy": CrossEntropyLoss, "subspace_distance": SubspaceDistanceLoss}
