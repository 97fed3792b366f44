"""Every figure digitlab draws. Pure presentation: arrays in, matplotlib figures or files out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from digitlab.files import atomic_open


def save(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write a figure atomically (format from the suffix) and close it."""
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def digits_grid(
    images: np.ndarray,
    titles: Sequence[str] | None = None,
    ncols: int = 10,
    size: float = 1.3,
    suptitle: str | None = None,
) -> Figure:
    """A grid of 28x28 digits, each with an optional title."""
    images = np.asarray(images)
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size * ncols, size * nrows + 0.3), squeeze=False
    )
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255 if images.dtype == np.uint8 else 1)
            if titles is not None:
                ax.set_title(titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def digit(image: np.ndarray, title: str | None = None) -> Figure:
    """One digit, large, with its pixel grid visible."""
    fig, ax = plt.subplots(figsize=(3.2, 3.4))
    ax.imshow(image, cmap="gray_r", vmin=0, vmax=255 if image.dtype == np.uint8 else 1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
