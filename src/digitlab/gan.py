"""The conditional GAN of the course (keras.io's conditional_gan), in PyTorch.

Generator: 128-d Gaussian noise + one-hot class (138 inputs) -> Dense 7*7*138 -> LeakyReLU ->
(138, 7, 7) -> ConvTranspose 128 4x4/2 -> LeakyReLU -> ConvTranspose 128 4x4/2 -> LeakyReLU ->
Conv 1 7x7 -> sigmoid: 1,491,215 parameters. Discriminator: the image stacked with 10 constant
class maps (11 channels) -> Conv 64 3x3/2 -> LeakyReLU -> Conv 128 3x3/2 -> LeakyReLU -> global
max pool -> Dense 1 (a logit): 80,385 parameters. Saved as safetensors + JSON config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from digitlab.checkpoint import load_weights, save_weights
from digitlab.errors import ConfigError
from digitlab.files import atomic_write_bytes
from digitlab.preprocess import centre_by_mass
from digitlab.validation import is_whole, whole_number


@dataclass
class GANConfig:
    latent_dim: int = 128
    n_classes: int = 10
    image_size: int = 28
    g_channels: int = 128
    d_channels: tuple[int, int] = (64, 128)
    leak: float = 0.2


class Generator(nn.Module):
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
        x = torch.cat([z, onehot], 1)  # (N, 138)
        x = self.act(self.fc(x)).view(len(x), -1, self.side, self.side)  # (N, 138, 7, 7)
        x = self.act(self.up1(x))  # (N, 128, 14, 14)
        x = self.act(self.up2(x))  # (N, 128, 28, 28)
        return torch.sigmoid(self.out(x))  # (N, 1, 28, 28) in [0, 1]


class Discriminator(nn.Module):
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
        n, _, h, w = images.shape
        maps = onehot[:, :, None, None].expand(n, onehot.shape[1], h, w)  # class maps
        x = torch.cat([images, maps], 1)  # (N, 11, 28, 28)
        x = self.act(self.conv2(self.act(self.conv1(x))))  # (N, 128, 7, 7)
        return self.fc(torch.amax(x, dim=(2, 3)))  # global max pool -> logit (N, 1)


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
    labels = torch.as_tensor(labels, dtype=torch.long, device=device)
    return torch.nn.functional.one_hot(labels, n_classes).float()


def check_digit(digit: int, n_classes: int = 10) -> int:
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
    n = whole_number("count", n)
    device = next(generator.parameters()).device
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(int(n), generator.cfg.latent_dim, generator=gen).to(device)
    generator.eval()
    images = generator(z, one_hot([digit] * int(n), generator.cfg.n_classes, device))
    return _finish(images, centre)


@torch.no_grad()
def generate_grid(
    generator: Generator, per_class: int = 8, seed: int = 0, centre: bool = True
) -> np.ndarray:
    """(n_classes * per_class, 28, 28): row c holds `per_class` images of digit c."""
    device = next(generator.parameters()).device
    k = generator.cfg.n_classes
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(per_class, generator.cfg.latent_dim, generator=gen).repeat(k, 1).to(device)
    labels = np.repeat(np.arange(k), per_class)
    generator.eval()
    return _finish(generator(z, one_hot(labels, k, device)), centre)


@torch.no_grad()
def interpolate(
    generator: Generator, start: int, end: int, steps: int = 9, seed: int = 0, centre: bool = True
) -> np.ndarray:
    """Frames from `start` to `end`: the noise held fixed, the one-hot labels blended."""
    k = generator.cfg.n_classes
    start, end = check_digit(start, k), check_digit(end, k)
    steps = whole_number("steps", steps, minimum=2)
    device = next(generator.parameters()).device
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(1, generator.cfg.latent_dim, generator=gen).repeat(steps, 1).to(device)
    w = torch.linspace(0, 1, steps, device=device)[:, None]
    labels = (1 - w) * one_hot([start], k, device) + w * one_hot([end], k, device)
    generator.eval()
    return _finish(generator(z, labels), centre)


def _finish(images: torch.Tensor, centre: bool) -> np.ndarray:
    out = to_uint8(images)
    return centre_by_mass(out) if centre else out


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def write_gif(
    frames: np.ndarray, path: str | Path, size: int = 112, fps: float = 6, bounce: bool = True
) -> Path:
    """An animated GIF of uint8 frames, scaled to `size` pixels, atomically written."""
    import io

    from PIL import Image

    if not 0 < fps <= 50:
        raise ConfigError(f"fps must be in (0, 50], got {fps}")
    if not 28 <= size <= 1024:
        raise ConfigError(f"size must be in 28..1024 pixels, got {size}")
    seq = list(frames) + (list(frames[-2:0:-1]) if bounce and len(frames) > 2 else [])
    images = [Image.fromarray(255 - f).resize((size, size), Image.Resampling.NEAREST) for f in seq]
    buf = io.BytesIO()
    images[0].save(
        buf,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=round(1000 / fps),
        loop=0,
    )
    return atomic_write_bytes(path, buf.getvalue())


def save_generator(generator: Generator, folder: str | Path, metadata: dict | None = None) -> Path:
    """generator.safetensors + config.json (+ metadata.json), each written atomically."""
    return save_weights(generator, folder, "generator", KIND, generator.cfg, metadata)


def load_generator(folder: str | Path, device: torch.device | str = "cpu") -> Generator:
    """Rebuild the generator from config.json and load its weights; mismatches are errors."""
    generator = load_weights(
        folder,
        "generator",
        KIND,
        GANConfig,
        Generator,
        "train one with `digitlab gan train --out DIR`",
    )
    return generator.to(device).eval()


KIND = "conditional_gan_generator"
