"""Small seeded data generators for the two trainer experiments.

* :func:`power_method_data` -- P1: X with unit-norm columns, a query a, and the top
  eigenvector(s) of X X^T as the target subspace.
* :func:`majority_data` -- P2's majority task, from integer partitions of the length.

Every generator takes a ``seed`` and returns a dict of arrays with a common first axis.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .module import as_dtype


def power_method_data(
    n_samples: int,
    d: int = 16,
    n: int = 32,
    *,
    rank: int = 1,
    spike: float = 0.0,
    seed: int = 0,
    dtype: Any = np.float64,
) -> Dict[str, np.ndarray]:
    """P1's data: ``X`` (samples, d, n) with unit-norm columns, query ``a`` (samples, d) of unit
    norm independent of X, and ``basis`` (samples, d, rank): the top ``rank`` eigenvectors of
    X X^T (orthonormal columns).

    Columns are g / ||g|| with g ~ N(0, I + spike u u^T), u uniform on the sphere per sample
    (spike = 0: isotropic; larger spikes widen the gap lambda_1 / lambda_2).
    """
    if not 1 <= rank <= d:
        raise ValueError(f"power_method_data: rank must be in [1, d={d}], got {rank}")
    if spike < 0:
        raise ValueError(f"power_method_data: spike must be >= 0, got {spike}")
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n_samples, d, n))
    if spike:
        u = rng.standard_normal((n_samples, d, 1))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        g += (np.sqrt(1.0 + spike) - 1.0) * u * (np.swapaxes(u, 1, 2) @ g)
    x = g / np.linalg.norm(g, axis=1, keepdims=True)
    a = rng.standard_normal((n_samples, d))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    _, vectors = np.linalg.eigh(x @ np.swapaxes(x, 1, 2))
    dt = as_dtype(dtype)
    return {"X": x.astype(dt), "a": a.astype(dt), "basis": vectors[..., ::-1][..., :rank].astype(dt)}


@functools.lru_cache(maxsize=4)
def majority_partitions(length: int = 50, max_parts: int = 20, min_gap: int = 6) -> Tuple[Tuple[int, ...], ...]:
    """Integer partitions of ``length`` into at most ``max_parts`` parts (largest first) whose
    largest part exceeds the second largest (0 if none) by at least ``min_gap``."""

    def partitions(total: int, parts: int, largest: int):
        if total == 0:
            yield ()
            return
        if parts == 0 or largest * parts < total:
            return
        for p in range(min(total, largest), 0, -1):
            for rest in partitions(total - p, parts - 1, p):
                yield (p,) + rest

    return tuple(
        (first,) + rest
        for first in range(length, 0, -1)
        for rest in partitions(length - first, max_parts - 1, first - min_gap)
    )


def majority_data(
    n_sequences: Optional[int] = 100_000,
    *,
    vocab: int = 20,
    length: int = 50,
    min_gap: int = 6,
    per_partition: int = 10,
    seed: int = 0,
) -> Dict[str, np.ndarray]:
    """P2's majority task: ``tokens`` (sequences, length) int64 and ``labels`` (same shape,
    the most frequent token at every position).

    Each partition of ``length`` (see :func:`majority_partitions`; parts <= vocab) gives
    ``per_partition`` sequences: distinct random token ids per part, written as contiguous
    blocks in random order. There are 69,414 such partitions of 50 (694,140 sequences); the
    paper used ~100,000, so ``n_sequences // per_partition`` partitions are drawn at random
    without replacement (all of them with ``n_sequences=None``). No positional information.
    """
    parts_list = majority_partitions(length, vocab, min_gap)
    rng = np.random.default_rng(seed)
    if n_sequences is None:
        chosen = np.arange(len(parts_list))
    else:
        count = n_sequences // per_partition
        if not 1 <= count <= len(parts_list):
            raise ValueError(
                f"majority_data: n_sequences must be in [{per_partition}, "
                f"{len(parts_list) * per_partition}], got {n_sequences}"
            )
        chosen = np.sort(rng.choice(len(parts_list), count, replace=False))
    tokens = np.empty((len(chosen) * per_partition, length), dtype=np.int64)
    labels = np.empty(len(tokens), dtype=np.int64)
    row = 0
    for index in chosen:
        parts = np.array(parts_list[index])
        for _ in range(per_partition):
            ids = rng.permutation(vocab)[: len(parts)]
            order = rng.permutation(len(parts))
            tokens[row] = np.repeat(ids[order], parts[order])
            labels[row] = ids[0]
            row += 1
    return {"tokens": tokens, "labels": np.repeat(labels[:, None], length, axis=1)}


def stratified_split(labels: np.ndarray, test_fraction: float = 0.2, *, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices): ``test_fraction`` of every label class goes to the test set."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"stratified_split: test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(test_fraction * len(members)))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
