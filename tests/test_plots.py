"""Figures: every text inside reads at least as large as the report's small print."""

import io

import matplotlib
import numpy as np
import pytest
from PIL import Image

from digitlab import plots

REPORT_COLUMN_PX = 955  # the report's content width at desktop size
SMALL_PRINT_PX = 13.6  # the report's small print: 0.85rem


def _smallest_rendered_px(fig) -> float:
    """The smallest text height in CSS px once the saved PNG is fitted to the report column."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=plots.DPI, bbox_inches="tight")
    width_px = Image.open(io.BytesIO(buf.getvalue())).width
    scale = min(1.0, REPORT_COLUMN_PX / width_px)
    sizes = [
        t.get_fontsize()
        for t in fig.findobj(matplotlib.text.Text)
        if t.get_visible() and t.get_text().strip()
    ]
    return min(sizes) * plots.DPI / 72 * scale


def _report(n=10):
    rng = np.random.default_rng(0)
    rows = [
        {"class": str(i), "precision": p, "recall": r, "f1": f}
        for i, (p, r, f) in enumerate(rng.uniform(0.85, 1.0, (n, 3)))
    ]
    return {"per_class": rows}


FIGURES = {
    "misclassified": lambda: plots.misclassified(
        np.zeros((30, 28, 28), np.uint8),
        np.arange(30) % 10,
        (np.arange(30) + 1) % 10,
        [str(d) for d in range(10)],
        np.arange(20),
        "first misclassified",
        confidence=np.linspace(1, 0.5, 20),
    ),
    "confusion": lambda: plots.confusion_matrix(
        np.random.default_rng(0).integers(0, 900, (10, 10)), [str(d) for d in range(10)]
    ),
    "per_class": lambda: plots.per_class_bars(_report()),
    "k_sweep": lambda: plots.k_sweep(
        [1, 2, 3], {1: 0.9, 2: 0.91, 3: 0.92}, {1: 0.9, 2: 0.9, 3: 0.91}, 3
    ),
    "curves": lambda: plots.training_curves(
        {
            "loss": [1, 0.5],
            "val_loss": [1, 0.6],
            "accuracy": [0.8, 0.9],
            "val_accuracy": [0.8, 0.85],
        }
    ),
    "centres": lambda: plots.cluster_centres(
        np.zeros((10, 28, 28)), {j: j for j in range(10)}, [str(d) for d in range(10)]
    ),
    "scatter": lambda: _scatter(),
}


def _scatter():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(500, 2))
    centres = np.zeros((10, 2)) + rng.normal(scale=0.05, size=(10, 2))  # piled-up centres
    return plots.cluster_scatter(
        pts,
        rng.integers(0, 10, 500),
        rng.integers(0, 10, 500),
        centres,
        {j: (j + 3) % 10 for j in range(10)},
        [str(d) for d in range(10)],
    )


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_text_in_figures_is_at_least_small_print(name):
    assert _smallest_rendered_px(FIGURES[name]()) >= SMALL_PRINT_PX - 0.05


def test_per_class_legend_never_covers_the_bars():
    fig = plots.per_class_bars(_report())
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert legend.y0 >= ax.get_window_extent().y1 - 1  # above the axes, not on them


def test_scatter_labels_centres_with_their_digit_apart_and_in_distinct_palettes():
    fig = _scatter()
    fig.canvas.draw()
    for ax in fig.axes:
        labels = [t for t in ax.texts if "→" in t.get_text()]
        assert len(labels) == 10 and labels[0].get_text() == "0 → 3"  # cluster 0 is digit 3
        # the texts themselves (an Annotation's own extent also spans its leader line)
        boxes = [matplotlib.text.Text.get_window_extent(t) for t in labels]
        overlaps = sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
        assert overlaps == 0  # even when every centre sits on the same spot
        legend = ax.get_legend().get_window_extent()
        assert legend.y1 <= ax.get_window_extent().y0 + 1  # below the data, off it
    assert not set(plots.CLUSTER_COLOURS) & set(plots.DIGIT_COLOURS)
