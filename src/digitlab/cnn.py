"""The course's convolutional network, its config, a Keras-style summary, save and load.

Conv 32 3x3 + ReLU -> MaxPool 2 -> Conv 64 3x3 + ReLU -> MaxPool 2 -> Flatten -> Dropout 0.5
-> Dense 10: 34,826 parameters, as Keras counts them. Pure network code: saving and loading
(safetensors + the config as JSON) are in `loaders`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from digitlab import conv_pool
from digitlab.errors import ConfigError
from digitlab.validation import unit_fraction, whole_number


@dataclass
class CNNConfig:
    """The network's shape (the course's); saved beside the weights, rebuilt from on load."""

    conv1: int = 32
    conv2: int = 64
    kernel: int = 3
    dropout: float = 0.5
    n_classes: int = 10
    image_size: int = 28

    def __post_init__(self) -> None:
        """Raises ConfigError for sizes no network can have (e.g. from an edited config.json)."""
        for name in ("conv1", "conv2", "kernel", "n_classes", "image_size"):
            whole_number(name, getattr(self, name))
        unit_fraction("dropout", self.dropout)
        first = (self.image_size - self.kernel + 1) // 2
        if first < 1 or (first - self.kernel + 1) // 2 < 1:
            raise ConfigError(
                f"a {self.kernel}x{self.kernel} kernel leaves nothing of {self.image_size}-pixel "
                "images after two convolutions and pools"
            )

    @property
    def conv2_input_used(self) -> int:
        """Rows (and columns) of the first stage's output that reach the second pool: 12 of 13
        for the course (conv2 makes 11, the pool uses 10)."""
        s1 = (self.image_size - self.kernel + 1) // 2
        return 2 * ((s1 - self.kernel + 1) // 2) + self.kernel - 1

    @property
    def flat_size(self) -> int:
        """Features entering the dense layer (1,600 for the course)."""
        side = ((self.image_size - self.kernel + 1) // 2 - self.kernel + 1) // 2
        return self.conv2 * side * side


class Dropout(nn.Dropout):
    """`nn.Dropout` with a cheaper mask on the CPU: the same distribution.

    PyTorch's CPU `bernoulli_` took 2 ms per batch of 128 x 1600 here, 13% of a whole training
    step; drawing uniforms and comparing takes 1.1 ms. For p = 0.5 (the course's) each mask
    entry is one bit of a random byte: eight entries per draw, 0.25 ms (2-vCPU EPYC). Every bit
    of a uniform byte is an independent fair coin, so the mask is exactly Bernoulli(1/2).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x` with a fraction `p` of its entries zeroed and the rest scaled by 1/(1-p)."""
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0
        if self.p == 0.5:
            n = x.numel()
            draws = torch.randint(0, 256, (-(-n // 8),), dtype=torch.uint8, device=x.device)
            shifts = torch.arange(8, dtype=torch.uint8, device=x.device)
            bits = (draws[:, None] >> shifts).bitwise_and_(1).view(-1)[:n]
            return x * bits.view(x.shape).to(x.dtype).mul_(2.0)
        keep = (torch.rand_like(x) >= self.p).to(x.dtype).mul_(1 / (1 - self.p))
        return x * keep


class CourseCNN(nn.Module):
    """The course's CNN: images (N, 1, 28, 28) float in [0, 1] -> logits (N, n_classes)."""

    def __init__(self, cfg: CNNConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or CNNConfig()
        self.conv1 = nn.Conv2d(1, cfg.conv1, cfg.kernel)  # (N,1,28,28) -> (N,32,26,26)
        self.conv2 = nn.Conv2d(cfg.conv1, cfg.conv2, cfg.kernel)  # (N,32,13,13) -> (N,64,11,11)
        self.pool = nn.MaxPool2d(2)
        self.fused = True  # the first stage as one compiled pass on the CPU (conv_pool)
        self.dropout = Dropout(cfg.dropout)
        self.fc = nn.Linear(cfg.flat_size, cfg.n_classes)  # 64*5*5 = 1600 -> 10
        # Keras' initialisation (Glorot-uniform weights, zero biases), as the course trained it.
        for layer in (self.conv1, self.conv2, self.fc):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened activations before dropout and the classifier (N, 1600)."""
        # The course's conv -> ReLU -> pool, computed as conv -> pool -> ReLU: max-pooling and
        # ReLU commute (ReLU is monotone), so values and gradients are the same, bit for bit,
        # and the ReLU runs on a quarter of the numbers (a training step: 12.8 -> 11.0 ms).
        # The second pool drops conv2's last row and column (11 -> 5), so they are never
        # computed: conv2 sees the first 12 of 13 rows and columns (a sixth less work, the same
        # values and gradients; `used` is 12 for the course's sizes).
        used = self.cfg.conv2_input_used
        if self._fuses_first_stage(x):
            x = conv_pool.conv_pool_relu(x, self.conv1.weight, self.conv1.bias, (used, used))
        else:
            x = torch.relu(self.pool(self.conv1(x)))[:, :, :used, :used]  # (N, 32, 12, 12)
        x = torch.relu(self.pool(self.conv2(x)))  # (N, 64, 5, 5)
        # Keras flattens channels-last (H, W, C); the order does not change what is learned.
        return torch.flatten(x, 1)

    def _fuses_first_stage(self, x: torch.Tensor) -> bool:
        # The fused CPU stage (digitlab.conv_pool) computes the same function in float32. It
        # stands aside for a GPU, bf16 autocast, images that need a gradient of their own,
        # torch.func transforms (vmap, grad over parameters), hooks on conv1 or the pool (they
        # would never fire), and a conv1 or pool replaced by other settings than the course's.
        conv, pool = self.conv1, self.pool
        return (
            self.fused
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and not x.requires_grad
            and not torch.is_autocast_enabled("cpu")
            and not torch._C._are_functorch_transforms_active()
            and type(conv) is nn.Conv2d
            and conv.weight.dtype == torch.float32
            and conv.bias is not None
            and conv.in_channels == 1
            and conv.groups == 1
            and conv.kernel_size[0] == conv.kernel_size[1]
            and conv.stride == (1, 1)
            and conv.padding == (0, 0)
            and conv.dilation == (1, 1)
            and type(pool) is nn.MaxPool2d
            and pool.kernel_size == 2
            and pool.stride == 2
            and pool.padding == 0
            and pool.dilation == 1
            and not pool.ceil_mode
            and not pool.return_indices
            and not _hooked(conv, pool)
            and conv_pool.available(conv.kernel_size[0])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, n_classes) of images (N, 1, 28, 28)."""
        return self.fc(self.dropout(self.features(x)))  # logits (N, 10)


def _hooked(*modules: nn.Module) -> bool:
    """Whether forward or backward hooks would see these modules' calls (their own or global)."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    if torch_module._global_backward_hooks or torch_module._global_backward_pre_hooks:
        return True
    return any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
        for m in modules
    )


def summary(model: CourseCNN) -> str:
    """A table like Keras' `model.summary()`: layer, output shape, parameters."""
    cfg = model.cfg
    s1 = cfg.image_size - cfg.kernel + 1
    s2 = (s1 // 2) - cfg.kernel + 1
    rows = [
        ("conv2d (Conv2D)", (None, s1, s1, cfg.conv1), model.conv1),
        ("max_pooling2d (MaxPooling2D)", (None, s1 // 2, s1 // 2, cfg.conv1), None),
        ("conv2d_1 (Conv2D)", (None, s2, s2, cfg.conv2), model.conv2),
        ("max_pooling2d_1 (MaxPooling2D)", (None, s2 // 2, s2 // 2, cfg.conv2), None),
        ("flatten (Flatten)", (None, cfg.flat_size), None),
        ("dropout (Dropout)", (None, cfg.flat_size), None),
        ("dense (Dense)", (None, cfg.n_classes), model.fc),
    ]
    line = "─" * 72
    out = [line, f"{'Layer (type)':34s}{'Output Shape':24s}{'Param #':>12s}", line]
    for name, shape, layer in rows:
        n = sum(p.numel() for p in layer.parameters()) if layer is not None else 0
        out.append(f"{name:34s}{shape!s:24s}{n:>12,d}")
    total = sum(p.numel() for p in model.parameters())
    out += [line, f"Total params: {total:,d}", f"Trainable params: {total:,d}", line]
    return "\n".join(out)


def to_tensor(images, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, 28, 28) or float images in [0, 1] -> float tensor (N, 1, 28, 28) in [0, 1]."""
    arr = np.asarray(images)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3 or arr.shape[1:] != (28, 28):
        raise ValueError(f"expected images of shape (N, 28, 28), got {arr.shape}")
    if len(arr) == 0:
        raise ValueError("no images to predict")
    if arr.dtype == np.uint8:
        t = torch.from_numpy(np.ascontiguousarray(arr)).to(device).float().div_(255.0)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise ValueError(
                "float images must hold finite values in [0, 1] (pass uint8 for 0..255 pixels)"
            )
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).to(device)
    else:
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {arr.dtype}")
    return t[:, None]


def inference_batch(device: torch.device) -> int:
    """Images per forward pass when only predicting.

    On CPU small batches keep the first layer's output (128 x 32 x 26 x 26 floats, 11 MB) in
    cache: scoring 2,000 images took 0.04 s in batches of 128 and 0.14 s in batches of 1,000.
    """
    return 128 if device.type == "cpu" else 4096


@torch.no_grad()
def predict_proba(model: CourseCNN, images, batch_size: int | None = None) -> np.ndarray:
    """Class probabilities, float32 (N, n_classes), for uint8 or [0, 1] float images.

    `batch_size`: images per forward pass (None: `inference_batch`). Raises ValueError for
    images of another shape or range (see `to_tensor`) and for a batch size below 1."""
    device = next(model.parameters()).device
    if batch_size is not None:
        whole_number("batch_size", batch_size, error=ValueError)
    x = to_tensor(images, device)
    model.eval()
    batch_size = batch_size or inference_batch(device)
    out = [torch.softmax(model(x[i : i + batch_size]), 1) for i in range(0, len(x), batch_size)]
    return torch.cat(out).cpu().numpy()
