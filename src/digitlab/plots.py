"""Every figure digitlab draws. Pure presentation: arrays in, matplotlib figures or files out.

Figures are plain `matplotlib.figure.Figure` objects, not pyplot's: no global state, no GUI
backend needed, safe from several threads (the web app), and shown inline by notebooks.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from digitlab.errors import ConfigError
from digitlab.files import atomic_open, atomic_write_bytes


def save(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write a figure atomically (format from the suffix) and close it."""
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    return path


def save_gif(
    frames: np.ndarray, path: str | Path, size: int = 112, fps: float = 6, bounce: bool = True
) -> Path:
    """An animated GIF of uint8 frames (n, 28, 28), scaled to `size` pixels, written atomically.

    Ink is drawn dark on white, as in the other figures; `bounce` plays the frames back again.
    Raises ConfigError for fps outside (0, 50] or size outside 28..1024 pixels.
    """
    check_gif(size, fps)
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


def check_gif(size: int, fps: float) -> None:
    """ConfigError unless fps is in (0, 50] and size in 28..1024 pixels (what save_gif takes)."""
    if not 0 < fps <= 50:
        raise ConfigError(f"fps must be in (0, 50], got {fps}")
    if not 28 <= size <= 1024:
        raise ConfigError(f"size must be in 28..1024 pixels, got {size}")


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
    fig = Figure(figsize=(size * ncols, size * nrows + 0.3))
    axes = fig.subplots(nrows, ncols, squeeze=False)
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
    fig = Figure(figsize=(3.2, 3.4))
    ax = fig.subplots()
    ax.imshow(image, cmap="gray_r", vmin=0, vmax=255 if image.dtype == np.uint8 else 1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def confusion_matrix(cm: np.ndarray, class_names: Sequence[str], title: str = "") -> Figure:
    """Annotated heatmap; the diagonal (correct) and the errors use separate colour scales."""
    cm = np.asarray(cm)
    n = len(cm)
    fig = Figure(figsize=(0.62 * n + 2.2, 0.62 * n + 1.6))
    ax = fig.subplots()
    off = cm.astype(float).copy()
    np.fill_diagonal(off, np.nan)
    # Errors are what a reader looks for: colour them; the diagonal is drawn in a calm grey.
    ax.imshow(
        np.where(np.eye(n, dtype=bool), np.nan, off),
        cmap="Reds",
        vmin=0,
        vmax=max(1.0, np.nanmax(off)),
    )
    ax.imshow(np.where(np.eye(n, dtype=bool), 1.0, np.nan), cmap="Greys", vmin=0, vmax=4)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                dark = i != j and cm[i, j] > 0.6 * np.nanmax(off)
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "black",
                    fontweight="bold" if i == j else "normal",
                )
    ax.set_xticks(range(n), [c[:8] for c in class_names], rotation=45 if n > 10 else 0)
    ax.set_yticks(range(n), [c[:12] for c in class_names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(cm) / max(1, cm.sum())
    ax.set_title(title or f"Confusion matrix (accuracy {acc:.2%})")
    fig.tight_layout()
    return fig


def misclassified(
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: Sequence[str],
    index: np.ndarray,
    title: str,
    confidence: np.ndarray | None = None,
    ncols: int = 10,
) -> Figure:
    """A gallery of wrongly classified digits titled "true → predicted" (and confidence)."""
    titles = []
    for j, i in enumerate(index):
        t = f"{class_names[y_true[i]]} → {class_names[y_pred[i]]}"
        if confidence is not None:
            t += f" ({confidence[j]:.0%})"
        titles.append(t)
    if len(index) == 0:
        fig = Figure(figsize=(4, 1))
        ax = fig.subplots()
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified digits", ha="center", va="center")
        return fig
    return digits_grid(images[index], titles, ncols=ncols, size=1.45, suptitle=title)


def per_class_bars(report: dict, title: str = "Per-class precision, recall and F1") -> Figure:
    rows = report["per_class"]
    names = [r["class"][:10] for r in rows]
    x = np.arange(len(rows))
    fig = Figure(figsize=(max(6, 0.7 * len(rows) + 2), 3.4))
    ax = fig.subplots()
    for off, key, colour in (
        (-0.27, "precision", "#4C72B0"),
        (0, "recall", "#DD8452"),
        (0.27, "f1", "#55A868"),
    ):
        ax.bar(x + off, [r[key] for r in rows], width=0.26, label=key, color=colour)
    lo = min(min(r[k] for r in rows for k in ("precision", "recall", "f1")), 0.9)
    ax.set_ylim(max(0.0, lo - 0.02), 1.0)
    ax.set_xticks(x, names)
    ax.set_title(title)
    ax.legend(loc="lower right", ncols=3, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def k_sweep(ks: Sequence[int], val_acc: dict, test_acc: dict, chosen: int) -> Figure:
    """Accuracy vs k: validation (used to choose) and test (reported only)."""
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    ax.plot(ks, [val_acc[k] for k in ks], "o-", label="validation (chooses k)")
    ax.plot(ks, [test_acc[k] for k in ks], "s--", label="test (reported, not used)")
    ax.axvline(chosen, color="grey", ls=":", label=f"chosen k = {chosen}")
    ax.set_xlabel("k (number of neighbours)")
    ax.set_ylabel("accuracy")
    ax.set_xticks(list(ks))
    ax.set_title("kNN accuracy vs k")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def cluster_scatter(
    points: np.ndarray,
    clusters: np.ndarray,
    labels: np.ndarray,
    centres_2d: np.ndarray,
    majority: dict,
    class_names: Sequence[str],
) -> Figure:
    """Two PCA scatters side by side: coloured by cluster, and by true digit; centres marked."""
    cmap = matplotlib.colormaps["tab10"]
    fig = Figure(figsize=(12, 5.4))
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    for ax, colour_by, title, names in (
        (axes[0], clusters, "k-means clusters", None),
        (axes[1], labels, "true digits", class_names),
    ):
        for c in np.unique(colour_by):
            pts = points[colour_by == c]
            if names is None:
                name = (
                    f"cluster {c} (≈{class_names[majority[int(c)]]})"
                    if int(c) in majority
                    else f"cluster {c}"
                )
            else:
                name = f"digit {names[c]}"
            ax.scatter(
                pts[:, 0],
                pts[:, 1],
                s=2,
                alpha=0.35,
                color=cmap(int(c) % 10),
                label=name,
                rasterized=True,
            )
        ax.scatter(
            centres_2d[:, 0],
            centres_2d[:, 1],
            marker="X",
            s=140,
            c="black",
            edgecolors="white",
            linewidths=1.2,
            label="cluster centres",
        )
        for j, (cx, cy) in enumerate(centres_2d):
            ax.annotate(
                str(j),
                (cx, cy),
                xytext=(5, 5),
                textcoords="offset points",
                fontsize=9,
                fontweight="bold",
            )
        ax.set_title(f"Test images in PCA 2-D, coloured by {title}")
        ax.set_xlabel("PC 1")
        leg = ax.legend(fontsize=7, loc="upper right", framealpha=0.85)
        for h in leg.legend_handles:
            h.set_alpha(1)
            if h.get_sizes()[0] < 10:  # the tiny scatter dots: legible swatches in the legend
                h.set_sizes([25])
            else:
                h.set_sizes([60])
    axes[0].set_ylabel("PC 2")
    fig.tight_layout()
    return fig


def cluster_centres(images: np.ndarray, majority: dict, class_names: Sequence[str]) -> Figure:
    """Each cluster's centre drawn as a 28x28 image, titled with its most likely digit."""
    titles = [
        f"cluster {j} → {class_names[majority[j]]}" if j in majority else f"cluster {j}"
        for j in range(len(images))
    ]
    return digits_grid(
        images / 255.0,
        titles,
        ncols=min(10, len(images)),
        size=1.5,
        suptitle="Cluster centres (mean image) and their most likely digit",
    )


def training_curves(history: dict) -> Figure:
    """Training vs validation loss, and accuracy, per epoch."""
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig = Figure(figsize=(10, 3.6))
    axes = fig.subplots(1, 2)
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, history[key], "o-", label=f"training {label}")
        ax.plot(epochs, history[f"val_{key}"], "s--", label=f"validation {label}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("Loss per epoch")
    axes[1].set_title("Accuracy per epoch")
    fig.tight_layout()
    return fig
