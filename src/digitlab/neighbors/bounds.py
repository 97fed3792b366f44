"""Exact kNN with fewer multiplications: PCA lower bounds, then exact distances for the few.

For any orthonormal basis V (d x r) and centre mu, with P = (x - mu) V and R = |x - mu - P V^T|,

    |q - t|^2 = |P_q - P_t|^2 + |R-part difference|^2 >= |P_q - P_t|^2 + (R_q - R_t)^2,

a lower bound computed as a squared distance between (r+1)-dimensional vectors [P, R]: one
small matrix product instead of the full 784-dimensional one. Exact distances are then
computed only for the training images whose bound is below the (k+1)-th smallest exact distance
found among a first handful of candidates -- on MNIST with r = 96, about twenty per query.
Every bound is lowered by a margin larger than its float32 rounding error, so no true neighbour
is ever skipped: the result is the same exact top k+1 as the full product gives.
"""

from __future__ import annotations

import contextlib
import sys
import threading

import numpy as np
import torch

from digitlab.device import run_in_threads

# numba (a core dependency) is imported with this package, as scikit-learn imports its compiled
# parts with sklearn. Imported inside the first search instead, its 0.24 s of GIL-held import
# slowed the torch set-up it overlapped: that first call took 0.4 s longer (AVX2 kind, 2 vCPUs:
# 1.38-1.47 s against 0.93-1.02 s). Only the scan's load from numba's cache is left to it.
try:
    from digitlab.neighbors.scan import nearest_rows as _nearest_rows
    from digitlab.neighbors.top_keys import top_keys as _top_keys
except ImportError:  # numba missing or too old for this Python: the torch path is exact too
    _nearest_rows = _top_keys = None

RANK = 96  # measured on MNIST: fewer dims cost more exact checks, more dims a bigger product
# Rounding margin relative to |x - mu|^2, per side. The bound is a float32 dot product of 99
# terms whose absolute values sum to at most 2 (|a|^2 + |b|^2), so its error is at most
# 99 * 2**-24 * 2 (|a|^2 + |b|^2) < 1.2e-5 (|a|^2 + |b|^2), below the 2e-5 used.
_REL_SLACK = 2e-5
# The CPU path scans each row's bounds in one compiled pass (digitlab.neighbors.scan) when numba is
# importable; False forces the all-torch path (GPUs always take it).
USE_NUMBA = True


class BoundIndex:
    """The training side: basis, centre, augmented projections and their norms."""

    def __init__(self, t: torch.Tensor, seed: int = 0, rank: int | None = None):
        n, d = t.shape
        rank = rank or RANK
        gen = torch.Generator().manual_seed(seed)
        # Any orthonormal basis gives a valid bound; a good one (PCA of a sample) a tight one.
        sample = t[torch.randperm(n, generator=gen)[: min(n, 4096)].to(t.device)]
        self.mu = sample.double().mean(0)
        centred = sample - self.mu.float()
        # The covariance only chooses the basis, so float32 serves for it and for eigh (half
        # the time of float64's: 0.03 vs 0.06 s at d = 717); a float64 QR then makes the chosen
        # columns orthonormal to 1e-15, which is what the bound relies on.
        _, vecs = torch.linalg.eigh(centred.T @ centred)
        self.V = torch.linalg.qr(vecs[:, -min(rank, d) :].double())[0].contiguous()  # (d, r)
        aug, aug_sq, slack = self.project(t)
        ones = torch.ones_like(aug_sq)[:, None]
        # [P, R, 1, |.|^2 - margin]: with query_side's rows, one product gives the whole bound.
        self.train_side = torch.cat([aug, ones, (aug_sq - slack)[:, None]], 1).contiguous()

    def query_side(self, q: torch.Tensor) -> torch.Tensor:
        """[-2 P, -2 R, |.|^2 - margin, 1] for query rows: its product with train_side is
        |a - b|^2 - margins, a lower bound on every exact squared distance."""
        aug, aug_sq, slack = self.project(q)
        ones = torch.ones_like(aug_sq)[:, None]
        return torch.cat([aug.mul_(-2), (aug_sq - slack)[:, None], ones], 1)

    def project(self, x: torch.Tensor):
        """[P, R] in float32, its squared norm, and the rounding margin, for rows of x.

        x holds whole numbers (shifted pixels), so |x|^2 is exact in float32 and
        |x - mu|^2 = |x|^2 - 2 x.mu + |mu|^2 and (x - mu) V = x V - mu V are formed in float64
        without a centred copy of x (measured: a third of the build time went to that copy).
        """
        mu_v = self.mu @ self.V
        mu_sq = self.mu @ self.mu
        parts, norms, slacks = [], [], []
        for s in range(0, len(x), 8192):
            xs = x[s : s + 8192]
            xd = xs.double()
            p = xd @ self.V - mu_v
            total = (xs * xs).sum(1).double() - 2 * (xd @ self.mu) + mu_sq
            r = (total - (p * p).sum(1)).clamp(min=0).sqrt()
            aug = torch.cat([p, r[:, None]], 1)
            parts.append(aug.float())
            norms.append((aug * aug).sum(1).float())
            slacks.append((_REL_SLACK * total + 8).float())
        return torch.cat(parts), torch.cat(norms), torch.cat(slacks)


def _exact_rows(q, t, qn, tn, cols: torch.Tensor) -> torch.Tensor:
    """Exact squared distances (float64) of each query row to its own training rows `cols`.

    cols: (b, m) indices; one batched product per call, so the query rows are never copied.
    """
    dots = torch.bmm(t[cols], q[:, :, None])[..., 0]  # exact: partial sums are integers
    return qn[:, None] + tn[cols] - 2 * dots.double()


def nearest(
    q: torch.Tensor,
    t: torch.Tensor,
    qn: torch.Tensor,
    tn: torch.Tensor,
    bounds: BoundIndex,
    k1: int,
    buf: torch.Tensor,
    pixels: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The exact k1 nearest (squared distance, index) of each query row, nearest first.

    q, t: shifted float32 pixels (exact); qn, tn: their exact squared norms (float64).
    pixels: the same query and training rows as uint8 arrays, C-contiguous; where given (and
    on the CPU) the compiled scan runs on them: a quarter of the float32 rows' memory, and
    exact int32 distances with no norms.
    Ties in distance are ordered by training index.

    Three passes, all plain tensor calls (no compiled helper, no per-row Python loop for the
    usual row): the bounds product; the `WIDTH` smallest bounds of each row (one topk) and
    their exact distances (batched products); a row is finished when its WIDTH-th smallest
    bound exceeds its k1-th smallest exact distance found, since every other training row is
    then provably farther. The few rows that are not (about 1 in 10 on MNIST) take the
    threshold scan.
    """
    b, n = len(q), len(t)
    lb = buf[:b]
    torch.mm(bounds.query_side(q), bounds.train_side.T, out=lb)  # the bounds, margin included
    scan = _compiled_scan() if q.device.type == "cpu" and pixels is not None else None
    if scan is not None:
        # One compiled pass per row over its bounds (neighbors.scan): no temporaries the size
        # of the bound matrix. Measured 3.3-3.6x faster than the tensor path below on a
        # loaded machine, whose compare/nonzero/topk temporaries page-fault. Rows are dealt
        # to as many threads as torch may use (the thread picker's choice).
        out_d, out_i = np.empty((b, k1)), np.empty((b, k1), np.int64)
        checked = np.empty(b, np.int64)
        args = (lb.numpy(), pixels[0], pixels[1], k1, min(n, k1 + 4), out_d, out_i, checked)
        n_threads = max(1, min(torch.get_num_threads(), b))
        run_in_threads([(scan, (*args, first, n_threads)) for first in range(n_threads)])
        return out_d, out_i
    width = min(n, max(WIDTH, 2 * k1))
    lb_top, cand = torch.topk(lb, width, dim=1, largest=False, sorted=True)
    d = _exact_rows_blocked(q, t, qn, tn, cand)  # (b, width) exact float64
    key = _order_key(d, cand)
    kth = torch.kthvalue(key, k1, dim=1).values
    done = (lb_top[:, -1].double() > (kth >> _IDX_BITS).double()) | (width == n)
    best = torch.topk(key, k1, dim=1, largest=False, sorted=True).values
    out_d = (best >> _IDX_BITS).double()
    out_i = best & ((1 << _IDX_BITS) - 1)
    rest = torch.nonzero(~done).flatten()
    if len(rest):
        tau = (kth[rest] >> _IDX_BITS).float()
        tau = torch.nextafter(tau, torch.full_like(tau, float("inf")))  # never round tau down
        d2, i2 = _scan(q[rest], t, qn[rest], tn, lb[rest], tau, k1)
        out_d[rest], out_i[rest] = d2, i2
    return out_d.cpu().numpy(), out_i.cpu().numpy()


# Candidates per row taken from the smallest bounds: on MNIST (rank 96, k1 = 4) the exact
# 4 nearest are proven among the first 32 for ~90% of rows; wider costs more exact products.
WIDTH = 32
_IDX_BITS = 31  # order keys: distance (an integer below 2**27) * 2**31 + training index


def _order_key(d: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """One int64 per (distance, index) pair: sorting keys sorts by distance, then index."""
    return (d.to(torch.int64) << _IDX_BITS) | idx


def _exact_rows_blocked(q, t, qn, tn, cols: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """_exact_rows in blocks of query rows, so each gathered block stays in cache."""
    out = torch.empty(cols.shape, dtype=torch.float64, device=q.device)
    for s in range(0, len(q), rows):
        out[s : s + rows] = _exact_rows(
            q[s : s + rows], t, qn[s : s + rows], tn, cols[s : s + rows]
        )
    return out


def _scan(q, t, qn, tn, lb, tau, k1: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k1 nearest for rows whose candidates are every training row with bound <= tau."""
    b = len(q)
    rows, cols = torch.nonzero(lb <= tau[:, None], as_tuple=True)  # row-major order
    counts = torch.bincount(rows, minlength=b)
    # One gather and matrix-vector product per query row: measured faster than gathering
    # both sides pair by pair, or padding rows to a common width (the copies leave the cache).
    dots = torch.empty(len(rows), device=q.device)
    start = 0
    for i, count in enumerate(counts.tolist()):
        end = start + count
        torch.mv(t.index_select(0, cols[start:end]), q[i], out=dots[start:end])
        start = end
    d = qn[rows] + tn[cols] - 2 * dots.double()  # exact: the dots are integers below 2**24
    key = rows.to(torch.int64) * (1 << 27) + d.to(torch.int64)
    order = torch.argsort(key, stable=True)  # by (row, distance), then training index
    cols, d = cols[order], d[order]
    starts = torch.cumsum(counts, 0) - counts
    pos = starts[:, None] + torch.arange(k1, device=q.device)[None, :]  # each row has >= k1
    return d[pos], cols[pos]


def _compiled_scan():
    return _nearest_rows if USE_NUMBA else None


def compiled_top_keys():
    """The full int8 search's compiled per-row selection (`neighbors.top_keys`), or None."""
    return _top_keys if USE_NUMBA else None


# The one signature each compiled pass is called with (C-contiguous arrays, Python ints):
# loading it explicitly fetches the compiled code from numba's cache without running it.
_SIGNATURE = (
    "(float32[:, ::1], uint8[:, ::1], uint8[:, ::1], int64, int64, "
    "float64[:, ::1], int64[:, ::1], int64[::1], int64, int64)"
)
_TOP_KEYS_SIGNATURE = "(int32[:, ::1], int32[::1], int32[:, ::1], int64[:, ::1], int64, int64)"
_loader: threading.Thread | None = None
_loader_lock = threading.Lock()


def _load_scan(previous_interval: float) -> None:
    try:
        for compiled, signature in (
            (_compiled_scan(), _SIGNATURE),
            (compiled_top_keys(), _TOP_KEYS_SIGNATURE),
        ):
            if compiled is not None:
                # Any failure here (a compile error) is raised again by the search's first call.
                with contextlib.suppress(Exception):
                    compiled.compile(signature)
    finally:
        sys.setswitchinterval(previous_interval)


def preload_scan() -> None:
    """Start loading the compiled passes (the pruned search's scan, the int8 search's
    selection) in a background thread (once per process).

    Loading them from numba's on-disk cache takes 0.13-0.16 s on a 2-vCPU machine (numba itself
    is imported with this module; the first run on a machine compiles them: about 3.5 s).
    Started as a search begins, that load overlaps the work before the first chunk (the
    training index, and the pruned search's PCA bounds: about 0.3 s of GIL-free torch work)
    instead of adding to it.
    """
    global _loader
    if not USE_NUMBA:
        return
    with _loader_lock:
        if _loader is None:
            # The load holds the GIL for most of its time, and a thread waiting for it gets
            # it only every switch interval (5 ms): the search's short GIL-free torch calls
            # would queue behind the import. A 0.1 ms interval, only while it loads, lets
            # them through.
            previous = sys.getswitchinterval()
            sys.setswitchinterval(min(previous, 1e-4))
            _loader = threading.Thread(
                target=_load_scan, args=(previous,), name="digitlab-scan-load", daemon=True
            )
            _loader.start()


def warm_scan() -> None:
    """Wait until the compiled passes are loaded (starting the load if nobody has)."""
    preload_scan()
    if _loader is not None:
        _loader.join()
