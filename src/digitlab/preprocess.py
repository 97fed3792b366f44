"""Image preprocessing shared by the models: deskewing by image moments."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def deskew(images: np.ndarray, batch: int = 2048) -> np.ndarray:
    """Straighten each digit by its second-order image moments (uint8 in, uint8 out).

    The shear that makes the pixel mass's x/y covariance zero is applied about the centre of
    mass, which is moved to the image centre: the classic preprocessing that takes raw-pixel
    kNN on MNIST from about 97% to over 98%. Output stays uint8 so kNN keeps its exact path.
    All images of a batch are warped at once (bilinear, one `grid_sample` call).
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[0] == 0:
        raise ValueError(
            f"deskew expects a non-empty stack of images (n, h, w), got {images.shape}"
        )
    h, w = images.shape[1:]
    c0, c1 = (h - 1) / 2, (w - 1) / 2
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    out = np.empty(images.shape, np.uint8)
    for s in range(0, len(images), batch):
        mass = torch.tensor(images[s : s + batch], dtype=torch.float32)
        total = mass.sum((1, 2)).clamp(min=1e-12)
        cy = (mass * yy).sum((1, 2)) / total
        cx = (mass * xx).sum((1, 2)) / total
        dy, dx = yy - cy[:, None, None], xx - cx[:, None, None]
        var_y = (mass * dy**2).sum((1, 2)) / total
        cov = (mass * dy * dx).sum((1, 2)) / total
        alpha = torch.where(var_y > 1e-6, cov / var_y.clamp(min=1e-6), torch.zeros_like(cov))
        blank = mass.sum((1, 2)) == 0
        cy, cx = torch.where(blank, c0, cy), torch.where(blank, c1, cx)
        # Output (y, x) samples input (y + cy - c0, x + alpha*(y - c0) + cx - c1), written in
        # grid_sample's normalised coordinates (align_corners=True: -1 and 1 are pixel centres).
        theta = torch.zeros(len(mass), 2, 3, dtype=torch.float32)
        theta[:, 0, 0] = 1
        theta[:, 0, 1] = alpha * c0 / c1
        theta[:, 0, 2] = (cx - c1) / c1
        theta[:, 1, 1] = 1
        theta[:, 1, 2] = (cy - c0) / c0
        grid = F.affine_grid(theta, (len(mass), 1, h, w), align_corners=True)
        warped = F.grid_sample(
            mass[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )[:, 0]
        out[s : s + len(mass)] = warped.round().clamp(0, 255).to(torch.uint8).numpy()
    return out
