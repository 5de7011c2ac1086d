"""Cross-entropy of logits against integer labels, forward and backward. CPU only.

For logits of shape (..., C) and integer labels of shape (...), every leading index one
position::

    loss = logsumexp(logits) - logits[label]          (per position, as torch's
                                                        cross_entropy(reduction="none"))
    dlogits = dloss * (softmax(logits) - onehot(label))

The log-sum-exp is shifted by the row maximum (large logits never overflow); the backward
recomputes the softmax from the logits, so nothing is saved between the calls. Arithmetic is
float32 for float32/float16/bfloat16 logits, float64 for float64; exp is a vector polynomial
accurate to about an ulp. A NaN logit makes its position's loss and gradient NaN, as in torch.
Positions are independent: results are bitwise the same whatever the thread count.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from .. import _array


def _checked(fn: str, logits: Any, labels: Any, extra: Tuple[Tuple[str, Any], ...] = ()):
    """logits (CPU, >= 1 class), their [rows, C] view and row stride, and the labels as
    contiguous int64 in [0, C)."""
    names = ("logits", "labels") + tuple(name for name, _ in extra)
    be = _array.backend(fn, names, (logits, labels) + tuple(a for _, a in extra))
    if be is not _array.CPU:
        raise ValueError(f"{fn}: CPU only (no CUDA variant); got GPU arrays")
    logits = be.input(logits, "logits", fn)
    if logits.shape[-1] < 1:
        raise ValueError(f"{fn}: logits must have at least one class (last axis), got shape {tuple(logits.shape)}")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{fn}: labels must be integers, got dtype {labels.dtype}")
    if labels.shape != tuple(logits.shape[:-1]):
        raise ValueError(f"{fn}: labels must have shape {tuple(logits.shape[:-1])} (logits' without the class "
                         f"axis), got {labels.shape}")  # fmt: skip
    classes = logits.shape[-1]
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{fn}: labels must lie in [0, {classes}), got [{labels.min()}, {labels.max()}]")
    labels = np.ascontiguousarray(labels.reshape(-1), dtype=np.int64)
    rows, row_stride = be.rows(logits)
    return be, logits, rows, row_stride, labels


def cross_entropy(logits: Any, labels: Any, *, n_threads: Optional[int] = None) -> np.ndarray:
    """The cross-entropy loss of each position: ``logsumexp(logits) - logits[label]``.

    Args:
        logits: array-like of shape (..., C), C >= 1; float32, float64, float16 or bfloat16.
        labels: integers of shape (...) (logits' shape without the class axis), in [0, C).
        n_threads: threads for this call (default: ``pynorm.get_num_threads()``).

    Returns:
        the losses, of shape (...) and the logits' dtype (their mean is torch's default
        ``cross_entropy``).

        >>> import numpy as np, pynorm
        >>> float(pynorm.cross_entropy(np.log([[0.25, 0.75]]), [1])[0])  # -log 0.75
        0.2876820724517809
    """
    fn = "pynorm.cross_entropy"
    be, logits, rows, row_stride, labels = _checked(fn, logits, labels)
    threads = _array.threads_value(n_threads, "n_threads", fn)
    loss = be.empty(tuple(logits.shape[:-1]), be.dtype(logits))
    be.kernels.cross_entropy_forward(
        logits=rows, logits_row_stride=row_stride, labels=labels, loss=loss.reshape(-1), rows=rows.shape[0],
        classes=logits.shape[-1], dtype=be.code(logits), threads=threads,
    )  # fmt: skip
    return loss


def cross_entropy_backward(dloss: Any, logits: Any, labels: Any, *, n_threads: Optional[int] = None) -> np.ndarray:
    """The gradient of :func:`cross_entropy` with respect to the logits:
    ``dloss * (softmax(logits) - onehot(labels))``.

    Args:
        dloss: the gradient of the loss with respect to each position's loss: an array of
            shape (...) or one number for every position (``1 / positions`` for a mean),
            converted to the logits' dtype.
        logits, labels: as given to the forward.
        n_threads: threads for this call.

    Returns:
        dlogits of the logits' shape and dtype.
    """
    fn = "pynorm.cross_entropy_backward"
    be, logits, rows, row_stride, labels = _checked(fn, logits, labels, (("dloss", dloss),))
    threads = _array.threads_value(n_threads, "n_threads", fn)
    dtype = be.dtype(logits)
    if np.ndim(dloss) == 0:
        grad, stride = np.full(1, _array.real(dloss, "dloss", fn), dtype=dtype), 0
    else:
        grad = be.input(dloss, "dloss", fn)
        if tuple(grad.shape) != tuple(logits.shape[:-1]):
            raise ValueError(f"{fn}: dloss must be one number or have the losses' shape {tuple(logits.shape[:-1])}, "
                             f"got {tuple(grad.shape)}")  # fmt: skip
        grad, stride = np.ascontiguousarray(be.cast(grad, dtype).reshape(-1)), 1
    dlogits = be.empty(tuple(logits.shape), dtype)
    be.kernels.cross_entropy_backward(
        dloss=grad, dloss_stride=stride, logits=rows, logits_row_stride=row_stride, labels=labels,
        dlogits=dlogits.reshape(rows.shape), rows=rows.shape[0], classes=logits.shape[-1],
        dtype=be.code(logits), threads=threads,
    )  # fmt: skip
    return dlogits
