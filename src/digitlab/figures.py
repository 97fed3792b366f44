"""The file name of every figure: the tasks write them under these names, the report and the
app read them under the same ones. Change a name here and every reader follows.
"""

from __future__ import annotations


def evaluation(prefix: str) -> dict[str, str]:
    """The figures of a classifier's evaluation (`prefix`: "knn" or "cnn")."""
    return {
        "confusion_matrix": f"{prefix}_confusion_matrix.png",
        "per_class": f"{prefix}_per_class.png",
        "misclassified": f"{prefix}_misclassified.png",
        "misclassified_confident": f"{prefix}_misclassified_confident.png",
    }


DATA = {"digit": "data_digit.png", "three": "data_three.png", "gallery": "data_gallery.png"}
KNN = evaluation("knn")
SWEEP = {"sweep": "knn_sweep.png"}
CNN = {**evaluation("cnn"), "curves": "cnn_training_curves.png"}
CLUSTER = {"scatter": "cluster_pca_scatter.png", "centres": "cluster_centres.png"}
GAN = {
    "grid": "gan_grid.png",
    "digit": "gan_digit.png",
    "morph": "gan_interpolation.gif",
    "morph_strip": "gan_interpolation.png",
}

# Stage -> its figures, for readers that walk a run folder.
BY_STAGE: dict[str, dict[str, str]] = {
    "data": DATA,
    "knn": KNN,
    "sweep": SWEEP,
    "cnn": CNN,
    "cluster": CLUSTER,
    "gan": GAN,
}


def gan_epoch_samples(epoch: int) -> str:
    """The fixed-noise grid written after GAN training epoch `epoch` (1-based), under samples/."""
    return f"samples/epoch_{epoch:03d}.png"
