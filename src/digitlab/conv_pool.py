"""The CNN's first stage on the CPU in one pass: conv (1 -> C channels, k x k) -> 2x2 max-pool
-> ReLU, forward and backward, without the full-size activations ever reaching memory.

Why: in the course CNN the first convolution writes 128 x 32 x 26 x 26 floats (11 MB) per
batch, the pool reads them back, its backward zero-fills an 11 MB gradient and scatters into
it, and the conv's weight gradient reads it again. That stage is bound by memory traffic,
not arithmetic (about 50 MFLOP a batch): 12.7 ms of a 2-thread training step in PyTorch's
layers here (2-vCPU EPYC, AVX512), 0.8 + 0.8 ms for these kernels. The four conv values under
each pool window (four stride-2 "phases") are computed where the window is and reduced to
their maximum at once; only the 13 x 13 outputs and the window's choice (one byte) are
stored. The backward needs no input gradient (images do not require one) and routes each
output's gradient to the conv position its window chose.

The same function as `relu(max_pool2d(conv2d(x, w, b), 2))` in PyTorch: the same pool rule
(the first maximum in row-major order; a NaN is always taken), the same ReLU, the same
gradients; only the order of float additions inside each k x k sum differs (tested against
float64). `CourseCNN` uses it on the CPU in float32 when numba is there; elsewhere (a GPU,
bf16 autocast, images that need a gradient) PyTorch's layers run.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np
import torch
import torch.nn.functional as F

from digitlab.device import run_in_threads
from digitlab.double_backward import reference_grads

# The only signatures compiled (C-contiguous arrays, int64 bounds): anything else is a bug and
# raises instead of silently compiling a strided variant (one ran 10x slower).
_FORWARD = (
    "(float32[:, :, ::1], float32[:, ::1], float32[::1], float32[:, :, :, ::1], "
    "uint8[:, :, :, ::1], int64, int64)"
)
_BACKWARD = (
    "(float32[:, :, ::1], float32[:, :, :, ::1], uint8[:, :, :, ::1], float32[:, ::1], "
    "float32[::1], int64, int64)"
)

_lock = threading.Lock()
_loaded: dict = {}


def _kernels(k: int = 3) -> tuple | None:
    """The compiled (forward, weight gradient) kernels for k x k filters, or None where numba
    is missing or cannot compile them.

    Loaded once per process and kernel size: importing numba and loading the kernels from its
    on-disk cache takes 0.3-0.5 s; the first run on a machine compiles them (a few seconds).
    """
    key = "3x3" if k == 3 else "any"
    with _lock:
        if key not in _loaded:
            _loaded[key] = _load(key)
        return _loaded[key]


def _load(key: str) -> tuple | None:
    try:
        from digitlab import conv_pool_kernels as kern  # numba (a core dependency)
    except ImportError:
        return None
    if key == "3x3":
        pair = (kern.forward_rows_3x3, kern.weight_grad_rows_3x3)
    else:
        pair = (kern.forward_rows, kern.weight_grad_rows)
    try:
        for fn, sig in zip(pair, (_FORWARD, _BACKWARD), strict=True):
            fn.compile(sig)
            fn.disable_compile()
    except Exception:  # a numba that cannot compile here: PyTorch's layers are exact too
        return None
    return pair


def available(k: int = 3) -> bool:
    """Whether the fused CPU stage can run here for k x k filters (numba imports and compiles
    its kernels)."""
    return _kernels(k) is not None


def _bounds(n_images: int) -> list[tuple[int, int]]:
    """Image ranges, one per thread (PyTorch's CPU thread count, as its own layers use)."""
    parts = max(1, min(torch.get_num_threads(), n_images))
    edges = [n_images * t // parts for t in range(parts + 1)]
    return list(itertools.pairwise(edges))


class _ConvPoolReLU(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, size
    ) -> torch.Tensor:
        n, _, h, w = x.shape
        n_c, _, k, _ = weight.shape
        fn = _kernels(k)[0]
        h2, w2 = (h - k + 1) // 2, (w - k + 1) // 2
        if size is not None:
            h2, w2 = min(h2, size[0]), min(w2, size[1])
        xs = x.detach().reshape(n, h, w).contiguous()
        taps = weight.detach().reshape(n_c, k * k).t().contiguous()  # (k*k, C)
        b = bias.detach().contiguous()
        out = torch.empty((n, h2, w2, n_c), dtype=torch.float32)
        choice = torch.empty((n, h2, w2, n_c), dtype=torch.uint8)
        arrays = (xs.numpy(), taps.numpy(), b.numpy(), out.numpy(), choice.numpy())
        run_in_threads([(fn, (*arrays, lo, hi)) for lo, hi in _bounds(n)])
        ctx.save_for_backward(xs, choice, weight, bias)
        return out.permute(0, 3, 1, 2)  # (N, C, H2, W2), channels-last in memory

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        xs, choice, weight, bias = ctx.saved_tensors
        n, rows, cols, n_c = choice.shape
        k = weight.shape[-1]
        if torch.is_grad_enabled():  # a gradient of this gradient: PyTorch's layers again

            def stage(w, b):
                out = torch.relu(F.max_pool2d(F.conv2d(xs[:, None], w, b), 2))
                return out[:, :, :rows, :cols]

            needs = ctx.needs_input_grad[1:3]
            return (None, *reference_grads(stage, (weight, bias), needs, grad), None)
        g = grad.permute(0, 2, 3, 1).contiguous()  # free when grad is channels-last already
        parts = _bounds(n)
        # One accumulator per thread: rows 0..k*k-1 the weights', row k*k the bias', then at
        # least 64 bytes of padding so two threads never write the same cache line.
        acc = np.zeros((len(parts), k * k + 1 + -(-16 // n_c), n_c), np.float32)
        fn = _kernels(k)[1]
        arrays = (xs.numpy(), g.numpy(), choice.numpy())
        run_in_threads(
            [
                (fn, (*arrays, acc[t, : k * k], acc[t, k * k], lo, hi))
                for t, (lo, hi) in enumerate(parts)
            ]
        )
        total = torch.from_numpy(acc.sum(0))
        grad_w = total[: k * k].t().reshape(n_c, 1, k, k)
        return None, grad_w.contiguous(), total[k * k].clone(), None


def conv_pool_relu(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """relu(max_pool2d(conv2d(x, weight, bias), 2)) for one-channel images, in one pass.

    x: float32 (N, 1, H, W) on the CPU; weight: float32 (C, 1, k, k); bias: float32 (C,).
    Returns float32 (N, C, (H-k+1)//2, (W-k+1)//2), channels-last in memory; with `size`
    (rows, columns), only that many of the first rows and columns (what the next layer uses;
    the rest is never computed) -- the same as slicing the full output. Gradients flow to
    weight and bias, not to x. Threads: PyTorch's CPU thread count. Raises RuntimeError where
    the kernels cannot run (see `available`).
    """
    if _kernels(weight.shape[-1]) is None:
        raise RuntimeError("the fused conv-pool stage needs numba (pip install numba)")
    return _ConvPoolReLU.apply(x, weight, bias, size)
