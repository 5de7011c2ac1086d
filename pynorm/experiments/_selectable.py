"""Which keys can be selected by attention: P2's linear program, with cheap exact certificates.

Key ``k_i`` of a set ``K`` (n x d) is *selectable* if some query ``q`` scores it strictly above
every other key, ``q . k_i > q . k_j`` for all ``j != i``; otherwise it is *unselectable* (it lies
in the convex hull of the others, or coincides with another key).

The decision is P2's LP (solved with HiGHS through ``scipy.optimize.linprog``)::

    maximise r  s.t.  (k_j - k_i)^T x / ||k_j - k_i|| + r <= 0  for all j != i,
                      x in [-1, 1]^d,  r in [0, 1]

and ``k_i`` is unselectable iff ``r* < 1e-7`` (no lower bound 1e-8 on r: with HiGHS's default
feasibility tolerance 1e-7 every key would then look selectable).

Before the LP, a key can be proved selectable without one: a candidate query q (``k_i``
itself, and ``k_i - mean(K)`` refined by a few perceptron steps) that gives
``q . k_i > q . k_j + margin`` for every other j is a witness, checked in floating point
with a margin far above rounding. A key with a witness is selectable; only keys without
one go to the LP. (Every key of a set of equal-norm
distinct vectors -- LN outputs, which lie on a sphere -- has the witness q = k_i.) The
witness never declares a key unselectable, so the answer is the LP's wherever it matters;
``verify=True`` runs the LP on every key anyway and counts disagreements.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

#: r* below this means unselectable (P2's threshold, HiGHS's default tolerance).
R_THRESHOLD = 1e-7
#: relative margin for a witness query (far above float64 rounding of the dot products).
WITNESS_MARGIN = 1e-9


def lp_margin(keys: np.ndarray, i: int) -> float:
    """r* of P2's LP for key ``i`` of ``keys`` (n x d): > 1e-7 iff key i is selectable."""
    from scipy.optimize import linprog

    keys = np.asarray(keys, dtype=np.float64)
    n, d = keys.shape
    if n == 1:
        return 1.0
    diff = np.delete(keys, i, axis=0) - keys[i]
    norms = np.linalg.norm(diff, axis=1)
    if np.any(norms == 0):  # a duplicate key: never strictly above its twin
        return 0.0
    a_ub = np.hstack([diff / norms[:, None], np.ones((n - 1, 1))])
    c = np.zeros(d + 1)
    c[-1] = -1.0
    bounds = [(-1.0, 1.0)] * d + [(0.0, 1.0)]
    res = linprog(c, A_ub=a_ub, b_ub=np.zeros(n - 1), bounds=bounds, method="highs")
    if res.status != 0:  # x = 0, r = 0 is always feasible and r is bounded: should not happen
        raise RuntimeError(f"linprog failed for key {i}: {res.message}")
    return float(-res.fun)


def witnessed(keys: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Boolean mask: keys proved selectable by an explicit query.

    Candidates, for all keys at once: q = k_i, then q = k_i - mean(K) refined by
    ``iterations`` perceptron steps on the separation problem (q <- q + (k_i - k_j*) / ||.||
    with j* the current best competitor). Every proof is the exact check
    ``q . k_i > max_j q . k_j + margin``.
    """
    keys = np.asarray(keys, dtype=np.float64)
    n = len(keys)
    if n == 1:
        return np.ones(1, dtype=bool)
    eye = np.eye(n, dtype=bool)
    kmax = np.abs(keys).max() + 1e-300
    proved = np.zeros(n, dtype=bool)

    def check(queries):
        scores = queries @ keys.T  # scores[i, j] = q_i . k_j
        own = np.diag(scores).copy()
        masked = np.where(eye, -np.inf, scores)
        rival = masked.argmax(1)
        gap = own - masked[np.arange(n), rival]
        return gap > WITNESS_MARGIN * np.abs(queries).sum(1) * kmax, rival

    ok, _ = check(keys)
    proved |= ok
    queries = keys - keys.mean(0)
    for _ in range(iterations):
        ok, rival = check(queries)
        proved |= ok
        if proved.all():
            break
        step = keys - keys[rival]
        step /= np.linalg.norm(step, axis=1, keepdims=True) + 1e-300
        queries = queries / (np.linalg.norm(queries, axis=1, keepdims=True) + 1e-300) + 0.1 * step
    return proved


def unselectable_mask(
    keys: np.ndarray, *, first_only: bool = False, verify: bool = False
) -> Tuple[np.ndarray, int, int]:
    """(mask of unselectable keys, LPs solved, witness/LP disagreements).

    first_only: stop at the first unselectable key found (enough for "does the set have one");
    the remaining keys are then left False. Keys are tried in order of increasing norm (the
    likeliest to be inside the hull first). verify: run the LP on witnessed keys too.
    """
    keys = np.asarray(keys, dtype=np.float64)
    proved = witnessed(keys)
    mask = np.zeros(len(keys), dtype=bool)
    lps = disagreements = 0
    for i in np.argsort(np.linalg.norm(keys, axis=1)):
        if proved[i] and not verify:
            continue
        lps += 1
        bad = lp_margin(keys, int(i)) < R_THRESHOLD
        if proved[i]:
            disagreements += int(bad)
            continue
        mask[i] = bad
        if bad and first_only:
            break
    return mask, lps, disagreements


def layer_norm_rows(x: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """LN without affine: sqrt(d) * (x - mean) / ||x - mean|| per row."""
    centred = x - x.mean(-1, keepdims=True)
    return centred / np.sqrt((centred * centred).mean(-1, keepdims=True) + eps)
