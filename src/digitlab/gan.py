"""The conditional GAN of the course (keras.io's conditional_gan), in PyTorch.

Generator: 128-d Gaussian noise + one-hot class (138 inputs) -> Dense 7*7*138 -> LeakyReLU ->
(138, 7, 7) -> ConvTranspose 128 4x4/2 -> LeakyReLU -> ConvTranspose 128 4x4/2 -> LeakyReLU ->
Conv 1 7x7 -> sigmoid: 1,491,215 parameters. Discriminator: the image stacked with 10 constant
class maps (11 channels) -> Conv 64 3x3/2 -> LeakyReLU -> Conv 128 3x3/2 -> LeakyReLU -> global
max pool -> Dense 1 (a logit): 80,385 parameters. Pure networks and sampling: saving and
loading are in `loaders`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from digitlab.double_backward import reference_grads
from digitlab.errors import ConfigError
from digitlab.preprocess import centre_by_mass
from digitlab.validation import check_seed, is_whole, unit_fraction, whole_number


@dataclass
class GANConfig:
    """The networks' shape (keras.io's conditional GAN); saved beside the generator's weights."""

    latent_dim: int = 128
    n_classes: int = 10
    image_size: int = 28
    g_channels: int = 128
    d_channels: tuple[int, int] = (64, 128)
    leak: float = 0.2

    def __post_init__(self) -> None:
        """Raises ConfigError for shapes no network of this design can have (e.g. from an
        edited config.json: a negative latent size once surfaced as a size mismatch, a NaN
        slope was taken)."""
        for name in ("latent_dim", "n_classes", "g_channels"):
            whole_number(name, getattr(self, name))
        if not (is_whole(self.image_size) and self.image_size % 4 == 0):
            raise ConfigError(f"image_size must be a whole multiple of 4, got {self.image_size!r}")
        channels = tuple(self.d_channels) if isinstance(self.d_channels, (list, tuple)) else ()
        if len(channels) != 2 or not all(is_whole(c) for c in channels):
            raise ConfigError(f"d_channels must be two whole numbers, got {self.d_channels!r}")
        unit_fraction("leak", self.leak)


class Generator(nn.Module):
    """Noise (N, latent_dim) float + one-hot class (N, n_classes) -> images (N, 1, 28, 28) in
    [0, 1]. keras.io's conditional GAN generator."""

    def __init__(self, cfg: GANConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or GANConfig()
        c_in = cfg.latent_dim + cfg.n_classes  # 138
        self.side = cfg.image_size // 4  # 7
        self.fc = nn.Linear(c_in, self.side * self.side * c_in)
        self.up1 = nn.ConvTranspose2d(c_in, cfg.g_channels, 4, stride=2, padding=1)  # 7 -> 14
        self.up2 = nn.ConvTranspose2d(cfg.g_channels, cfg.g_channels, 4, stride=2, padding=1)
        self.out = nn.Conv2d(cfg.g_channels, 1, 7, padding=3)  # 28 -> 28
        self.act = nn.LeakyReLU(cfg.leak)
        keras_init(self)

    def forward(self, z: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        """Images (N, 1, 28, 28) in [0, 1] for noise z (N, latent_dim) and one-hot classes."""
        x = torch.cat([z, onehot], 1)  # (N, 138)
        x = self.act(self.fc(x)).view(len(x), -1, self.side, self.side)  # (N, 138, 7, 7)
        x = upsample(self.up1, x, self.cfg.leak)  # (N, 128, 14, 14)
        x = upsample(self.up2, x, self.cfg.leak)  # (N, 128, 28, 28)
        if x.device.type == "cpu" and not autocasting(x):
            x = conv_to_one_channel(x, self.out.weight, self.out.bias)
        else:  # cuDNN's own kernel (the README's GPU figures), or PyTorch's autocast rules
            x = self.out(x)
        return torch.sigmoid(x)  # (N, 1, 28, 28) in [0, 1]


def upsample(up: nn.ConvTranspose2d, x: torch.Tensor, leak: float) -> torch.Tensor:
    """`leaky_relu(up(x), leak)`; on the CPU in float32, one oneDNN call with the bias and the
    activation fused into the transposed convolution, and the bias's gradient summed apart
    from oneDNN's backward.

    The same values and gradients. Why: asking oneDNN for the bias gradient along with the
    weight and input gradients of the generator's second transposed convolution (output
    64 x 128 x 28 x 28) cost 9-16 ms more than without it, while summing the output gradient
    over batch and pixels takes 1 ms (2-vCPU EPYC, 2 threads; AVX2 kind: 86 -> 79 ms, AVX512:
    77 -> 62 ms for that layer's backward). The fused activation saves a pass over that
    25 MB output and its buffer.
    """
    own = x.device.type == "cpu" and up.bias is not None and type(up) is nn.ConvTranspose2d
    if not own or autocasting(x):
        return nn.functional.leaky_relu(up(x), leak)
    return _UpsampleLeaky.apply(x, up.weight, up.bias, up, leak)


def autocasting(x: torch.Tensor) -> bool:
    """Whether autocast is on for x's device. The hand-written CPU layers then step aside for
    PyTorch's own, which follow autocast's casting rules (bfloat16 training once failed in
    their backward: oneDNN was handed a bfloat16 gradient with float32 weights)."""
    try:
        return torch.is_autocast_enabled(x.device.type)
    except TypeError:  # PyTorch < 2.4: no device argument
        cpu = x.device.type == "cpu"
        return torch.is_autocast_cpu_enabled() if cpu else torch.is_autocast_enabled()


def _transposed(up: nn.ConvTranspose2d, leak: float):
    """`leaky_relu(conv_transpose2d(x, w, b))` with `up`'s geometry, in PyTorch's own ops."""

    def layer(x, w, b):
        y = nn.functional.conv_transpose2d(
            x, w, b, up.stride, up.padding, up.output_padding, up.groups, up.dilation
        )
        return nn.functional.leaky_relu(y, leak)

    return layer


class _UpsampleLeaky(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, up, leak):
        out = _fused(x, weight, bias, up, leak) if x.dtype == torch.float32 else None
        if out is None:
            out = nn.functional.conv_transpose2d(
                x, weight, bias, up.stride, up.padding, up.output_padding, up.groups, up.dilation
            )
            out = nn.functional.leaky_relu_(out, leak)
        ctx.save_for_backward(x, weight, bias, out)
        ctx.up, ctx.leak = up, leak
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, out = ctx.saved_tensors
        up = ctx.up
        if torch.is_grad_enabled():  # a gradient of this gradient: PyTorch's own layers
            needs = ctx.needs_input_grad[:3]
            grads = reference_grads(_transposed(up, ctx.leak), (x, weight, bias), needs, grad)
            return (*grads, None, None)
        # The slope is positive, so the output's sign is the input's.
        grad = torch.ops.aten.leaky_relu_backward(grad, out, ctx.leak, True)
        needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]
        gx, gw = None, None
        if needs_x or needs_w:
            gx, gw, _ = torch.ops.aten.convolution_backward(
                grad,
                x,
                weight,
                None,
                list(up.stride),
                list(up.padding),
                list(up.dilation),
                True,
                list(up.output_padding),
                up.groups,
                [needs_x, needs_w, False],
            )
        gb = grad.sum((0, 2, 3)) if needs_b else None
        return gx, gw, gb, None, None


def _fused(x, weight, bias, up: nn.ConvTranspose2d, leak: float) -> torch.Tensor | None:
    """oneDNN's transposed convolution with the bias and the activation fused (the op that
    PyTorch's inductor calls), or None where this build or CPU has none."""
    global _FUSED
    if _FUSED:
        try:
            return torch.ops.mkldnn._convolution_transpose_pointwise(
                x, weight, bias, list(up.padding), list(up.output_padding), list(up.stride),
                list(up.dilation), up.groups, "leaky_relu", [leak], "",
            )  # fmt: skip
        except (RuntimeError, NotImplementedError):
            _FUSED = False  # not offered here: the two apart from now on
    return None


_FUSED = torch.backends.mkldnn.is_available() and hasattr(
    torch.ops.mkldnn, "_convolution_transpose_pointwise"
)


def conv_to_one_channel(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """The same result as `F.conv2d(x, weight, bias, padding=k // 2)` for ONE output channel
    and an odd k x k kernel (stride 1, "same" padding), as one matrix product and k*k shifted
    sums.

    x: (N, C, H, W) float (either memory format; channels-last is read in place); weight:
    (1, C, k, k); bias: (1,) or None. Returns (N, 1, H, W). Why: oneDNN's direct kernels
    vectorise over output channels, and with just one they run at a few GFLOP/s; this layer
    (the generator's last, 128 -> 1, 7x7) took a third of a CPU training step. Here the channel
    sums are one GEMM, Q (k*k, N*H*W) = W (k*k, C) @ x (C, N*H*W), and each tap's plane of Q is
    added into the output shifted by its offset; the backward is the mirror (each tap's plane
    of the output gradient, shifted back) and one GEMM per gradient. Shifted sums of
    contiguous planes replaced `fold`/`unfold` and the layout copies around them (about 10 ms
    of a 220 ms GAN step). Only the order of the float additions differs from the direct
    convolution (the tests compare the two in float64).
    """
    c, k = x.shape[1], weight.shape[-1]
    if weight.shape != (1, c, k, k) or k % 2 == 0:
        raise ValueError(f"need a (1, {c}, k, k) weight with odd k, got {tuple(weight.shape)}")
    out = _ConvToOneChannel.apply(x, weight)
    return out if bias is None else out + bias.view(1, 1, 1, 1)


def _tap_windows(k: int, h: int, w: int):
    """For each tap t = (u, v): the output window and the same-size window of the input
    plane it reads (offset u - k//2, v - k//2), zero padding left out."""
    r = k // 2
    for u in range(k):
        for v in range(k):
            dy, dx = u - r, v - r
            ys, xs = slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx))
            yq, xq = slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)
            yield u * k + v, (ys, xs), (yq, xq)


class _ConvToOneChannel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        k = weight.shape[-1]
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)  # a view when channels-last
        taps = weight.reshape(c, k * k)  # (C, k*k)
        q = torch.mm(taps.t(), rows.t()).view(k * k, n, h, w)  # one contiguous plane per tap
        out = x.new_zeros(n, h, w)
        for t, (ys, xs), (yq, xq) in _tap_windows(k, h, w):
            out[:, ys, xs] += q[t, :, yq, xq]
        ctx.save_for_backward(x, weight)
        return out[:, None]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        (n, c, h, w), k = x.shape, weight.shape[-1]
        if torch.is_grad_enabled():  # a gradient of this gradient: the direct conv's graph

            def conv(x, w):
                return nn.functional.conv2d(x, w, None, padding=k // 2)

            return reference_grads(conv, (x, weight), ctx.needs_input_grad, grad)
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)  # a view when channels-last
        taps = weight.reshape(c, k * k)
        g = grad.reshape(n, h, w)
        gq = grad.new_zeros(k * k, n, h, w)
        for t, (ys, xs), (yq, xq) in _tap_windows(k, h, w):
            gq[t, :, yq, xq] = g[:, ys, xs]
        gq = gq.view(k * k, n * h * w)
        gx = gw = None
        if ctx.needs_input_grad[0]:
            # (N*H*W, C): the gradient in channels-last order, returned as (N, C, H, W).
            gx = torch.mm(gq.t(), taps.t()).view(n, h, w, c).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            gw = torch.mm(rows.t(), gq.t()).view(1, c, k, k)
        return gx, gw


class Discriminator(nn.Module):
    """Images (N, 1, 28, 28) in [0, 1] + one-hot class (N, n_classes) -> a logit (N, 1), high
    for images it takes for generated ones (keras.io's convention)."""

    def __init__(self, cfg: GANConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or GANConfig()
        c1, c2 = cfg.d_channels
        self.conv1 = nn.Conv2d(1 + cfg.n_classes, c1, 3, stride=2, padding=1)  # 28 -> 14
        self.conv2 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)  # 14 -> 7
        self.fc = nn.Linear(c2, 1)
        self.act = nn.LeakyReLU(cfg.leak)
        keras_init(self)

    def forward(self, images: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        """Logits (N, 1) for images (N, 1, 28, 28) and their one-hot classes (N, n_classes)."""
        x = self._first_layer(images, onehot)  # (N, 64, 14, 14)
        x = self.act(self.conv2(self.act(x)))  # (N, 128, 7, 7)
        return self.fc(torch.amax(x, dim=(2, 3)))  # global max pool -> logit (N, 1)

    def _first_layer(self, images: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        """conv1 of the image stacked with its class maps, without stacking them.

        Each class map is a constant plane (onehot[:, c] everywhere), and a convolution is
        linear, so the maps' part of conv1 is sum_c onehot[:, c] * R_c, where R_c is conv1's
        response to a plane of ones in channel c: one small convolution of n_classes planes
        and one (N, n_classes) x (n_classes, C*H*W) product, added to the image's own
        one-channel convolution. The same function as keras.io's 11-channel layer (the tests
        compare both in float64), with 1/11 of the first layer's image work: a GAN step took
        212 against 217 ms (2-vCPU EPYC, AVX2 kind, median of alternating blocks), and no
        (N, 11, 28, 28) stack is built.
        """
        conv, k = self.conv1, onehot.shape[1]
        n, _, h, w = images.shape
        ones = torch.eye(k, dtype=images.dtype, device=images.device)[:, :, None, None]
        resp = nn.functional.conv2d(  # (k, C, H', W'): R_c for each class c
            ones.expand(k, k, h, w), conv.weight[:, 1:], None, conv.stride, conv.padding
        )
        x = nn.functional.conv2d(
            images, conv.weight[:, :1], conv.bias, conv.stride, conv.padding
        )  # (N, C, H', W')
        c, ho, wo = x.shape[1:]
        if x.is_contiguous(memory_format=torch.channels_last):  # rows (N, H'*W'*C) in place
            rows = x.permute(0, 2, 3, 1).reshape(n, -1)
            rows = torch.addmm(rows, onehot, resp.permute(0, 2, 3, 1).reshape(k, -1))
            return rows.view(n, ho, wo, c).permute(0, 3, 1, 2)
        rows = torch.addmm(x.reshape(n, -1), onehot, resp.reshape(k, -1))
        return rows.view(n, c, ho, wo)


def keras_init(module: nn.Module) -> None:
    """Keras' initialisation (Glorot-uniform weights, zero biases), as keras.io trained it.

    PyTorch's default gives the 138 -> 6,762 dense layer weights three times as large.
    For transposed convolutions Glorot's fans are in_channels * k * k and out_channels * k * k
    either way round, so xavier_uniform_ gives Keras' bound for them too.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


def one_hot(labels, n_classes: int = 10, device=None) -> torch.Tensor:
    """Integer labels (N,) -> float32 one-hot rows (N, n_classes)."""
    labels = torch.as_tensor(labels, dtype=torch.long, device=device)
    return torch.nn.functional.one_hot(labels, n_classes).float()


def check_digit(digit: int, n_classes: int = 10) -> int:
    """`digit` as an int if it is a class in 0..n_classes-1; ConfigError otherwise."""
    if not is_whole(digit, 0) or digit >= n_classes:
        raise ConfigError(f"digit must be a whole number in 0..{n_classes - 1}, got {digit!r}")
    return int(digit)


@torch.no_grad()
def generate(
    generator: Generator, digit: int, n: int = 1, seed: int = 0, centre: bool = True
) -> np.ndarray:
    """`n` images (uint8, (n, 28, 28)) of `digit`, reproducible for a given seed.

    centre: shift each digit so its centre of mass sits where MNIST's do. The course's
    discriminator ends in a global max pool, so it barely sees *where* a digit is, and thin
    digits (1s) drift off-centre; MNIST's own pipeline centred every digit this way.
    """
    digit = check_digit(digit, generator.cfg.n_classes)
    n = check_count("count", n, MAX_GENERATE)
    gen = torch.Generator().manual_seed(check_seed(seed))
    z = torch.randn(n, generator.cfg.latent_dim, generator=gen)
    return _run(generator, z, np.full(n, digit), centre)


@torch.no_grad()
def generate_grid(
    generator: Generator, per_class: int = 8, seed: int = 0, centre: bool = True
) -> np.ndarray:
    """uint8 (n_classes * per_class, 28, 28): row c holds `per_class` images of digit c.

    Every row uses the same `per_class` noise vectors, so the rows differ only by the class.
    """
    k = generator.cfg.n_classes
    per_class = check_count("per_class", per_class, MAX_GENERATE // k)
    gen = torch.Generator().manual_seed(check_seed(seed))
    z = torch.randn(per_class, generator.cfg.latent_dim, generator=gen).repeat(k, 1)
    return _run(generator, z, np.repeat(np.arange(k), per_class), centre)


@torch.no_grad()
def interpolate(
    generator: Generator, start: int, end: int, steps: int = 9, seed: int = 0, centre: bool = True
) -> np.ndarray:
    """uint8 frames (steps, 28, 28) from `start` to `end`: the noise held fixed, the one-hot
    labels blended (keras.io's interpolation)."""
    k = generator.cfg.n_classes
    start, end = check_digit(start, k), check_digit(end, k)
    steps = whole_number("steps", steps, minimum=2)
    if steps > MAX_STEPS:
        raise ConfigError(f"steps must be at most {MAX_STEPS}, got {steps}")
    device = next(generator.parameters()).device
    gen = torch.Generator().manual_seed(check_seed(seed))
    z = torch.randn(1, generator.cfg.latent_dim, generator=gen).repeat(steps, 1).to(device)
    w = torch.linspace(0, 1, steps, device=device)[:, None]
    labels = (1 - w) * one_hot([start], k, device) + w * one_hot([end], k, device)
    with _eval_mode(generator):
        return _finish(to_uint8(generator(z, labels)), centre)


MAX_GENERATE = 10_000  # images per call: bounds the memory a request can take
MAX_STEPS = 200  # frames of one interpolation
_BATCH = 256  # images per forward pass: memory stays flat however many are asked for


def check_count(name: str, n, limit: int) -> int:
    """`n` as an int if it is a whole number in 1..limit; ConfigError otherwise."""
    n = whole_number(name, n)
    if n > limit:
        raise ConfigError(f"{name} must be at most {limit:,d}, got {n:,d}")
    return n


def _run(generator: Generator, z: torch.Tensor, labels: np.ndarray, centre: bool) -> np.ndarray:
    """The generator's images for noise z (N, latent_dim) and class labels (N,), batch by batch."""
    device = next(generator.parameters()).device
    k = generator.cfg.n_classes
    with _eval_mode(generator):
        parts = [
            to_uint8(
                generator(z[i : i + _BATCH].to(device), one_hot(labels[i : i + _BATCH], k, device))
            )
            for i in range(0, len(z), _BATCH)
        ]
    return _finish(np.concatenate(parts), centre)


@contextlib.contextmanager
def _eval_mode(module: nn.Module):
    """`module` in eval mode inside the block, back in its own mode after (sampling from a
    generator in training once left it in eval mode)."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def _finish(images: np.ndarray, centre: bool) -> np.ndarray:
    return centre_by_mass(images) if centre else images


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Generator output (N, 1, 28, 28) in [0, 1] -> uint8 (N, 28, 28), 0..255."""
    return (images[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
