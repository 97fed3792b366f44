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

# Text inside a figure must read at least as large as the report's small print (0.85rem =
# 13.6 px). The report's column is about 950 px wide, so a figure saved at DPI up to
# COLUMN_IN inches wide is shown at its own size, and 10 pt at 110 dpi is 15.3 px. A wider
# figure is shrunk to the column, so its text is scaled up by `text_pt` to compensate.
DPI = 110
COLUMN_IN = 8.6
MIN_PT = 10.0


def text_pt(width_in: float, pt: float = MIN_PT) -> float:
    """Font size (points) that still reads as `pt` once a `width_in`-inch figure fits the column."""
    return pt * max(1.0, width_in / COLUMN_IN)


def save(fig: Figure, path: str | Path, dpi: int = DPI, metadata: dict | None = None) -> Path:
    """Write a figure atomically (format from the suffix) and close it. `metadata`: the
    format's metadata, as matplotlib's savefig takes it (a PNG's text chunks)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata)
    return path


MARK_KEY = "digitlab"  # a PNG text chunk: which command wrote the picture


def save_marked(fig: Figure, path: str | Path, mark: str, more: dict | None = None) -> Path:
    """`save`, with `mark` (the command that wrote it: "gan generate", "data show") under
    MARK_KEY, and `more` text, when `path` is a PNG. By the mark a command later knows a
    default-named picture as its own, to replace, from a user's file of the same name, to
    keep (other formats keep other metadata, and are written only where the user named them).
    """
    png = Path(path).suffix.lower() == ".png"
    return save(fig, path, metadata={MARK_KEY: mark, **(more or {})} if png else None)


def png_text(path: str | Path) -> dict:
    """The text chunks of the PNG at `path`; {} for anything else or a file not readable."""
    try:
        with Image.open(path) as image:
            return dict(getattr(image, "text", {})) if image.format == "PNG" else {}
    except (OSError, ValueError, Image.DecompressionBombError):
        return {}


def mark_of(path: str | Path) -> str | None:
    """The MARK_KEY value of a PNG `save_marked` wrote at `path`, or None: anything else, a
    file that cannot be read included."""
    return png_text(path).get(MARK_KEY)


_PICTURES = {"png", "jpg", "jpeg", "pdf", "svg", "webp", "tif", "tiff", "gif"}


def check_figure_path(path: str | Path, what: str = "--out") -> Path:
    """`path` if its suffix names a picture format matplotlib writes (png, jpg, pdf, svg, ...);
    ConfigError otherwise, before any work (matplotlib raised only after the drawing)."""
    path = Path(path)
    # Pictures matplotlib writes without other software (pgf needs LaTeX; raw/rgba are not
    # image files anyone can open).
    formats = _PICTURES & set(Figure().canvas.get_supported_filetypes())
    if path.suffix.lstrip(".").lower() not in formats:
        raise ConfigError(
            f"{what} must end in an image format ({', '.join('.' + f for f in sorted(formats))}), "
            f"got {str(path)!r}"
        )
    return path


def check_gif_path(path: str | Path, what: str = "--out") -> Path:
    """`path` if it ends in .gif (the PNG strip of the same frames goes beside it, same name
    with .png); ConfigError otherwise (a .png name had the strip overwrite the GIF)."""
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ConfigError(
            f"{what} must end in .gif (its frames also go to a .png beside it), got {str(path)!r}"
        )
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
    width = size * ncols
    fig = Figure(figsize=(width, (size + (0.25 if titles is not None else 0)) * nrows + 0.4))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(
                images[i],
                cmap="gray_r",
                vmin=0,
                vmax=255 if images.dtype == np.uint8 else 1,
                interpolation="nearest",
            )
            if titles is not None:
                ax.set_title(titles[i], fontsize=text_pt(width))
    if suptitle:
        fig.suptitle(suptitle, fontsize=text_pt(width, 12))
    fig.tight_layout()
    return fig


def digit(image: np.ndarray, title: str | None = None) -> Figure:
    """One digit, large, with its pixel grid visible."""
    fig = Figure(figsize=(3.2, 3.4))
    ax = fig.subplots()
    ax.imshow(
        image,
        cmap="gray_r",
        vmin=0,
        vmax=255 if image.dtype == np.uint8 else 1,
        interpolation="nearest",
    )
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=MIN_PT + 1)
    fig.tight_layout()
    return fig


def confusion_matrix(cm: np.ndarray, class_names: Sequence[str], title: str = "") -> Figure:
    """Annotated heatmap; the diagonal (correct) and the errors use separate colour scales."""
    cm = np.asarray(cm)
    n = len(cm)
    width = min(COLUMN_IN, 0.62 * n + 2.2)
    fig = Figure(figsize=(width, width - 0.6))
    ax = fig.subplots()
    small = text_pt(width) if n <= 12 else max(6.0, text_pt(width) * 12 / n)
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
                    fontsize=small,
                    color="white" if dark else "black",
                    fontweight="bold" if i == j else "normal",
                )
    ax.set_xticks(range(n), [c[:8] for c in class_names], rotation=45 if n > 10 else 0)
    ax.set_yticks(range(n), [c[:12] for c in class_names])
    ax.tick_params(labelsize=small)
    ax.set_xlabel("predicted", fontsize=small)
    ax.set_ylabel("true", fontsize=small)
    acc = np.trace(cm) / max(1, cm.sum())
    ax.set_title(title or f"Confusion matrix (accuracy {acc:.2%})", fontsize=small + 1)
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
    ncols: int = 5,
    score_format: str = "{:.0%}",
) -> Figure:
    """A gallery of wrongly classified digits titled "true → predicted" (and a score).

    `confidence[j]` belongs to `index[j]` and is written with `score_format` (a share of votes
    or a probability by default; "{:+.0%}" for the kNN's distance margin). Five columns keep
    the captions legible in the report's column and on a phone.
    """
    titles = []
    for j, i in enumerate(index):
        t = f"{class_names[y_true[i]]} → {class_names[y_pred[i]]}"
        if confidence is not None:
            t += f" ({score_format.format(confidence[j])})"
        titles.append(t)
    if len(index) == 0:
        fig = Figure(figsize=(4, 1))
        ax = fig.subplots()
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified digits", ha="center", va="center", fontsize=MIN_PT)
        return fig
    return digits_grid(images[index], titles, ncols=ncols, size=1.6, suptitle=title)


def per_class_bars(report: dict, title: str = "Per-class precision, recall and F1") -> Figure:
    """Precision, recall and F1 side by side per class; the legend sits above, off the bars."""
    rows = report["per_class"]
    names = [r["class"][:10] for r in rows]
    x = np.arange(len(rows))
    width = min(COLUMN_IN, max(6, 0.7 * len(rows) + 2))
    fig = Figure(figsize=(width, 3.8))
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
    ax.tick_params(labelsize=MIN_PT)
    ax.set_title(title, fontsize=MIN_PT + 2, pad=28)
    # Above the axes, between the title and the bars: it can never hide a bar.
    ax.legend(
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncols=3,
        fontsize=MIN_PT,
        frameon=False,
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def k_sweep(ks: Sequence[int], val_acc: dict, test_acc: dict, chosen: int) -> Figure:
    """Accuracy vs k: validation (used to choose) and test (reported only)."""
    fig = Figure(figsize=(6.5, 4.0))
    ax = fig.subplots()
    ax.plot(ks, [val_acc[k] for k in ks], "o-", label="validation (chooses k)")
    ax.plot(ks, [test_acc[k] for k in ks], "s--", label="test (reported, not used)")
    ax.axvline(chosen, color="grey", ls=":", label=f"chosen k = {chosen}")
    ax.set_xlabel("k (number of neighbours)", fontsize=MIN_PT)
    ax.set_ylabel("accuracy", fontsize=MIN_PT)
    ax.set_xticks(list(ks))
    ax.tick_params(labelsize=MIN_PT)
    ax.set_title("kNN accuracy vs k", fontsize=MIN_PT + 2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=MIN_PT, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


# Two palettes that share no colour: the cluster panel must never suggest that a colour means
# the same thing as in the digit panel (cluster 5 is not digit 5).
DIGIT_COLOURS = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["tab10"].colors]
CLUSTER_COLOURS = [
    "#000000",  # black
    "#a6761d",  # ochre
    "#1b9e77",  # teal
    "#e7298a",  # magenta
    "#7570b3",  # slate violet
    "#e6ab02",  # mustard
    "#66a61e",  # leaf green
    "#003f5c",  # navy
    "#d95f02",  # rust
    "#999999",  # silver
]


def _declutter(fig: Figure, ax, labels: list) -> None:
    """Stack annotation texts so that no two overlap; leader lines keep pointing at the centres.

    Label boxes are estimated from the font size and the axes' size in inches (no rendering
    pass: fast), then placed greedily from the lowest centre up: a label that would overlap
    one already placed moves up by one label height until it is free.
    """
    w_in, h_in = fig.get_size_inches() * ax.get_position().size
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    per_in = np.array([(x1 - x0) / w_in, (y1 - y0) / h_in])
    placed: list[tuple[float, float, float, float]] = []
    for t in sorted(labels, key=lambda t: t.xyann[1]):
        fs = t.get_fontsize() / 72  # inches
        w, h = (0.62 * len(t.get_text()) * fs + 0.1) * per_in[0], 1.5 * fs * per_in[1]
        x, y = t.xyann
        while any(
            abs(x - px) < (w + pw) / 2 and abs(y - py) < (h + ph) / 2 for px, py, pw, ph in placed
        ):
            y += h / 3
        t.xyann = (x, y)
        placed.append((x, y, w, h))


def cluster_scatter(
    points: np.ndarray,
    clusters: np.ndarray,
    labels: np.ndarray,
    centres_2d: np.ndarray,
    majority: dict,
    class_names: Sequence[str],
) -> Figure:
    """Two PCA scatters side by side: coloured by cluster, and by true digit; centres marked.

    Each centre is labelled "cluster j → d" with the cluster's most likely digit d, in both
    panels, so a learner never reads a cluster number as a digit. The panels use palettes that
    share no colour, and the legends sit below the axes, off the data.
    """
    width = 13.0
    fs = text_pt(width)
    fig = Figure(figsize=(width, 8.2))
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    lo, hi = points.min(0), points.max(0)
    span = hi - lo
    for ax, colour_by, title, palette in (
        (axes[0], clusters, "k-means cluster", CLUSTER_COLOURS),
        (axes[1], labels, "true digit", DIGIT_COLOURS),
    ):
        for c in np.unique(colour_by):
            pts = points[colour_by == c]
            if palette is CLUSTER_COLOURS:
                name = (
                    f"cluster {c} → {class_names[majority[int(c)]]}"
                    if int(c) in majority
                    else f"cluster {c}"
                )
            else:
                name = f"digit {class_names[c]}"
            ax.scatter(
                pts[:, 0],
                pts[:, 1],
                s=2,
                alpha=0.35,
                color=palette[int(c) % len(palette)],
                label=name,
                rasterized=True,
            )
        ax.scatter(
            centres_2d[:, 0],
            centres_2d[:, 1],
            marker="X",
            s=160,
            c="white",
            edgecolors="black",
            linewidths=1.5,
            label="cluster centre",
            zorder=3,
        )
        for j, (cx, cy) in enumerate(centres_2d):
            text = f"{j} → {class_names[majority[j]]}" if j in majority else f"{j}"
            ax.annotate(
                text,
                (cx, cy),
                xytext=(cx, cy + 0.04 * span[1]),
                fontsize=fs * 0.9,
                fontweight="bold",
                ha="center",
                va="bottom",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "0.6", "alpha": 0.85},
                arrowprops={"arrowstyle": "-", "color": "0.3", "lw": 0.8},
                zorder=4,
            )
        ax.set_title(f"Test images in PCA 2-D, coloured by {title}", fontsize=fs)
        ax.set_xlabel("PC 1", fontsize=fs)
        ax.tick_params(labelsize=fs * 0.9)
        leg = ax.legend(
            fontsize=fs * 0.9,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.1),
            ncols=3,
            frameon=False,
            handletextpad=0.2,
            columnspacing=0.8,
        )
        for h in leg.legend_handles:
            h.set_alpha(1)
            if h.get_sizes()[0] < 10:  # the tiny scatter dots: legible swatches in the legend
                h.set_sizes([60])
            else:
                h.set_sizes([90])
    axes[0].set_ylabel("PC 2", fontsize=fs)
    pad = 0.08 * span
    axes[0].set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    axes[0].set_ylim(lo[1] - pad[1], hi[1] + 2 * pad[1])
    fig.tight_layout()
    for ax in axes:  # centres often sit close together: their labels must not pile up
        _declutter(fig, ax, [t for t in ax.texts if t.get_text()])
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
        ncols=min(5, len(images)),
        size=1.7,
        suptitle="Cluster centres (mean image) and their most likely digit",
    )


def training_curves(history: dict) -> Figure:
    """Training vs validation loss, and accuracy, per epoch."""
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig = Figure(figsize=(COLUMN_IN, 3.8))
    axes = fig.subplots(1, 2)
    step = max(1, len(epochs) // 10)  # at most ~10 epoch ticks, so their labels never collide
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, history[key], "o-", label=f"training {label}")
        ax.plot(epochs, history[f"val_{key}"], "s--", label=f"validation {label}")
        ax.set_xlabel("epoch", fontsize=MIN_PT)
        ax.set_ylabel(label, fontsize=MIN_PT)
        ax.set_xticks(epochs[::step])
        ax.tick_params(labelsize=MIN_PT)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=MIN_PT)
    axes[0].set_title("Loss per epoch", fontsize=MIN_PT + 1)
    axes[1].set_title("Accuracy per epoch", fontsize=MIN_PT + 1)
    fig.tight_layout()
    return fig
