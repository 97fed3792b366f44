"""Compiled (numba) kernels for `digitlab.conv_pool`: a one-channel convolution, 2x2 max-pool
and ReLU in one pass, and its weight gradient.

Layouts (all C-contiguous): images x (N, H, W) float32; weights w (k*k, C) float32 (tap-major,
so the innermost loop runs over channels and vectorizes); bias b (C,) float32; outputs
(N, H2, W2, C) float32 (channels last) with H2 = (H - k + 1) // 2, and the pool's choice per
output (N, H2, W2, C) uint8: 0..3 = 2 * row offset + column offset of the window's maximum,
4 where the ReLU gave zero (the backward then needs neither the outputs nor a mask: a quarter
of the bytes to read).
Each kernel works on images lo..hi-1 and releases the GIL, so Python threads split a batch.
No `fastmath`: NaN must reach the pool's output as in PyTorch.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _pick(m, a, v, i):
    # PyTorch's max_pool2d rule: a later value is taken when larger, or when NaN.
    if (v > m) | np.isnan(v):  # `|`, not `or`: no branch, so the channel loop vectorizes
        return v, i
    return m, a


@njit(cache=True, nogil=True, inline="always")
def _row4(x, n, r, s):
    # Four neighbouring pixels of image n, row r, from column s.
    return x[n, r, s], x[n, r, s + 1], x[n, r, s + 2], x[n, r, s + 3]


@njit(cache=True, nogil=True, inline="always")
def _patch4(x, n, i, j):
    # The 4x4 input patch under pool window (i, j) of a 3x3 conv, row by row (named values,
    # so they stay in registers): both 3x3 kernels read it the same way.
    r, s = 2 * i, 2 * j
    return _row4(x, n, r, s), _row4(x, n, r + 1, s), _row4(x, n, r + 2, s), _row4(x, n, r + 3, s)


@njit(cache=True, nogil=True)
def forward_rows(x, w, b, out, choice, lo, hi):  # pragma: no cover - compiled
    """relu(max_pool2(conv(x))) for images lo..hi-1 into `out`, the window's choice into
    `choice` (the first maximum in row-major order, a NaN always taken: PyTorch's max_pool2d rule;
    4 where the ReLU gave zero)."""
    k = int(np.sqrt(w.shape[0]))
    n_c = w.shape[1]
    h2 = out.shape[1]
    w2 = out.shape[2]
    acc = np.empty((4, n_c), np.float32)
    for n in range(lo, hi):
        for i in range(h2):
            for j in range(w2):
                for c in range(n_c):
                    acc[0, c] = 0.0
                    acc[1, c] = 0.0
                    acc[2, c] = 0.0
                    acc[3, c] = 0.0
                for u in range(k):
                    r = 2 * i + u
                    for v in range(k):
                        s = 2 * j + v
                        p00 = x[n, r, s]
                        p01 = x[n, r, s + 1]
                        p10 = x[n, r + 1, s]
                        p11 = x[n, r + 1, s + 1]
                        tap = u * k + v
                        for c in range(n_c):
                            wc = w[tap, c]
                            acc[0, c] += p00 * wc
                            acc[1, c] += p01 * wc
                            acc[2, c] += p10 * wc
                            acc[3, c] += p11 * wc
                for c in range(n_c):
                    m, a = _pick(acc[0, c] + b[c], 0, acc[1, c] + b[c], 1)
                    m, a = _pick(m, a, acc[2, c] + b[c], 2)
                    m, a = _pick(m, a, acc[3, c] + b[c], 3)
                    # ReLU after the max: ReLU is monotone, so this is max(relu(conv)).
                    keep = not m <= 0  # NaN kept, as torch.relu does; else no gradient (4)
                    out[n, i, j, c] = m if keep else np.float32(0.0)
                    choice[n, i, j, c] = a if keep else 4


@njit(cache=True, nogil=True)
def weight_grad_rows(x, g, choice, dw, db, lo, hi):  # pragma: no cover - compiled
    """Add the gradients of images lo..hi-1 to dw (k*k, C) and db (C,), float32.

    g: the loss's gradient with respect to the output (N, H2, W2, C). Each output's gradient
    goes to the one conv position its pool window chose, and only where the ReLU let it through
    (choice < 4). Written as four masked sums so the loop over channels vectorizes (the chosen
    position differs between channels).
    """
    k = int(np.sqrt(dw.shape[0]))
    n_c = dw.shape[1]
    h2 = choice.shape[1]
    w2 = choice.shape[2]
    gp = np.empty((4, n_c), np.float32)
    for n in range(lo, hi):
        for i in range(h2):
            for j in range(w2):
                for c in range(n_c):
                    a = choice[n, i, j, c]
                    gn = g[n, i, j, c]  # read unconditionally: a conditional load stays scalar
                    gv = gn if a < 4 else np.float32(0.0)
                    gp[0, c] = gv if a == 0 else np.float32(0.0)
                    gp[1, c] = gv if a == 1 else np.float32(0.0)
                    gp[2, c] = gv if a == 2 else np.float32(0.0)
                    gp[3, c] = gv if a == 3 else np.float32(0.0)
                    db[c] += gv
                for u in range(k):
                    r = 2 * i + u
                    for v in range(k):
                        s = 2 * j + v
                        p00 = x[n, r, s]
                        p01 = x[n, r, s + 1]
                        p10 = x[n, r + 1, s]
                        p11 = x[n, r + 1, s + 1]
                        tap = u * k + v
                        for c in range(n_c):
                            dw[tap, c] += (
                                gp[0, c] * p00 + gp[1, c] * p01 + gp[2, c] * p10 + gp[3, c] * p11
                            )


@njit(cache=True, nogil=True)
def forward_rows_3x3(x, w, b, out, choice, lo, hi):  # pragma: no cover - compiled
    """`forward_rows` for 3x3 kernels, the course's: the nine taps and the 4x4 input patch
    under a window are named, so the whole window's 36 products run in vector registers
    across channels (the generic loop kept its sums in memory: 3-4x slower)."""
    n_c = w.shape[1]
    h2 = out.shape[1]
    w2 = out.shape[2]
    for n in range(lo, hi):
        for i in range(h2):
            for j in range(w2):
                p0, p1, p2, p3 = _patch4(x, n, i, j)
                p00, p01, p02, p03 = p0
                p10, p11, p12, p13 = p1
                p20, p21, p22, p23 = p2
                p30, p31, p32, p33 = p3
                for c in range(n_c):
                    w0, w1, w2_, w3, w4 = w[0, c], w[1, c], w[2, c], w[3, c], w[4, c]
                    w5, w6, w7, w8 = w[5, c], w[6, c], w[7, c], w[8, c]
                    v0 = (
                        p00 * w0
                        + p01 * w1
                        + p02 * w2_
                        + p10 * w3
                        + p11 * w4
                        + p12 * w5
                        + p20 * w6
                        + p21 * w7
                        + p22 * w8
                    ) + b[c]
                    v1 = (
                        p01 * w0
                        + p02 * w1
                        + p03 * w2_
                        + p11 * w3
                        + p12 * w4
                        + p13 * w5
                        + p21 * w6
                        + p22 * w7
                        + p23 * w8
                    ) + b[c]
                    v2 = (
                        p10 * w0
                        + p11 * w1
                        + p12 * w2_
                        + p20 * w3
                        + p21 * w4
                        + p22 * w5
                        + p30 * w6
                        + p31 * w7
                        + p32 * w8
                    ) + b[c]
                    v3 = (
                        p11 * w0
                        + p12 * w1
                        + p13 * w2_
                        + p21 * w3
                        + p22 * w4
                        + p23 * w5
                        + p31 * w6
                        + p32 * w7
                        + p33 * w8
                    ) + b[c]
                    m, a = _pick(v0, 0, v1, 1)
                    m, a = _pick(m, a, v2, 2)
                    m, a = _pick(m, a, v3, 3)
                    keep = not m <= 0  # NaN kept, as torch.relu does; else no gradient (4)
                    out[n, i, j, c] = m if keep else np.float32(0.0)
                    choice[n, i, j, c] = a if keep else 4


@njit(cache=True, nogil=True)
def weight_grad_rows_3x3(x, g, choice, dw, db, lo, hi):  # pragma: no cover - compiled
    """`weight_grad_rows` for 3x3 kernels, the taps named as in `forward_rows_3x3`."""
    n_c = dw.shape[1]
    h2 = choice.shape[1]
    w2 = choice.shape[2]
    for n in range(lo, hi):
        for i in range(h2):
            for j in range(w2):
                p0, p1, p2, p3 = _patch4(x, n, i, j)
                p00, p01, p02, p03 = p0
                p10, p11, p12, p13 = p1
                p20, p21, p22, p23 = p2
                p30, p31, p32, p33 = p3
                for c in range(n_c):
                    a = choice[n, i, j, c]
                    gn = g[n, i, j, c]
                    # Four independent selects (a == 4, the ReLU's zero, matches none); a
                    # separate `a < 4` test made LLVM branch on `a` and stay scalar (10x).
                    g0 = gn if a == 0 else np.float32(0.0)
                    g1 = gn if a == 1 else np.float32(0.0)
                    g2 = gn if a == 2 else np.float32(0.0)
                    g3 = gn if a == 3 else np.float32(0.0)
                    db[c] += (g0 + g1) + (g2 + g3)  # exact: three of the four are zeros
                    dw[0, c] += g0 * p00 + g1 * p01 + g2 * p10 + g3 * p11
                    dw[1, c] += g0 * p01 + g1 * p02 + g2 * p11 + g3 * p12
                    dw[2, c] += g0 * p02 + g1 * p03 + g2 * p12 + g3 * p13
                    dw[3, c] += g0 * p10 + g1 * p11 + g2 * p20 + g3 * p21
                    dw[4, c] += g0 * p11 + g1 * p12 + g2 * p21 + g3 * p22
                    dw[5, c] += g0 * p12 + g1 * p13 + g2 * p22 + g3 * p23
                    dw[6, c] += g0 * p20 + g1 * p21 + g2 * p30 + g3 * p31
                    dw[7, c] += g0 * p21 + g1 * p22 + g2 * p31 + g3 * p32
                    dw[8, c] += g0 * p22 + g1 * p23 + g2 * p32 + g3 * p33
