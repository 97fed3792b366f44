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

import numpy as np
import torch

RANK = 96  # measured on MNIST: fewer dims cost more exact checks, more dims a bigger product
# Rounding margin relative to |x - mu|^2, per side. The bound is a float32 dot product of 99
# terms whose absolute values sum to at most 2 (|a|^2 + |b|^2), so its error is at most
# 99 * 2**-24 * 2 (|a|^2 + |b|^2) < 1.2e-5 (|a|^2 + |b|^2), below the 2e-5 used.
_REL_SLACK = 2e-5
# The CPU path scans each row's bounds in one compiled pass (digitlab._scan) when numba is
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
        _, vecs = torch.linalg.eigh((centred.T @ centred).double())
        self.V = vecs[:, -min(rank, d) :].contiguous()  # (d, r), orthonormal to 1e-15
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
        """[P, R] in float32, its squared norm, and the rounding margin, for rows of x."""
        parts, norms, slacks = [], [], []
        for s in range(0, len(x), 8192):
            xc = x[s : s + 8192].double() - self.mu
            p = xc @ self.V
            total = (xc * xc).sum(1)
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
) -> tuple[np.ndarray, np.ndarray]:
    """The exact k1 nearest (squared distance, index) of each query row, nearest first.

    q, t: shifted float32 pixels (exact); qn, tn: their exact squared norms (float64).
    Ties in distance are ordered by training index.
    """
    b, n = len(q), len(t)
    lb = buf[:b]
    torch.mm(bounds.query_side(q), bounds.train_side.T, out=lb)  # the bounds, margin included
    # A first handful of candidates gives tau, an upper bound on the k1-th exact distance.
    m0 = min(n, k1 + 4)
    scan = _compiled_scan() if q.device.type == "cpu" else None
    if scan is not None:
        out_d, out_i = np.empty((b, k1)), np.empty((b, k1), np.int64)
        checked = np.empty(b, np.int64)
        with _numba_threads():
            scan(
                lb.numpy(),
                q.numpy(),
                t.numpy(),
                qn.numpy(),
                tn.numpy(),
                k1,
                m0,
                out_d,
                out_i,
                checked,
            )
        return out_d, out_i
    c0 = torch.topk(lb, m0, dim=1, largest=False, sorted=False).indices
    tau = torch.kthvalue(_exact_rows(q, t, qn, tn, c0), k1, dim=1).values.float()
    tau = torch.nextafter(tau, torch.full_like(tau, float("inf")))  # never round tau down
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
    # Sort by (row, distance): distances are integers below 2**27, so one int64 key does it;
    # stable, so equal distances keep training-index order.
    key = rows.to(torch.int64) * (1 << 27) + d.to(torch.int64)
    order = torch.argsort(key, stable=True)
    cols, d = cols[order], d[order]
    starts = torch.cumsum(counts, 0) - counts
    pos = starts[:, None] + torch.arange(k1, device=q.device)[None, :]  # each row has >= k1
    return d[pos].cpu().numpy(), cols[pos].cpu().numpy()


def _compiled_scan():
    if not USE_NUMBA:
        return None
    try:
        from digitlab._scan import nearest_rows  # numba (extra `fast`): only where it runs
    except ImportError:  # numba missing or too old for this Python: the torch path is exact too
        return None
    return nearest_rows


class _numba_threads:
    """Run numba's parallel loop on as many threads as torch is set to use."""

    def __enter__(self):
        import numba  # the optional extra `fast`, loaded only with the compiled scan

        self.previous = numba.get_num_threads()
        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))

    def __exit__(self, *exc):
        import numba  # the optional extra `fast`, loaded only with the compiled scan

        numba.set_num_threads(self.previous)
