"""The pruned kNN search's per-row work as one compiled pass (numba), for the CPU.

Given the lower bounds of a chunk of queries against every training row, each query row is
handled where its bounds sit in cache: pick the few training rows with the smallest bounds,
take their exact distances, then scan the bounds once more and compute exact distances only
where a bound is at most the current k1-th best distance -- the threshold falls as better
neighbours turn up. This replaces a top-k over the whole bound matrix, a compare, a nonzero,
a sort and thousands of small tensor calls (measured: most of the time after the product).

Exactness: pixels are shifted integers, so every partial sum of a dot product is an integer
below 2**24 and float32 adds them exactly in any order; distances are then exact float64
integers. Rows are kept in (distance, index) order, the order the torch path returns.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, fastmath=True, inline="always")
def _sq_dist(q, t, j, qn, tn):
    s = np.float32(0.0)
    for c in range(q.shape[0]):
        s += q[c] * t[j, c]
    return qn + tn[j] - 2.0 * np.float64(s)


@njit(cache=True, inline="always")
def _insert(best_d, best_i, d, j):
    """Insert (d, j) into the sorted lists if it beats the last entry; (d, j) order."""
    k = best_d.shape[0]
    if d > best_d[k - 1] or (d == best_d[k - 1] and j > best_i[k - 1]):
        return
    p = k - 1
    while p > 0 and (best_d[p - 1] > d or (best_d[p - 1] == d and best_i[p - 1] > j)):
        best_d[p] = best_d[p - 1]
        best_i[p] = best_i[p - 1]
        p -= 1
    best_d[p] = d
    best_i[p] = j


@njit(cache=True, parallel=True)
def nearest_rows(lb, q, t, qn, tn, k1, m0, out_d, out_i, checked):
    """Exact k1 nearest (squared distance, index) per row of q, nearest first, into out_*.

    lb: (b, n) float32 lower bounds on the squared distances; q (b, d) and t (n, d) float32
    shifted pixels; qn (b,), tn (n,) their exact squared norms (float64). checked[i] receives
    how many exact distances row i needed (for profiling and tests).
    """
    b, n = lb.shape
    for i in prange(b):
        row = lb[i]
        # 1. The m0 smallest bounds (m0 > k1, small): their exact distances give a threshold.
        cand_v = np.full(m0, np.inf, np.float32)
        cand_i = np.full(m0, -1, np.int64)
        worst, worst_at = np.float32(np.inf), 0
        for j in range(n):
            v = row[j]
            if v < worst:
                cand_v[worst_at] = v
                cand_i[worst_at] = j
                worst, worst_at = cand_v[0], 0
                for p in range(1, m0):
                    if cand_v[p] > worst:
                        worst, worst_at = cand_v[p], p
        best_d = np.full(k1, np.inf)
        best_i = np.full(k1, n, np.int64)
        for p in range(m0):
            j = cand_i[p]
            _insert(best_d, best_i, _sq_dist(q[i], t, j, qn[i], tn), j)
        # 2. Every row whose bound does not exceed the k1-th best so far.
        count = m0
        for j in range(n):
            if row[j] <= best_d[k1 - 1]:
                seen = False
                for p in range(m0):
                    if cand_i[p] == j:
                        seen = True
                if not seen:
                    count += 1
                    _insert(best_d, best_i, _sq_dist(q[i], t, j, qn[i], tn), j)
        out_d[i] = best_d
        out_i[i] = best_i
        checked[i] = count
