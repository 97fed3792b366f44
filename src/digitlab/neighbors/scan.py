"""The pruned kNN search's per-row work as one compiled pass (numba), for the CPU.

Given the lower bounds of a chunk of queries against every training row, each query row is
handled where its bounds sit in cache: pick the few training rows with the smallest bounds,
take their exact distances, then scan the bounds once more and compute exact distances only
where a bound is at most the current k1-th best distance -- the threshold falls as better
neighbours turn up. This replaces a top-k over the whole bound matrix, a compare, a nonzero,
a sort and thousands of small tensor calls.

Speed (2-vCPU EPYC, one thread, 10,000 query rows x 20,000 training rows, rank 96, AVX2
code): 0.18 s, against 0.50 s for the previous version of this pass. Where it comes from:
- The bounds are read in blocks of 64 with a branch-free count of the values under the
  threshold, which LLVM vectorizes; only a block holding one is walked value by value. A
  plain min/compare-and-branch loop stays scalar (measured 0.56 ns per value against 0.08).
- Exact distances are int32 sums of squared uint8 differences: exact with no norms, and the
  training rows cost a quarter of the memory of float32 ones (they are read at random).
- The per-row work is its own compiled function: inside a `prange` body numba's parallel
  lowering left the block loops scalar (2.8x slower). Threads are plain Python threads (the
  function releases the GIL), not `parallel=True`: as fast here (0.12 vs 0.14 s per 10,000
  rows on 2 threads, within noise), a third of the one-off compile time on a new machine
  (2.4 s against 6-7 s) and no second OpenMP runtime beside PyTorch's.
No `fastmath`: the first threshold is +inf, which fastmath's no-infinities flag may not see.

Exactness: every squared difference and their sum (at most 784 * 255**2 < 2**31) is an exact
int32; rows are kept in (distance, index) order, the order the torch path returns.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_BLOCK = 64


@njit(cache=True, inline="always")
def _sq_dist(q, t, j):
    s = np.int32(0)
    for c in range(q.shape[0]):
        diff = np.int32(q[c]) - np.int32(t[j, c])
        s += diff * diff
    return np.float64(s)


@njit(cache=True, inline="always")
def _insert(best_d, best_i, d, j):
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


@njit(cache=True, inline="always")
def _any_below(row, start, limit):
    c = 0
    for lane in range(_BLOCK):
        c += row[start + lane] < limit
    return c > 0


@njit(cache=True, inline="always")
def _any_at_most(row, start, limit):
    c = 0
    for lane in range(_BLOCK):
        c += row[start + lane] <= limit
    return c > 0


@njit(cache=True, inline="always")
def _f32_at_most(x):
    f = np.float32(x)
    if np.float64(f) > x:
        f = np.nextafter(f, np.float32(-np.inf))
    return f


@njit(cache=True, inline="always")
def _offer(cand_v, cand_i, v, j, worst, worst_at):
    cand_v[worst_at] = v
    cand_i[worst_at] = j
    worst, worst_at = cand_v[0], 0
    for p in range(1, cand_v.shape[0]):
        if cand_v[p] > worst:
            worst, worst_at = cand_v[p], p
    return worst, worst_at


@njit(cache=True, inline="always")
def _check(best_d, best_i, cand_i, qi, t, j):
    for p in range(cand_i.shape[0]):
        if cand_i[p] == j:
            return 0
    _insert(best_d, best_i, _sq_dist(qi, t, j), j)
    return 1


@njit(cache=True)
def _nearest_row(row, qi, t, k1, m0, best_d, best_i):
    """One query row; compiled on its own so its block loops vectorize (inside a prange
    body numba's parallel lowering leaves them scalar: measured 2.8x slower)."""
    n = row.shape[0]
    full = n - n % _BLOCK
    cand_v = np.full(m0, np.inf, np.float32)
    cand_i = np.full(m0, -1, np.int64)
    worst, worst_at = np.float32(np.inf), 0
    for start in range(0, full, _BLOCK):
        if _any_below(row, start, worst):
            for j in range(start, start + _BLOCK):
                if row[j] < worst:
                    worst, worst_at = _offer(cand_v, cand_i, row[j], j, worst, worst_at)
    for j in range(full, n):
        if row[j] < worst:
            worst, worst_at = _offer(cand_v, cand_i, row[j], j, worst, worst_at)
    best_d[:] = np.inf
    best_i[:] = n
    for p in range(m0):
        if cand_i[p] >= 0:
            _insert(best_d, best_i, _sq_dist(qi, t, cand_i[p]), cand_i[p])
    count = m0
    limit = _f32_at_most(best_d[k1 - 1])
    for start in range(0, full, _BLOCK):
        if _any_at_most(row, start, limit):
            for j in range(start, start + _BLOCK):
                if row[j] <= limit:
                    count += _check(best_d, best_i, cand_i, qi, t, j)
                    limit = _f32_at_most(best_d[k1 - 1])
    for j in range(full, n):
        if row[j] <= limit:
            count += _check(best_d, best_i, cand_i, qi, t, j)
            limit = _f32_at_most(best_d[k1 - 1])
    return count


@njit(cache=True, nogil=True)
def nearest_rows(lb, q, t, k1, m0, out_d, out_i, checked, first, step):
    """Exact k1 nearest (squared distance, index) of rows first, first + step, ... of q.

    lb: (b, n) float32 lower bounds on the squared distances; q (b, d) and t (n, d) uint8
    pixels, C-contiguous. Writes out_d (b, k1) float64, out_i (b, k1) int64, nearest first
    (ties by index), and checked (b,) int64: how many exact distances each row needed. Runs
    without the GIL, so one Python thread per core can each take every step-th row.
    """
    for i in range(first, lb.shape[0], step):
        checked[i] = _nearest_row(lb[i], q[i], t, k1, m0, out_d[i], out_i[i])
