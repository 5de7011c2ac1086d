"""Helpers shared by the P2/P3 experiment modules: thread limits, progress bars, seeds,
capturing a model's norm inputs/outputs, and matplotlib without a display."""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Tuple

import numpy as np


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS limited to one thread, pynorm to one thread, for the tiny models' training.

    The models here multiply (tokens x 8) by (8 x 8) matrices: OpenBLAS's threads gain
    nothing at those sizes and, on a shared 2-core machine, spin-wait so badly that a step
    is up to 40x slower (measured: a 50000 x 8 @ 8 x 8 product takes 0.5 ms on one thread,
    20 ms on two with the machine busy).
    """
    import pynorm

    previous = pynorm.get_num_threads()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn / scipy stacks
        limits = contextlib.nullcontext()
    else:
        limits = threadpool_limits(1, user_api="blas")
    pynorm.set_num_threads(1)
    try:
        with limits:
            yield
    finally:
        pynorm.set_num_threads(previous)


def progress_bar(enabled: bool, total: int, desc: str):
    """A tqdm bar (or a no-op stand-in when disabled or tqdm is missing)."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)
        except ImportError:  # pragma: no cover
            pass
    return _NoBar()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextlib.contextmanager
def capture_norms(model, kinds: Tuple[type, ...]) -> Iterator[List[Tuple[str, List]]]:
    """Records (input, output) of every sub-module of a type in ``kinds`` during forwards.

    Yields a list of (dotted name, records) in model order; ``records`` gets one
    (input, output) pair per call. The instances' ``forward`` is wrapped only inside the
    ``with`` block.
    """
    found = [(name.rstrip("."), m) for name, m in model.modules() if isinstance(m, kinds)]
    log: List[Tuple[str, List]] = [(name, []) for name, _ in found]
    for (name, module), (_, records) in zip(found, log):
        original = module.forward

        def wrapped(x, _original=original, _records=records):
            y = _original(x)
            _records.append((np.array(x), np.array(y)))
            return y

        module.forward = wrapped
    try:
        yield log
    finally:
        for _, module in found:
            del module.forward


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def mean_or_none(values: List) -> object:
    """The mean of the non-None values (None if there are none)."""
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def as_float(value) -> object:
    """A NumPy scalar as a Python float (None stays None), for JSON."""
    return None if value is None else float(value)


def nested_mean(runs: List[Dict[str, float]]) -> Dict[str, float]:
    """Key-wise mean of a list of flat dicts."""
    keys = runs[0].keys() if runs else []
    return {k: mean_or_none([r[k] for r in runs]) for k in keys}
