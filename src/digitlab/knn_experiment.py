"""The course's kNN experiments as plain functions: configuration in, results dict out.

No printing and no files here: the CLI, the pipeline and the notebook decide what to show and
where to write it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import ClassVar

import numpy as np
from sklearn.decomposition import PCA

from digitlab import neighbors
from digitlab.data import (
    Dataset,
    held_out_count,
    random_subset,
    stratified_split,
    validation_count,
)
from digitlab.device import requested_threads, resolve_device
from digitlab.errors import ConfigError
from digitlab.evaluation import evaluate, knn_margin_examples
from digitlab.neighbors import KNeighborsClassifier
from digitlab.preprocess import deskew
from digitlab.validation import (
    TooManyValues,
    check_seed,
    int_ranges,
    is_whole,
    positive_number,
    subset_size,
    whole_number,
)


@dataclass
class KNNConfig:
    """Settings of one kNN experiment (the course: k=3 on a seeded 20,000-image subset)."""

    k: int = 3
    train_size: int | None = 20000  # None: all training images
    seed: int = 0
    weights: str = "uniform"
    deskew: bool = False
    pca: int | None = None  # number of PCA components, None for raw pixels
    device: str = "auto"
    threads: int | None = None
    max_memory_mb: float = 512
    # Also time scikit-learn's brute-force kNN on the same arrays (raw pixels only) and report
    # both, with whether the predictions are identical.
    compare_sklearn: bool = False

    def validate(self, n_train: int) -> None:
        """Raise ConfigError for any setting out of range for `n_train` training images.

        Cheap and data-free (the dataset's size is known before it loads), so every face calls
        it before any work starts.
        """
        whole_number("k", self.k)
        subset_size(self.train_size, n_train)
        n = self.train_size or n_train
        if self.k > n:
            raise ConfigError(f"k ({self.k}) is more than the {n} training images")
        self._validate_common()
        self._check_pca(n)

    def _check_pca(self, n_fit: int) -> None:
        """PCA fits on the images the classifier fits on: at most that many components (a
        larger one was scikit-learn's traceback after the data loaded)."""
        if self.pca is not None and self.pca > n_fit:
            raise ConfigError(
                f"pca ({self.pca}) is more than the {n_fit} images it is fitted on: ask for at "
                f"most {n_fit} components, or more training images"
            )

    def _validate_common(self) -> None:
        check_seed(self.seed)
        if self.weights not in ("uniform", "distance"):
            raise ConfigError(f"weights must be 'uniform' or 'distance', got {self.weights!r}")
        if self.pca is not None and not (is_whole(self.pca) and self.pca <= 784):
            raise ConfigError(f"pca must be a number of components in 1..784, got {self.pca}")
        positive_number("max_memory_mb", self.max_memory_mb)
        resolve_device(self.device)
        requested_threads(self.threads)  # checks $DIGITLAB_THREADS too


@dataclass
class SweepConfig(KNNConfig):
    """Settings of the k sweep: the kNN settings and the k values to choose from.

    `k` is not a setting here (every k of `ks` is tried), nor is the scikit-learn comparison.
    """

    hidden: ClassVar[tuple[str, ...]] = ("k", "compare_sklearn")
    ks: str = "1-7"
    val_fraction: float = 0.1

    def k_values(self) -> list[int]:
        """The k values of `ks`, sorted (ConfigError if unreadable)."""
        return parse_k_range(self.ks)

    def validate(self, n_train: int) -> None:
        """Raise ConfigError for any setting out of range for `n_train` training images."""
        ks = self.k_values()
        n = subset_size(self.train_size, n_train) or n_train
        # Each side of the split needs every class (MNIST-format sets have ten): a fraction
        # holding out none failed only after the data had loaded.
        n_fit = n - validation_count(n, self.val_fraction, 10)  # as stratified_split leaves
        if max(ks) > n_fit:
            raise ConfigError(
                f"largest k ({max(ks)}) exceeds the {n_fit} fitting samples "
                f"({n} training images less the validation share)"
            )
        self._validate_common()
        self._check_pca(n_fit)


class Features:
    """The feature map of an experiment: optional deskewing, then optional PCA (fit on train)."""

    def __init__(self, deskew: bool = False, pca: int | None = None, seed: int = 0):
        self.deskew, self.pca, self.seed = deskew, pca, seed
        self._pca = None

    def fit_transform(self, images: np.ndarray) -> np.ndarray:
        """Fit on uint8 images (n, 28, 28) and return their features, float (n, d)."""
        x = self._pixels(images)
        if self.pca:
            self._pca = PCA(self.pca, svd_solver="randomized", random_state=self.seed)
            return self._pca.fit_transform(x.astype(np.float32)).astype(np.float64)
        return x

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Features of more images with the fitted map, float (n, d)."""
        x = self._pixels(images)
        if self._pca is not None:
            return self._pca.transform(x.astype(np.float32)).astype(np.float64)
        return x

    def _pixels(self, images: np.ndarray) -> np.ndarray:
        images = deskew(images) if self.deskew else images
        return images.reshape(len(images), -1)


def _model(cfg: KNNConfig, k: int) -> KNeighborsClassifier:
    return KNeighborsClassifier(
        k,
        weights=cfg.weights,
        device=cfg.device,
        threads=requested_threads(cfg.threads),
        max_memory_mb=cfg.max_memory_mb,
    )


def run_knn(ds: Dataset, cfg: KNNConfig) -> dict:
    """Fit kNN on the seeded training subset, predict the test set, evaluate in depth.

    Returns the evaluation report (see `evaluation.evaluate`) plus "config", "predictions"
    (int64 (n_test,)), "proba" (float (n_test, n_classes)), "timing" (seconds), "n_train",
    "n_test". Raises ConfigError for settings out of range.
    """
    cfg.validate(len(ds.x_train))
    x_train, y_train = random_subset(ds.x_train, ds.y_train, cfg.train_size, cfg.seed)
    t0 = time.perf_counter()
    features = Features(cfg.deskew, cfg.pca, cfg.seed)
    f_train = features.fit_transform(x_train)
    f_test = features.transform(ds.x_test)
    t1 = time.perf_counter()
    model = _model(cfg, cfg.k).fit(f_train, y_train)
    # predict_proba has one column per class *in the training subset* (model.classes_); a
    # small subset can lack a class. Spread the columns over all of the dataset's classes,
    # so that column j is label j wherever the probabilities are used (a missing class: 0).
    proba = np.zeros((len(f_test), len(ds.classes)))
    proba[:, model.classes_] = model.predict_proba(f_test)
    pred = np.argmax(proba, axis=1).astype(ds.y_test.dtype)  # ties: first class, as predict
    t2 = time.perf_counter()
    report = evaluate(ds.y_test, pred, ds.classes, proba)
    # Vote shares tie at k=3 (every wrong vote is 3/3): rank the errors by distance margin.
    idx, margin = knn_margin_examples(f_train, y_train, f_test, ds.y_test, pred)
    report["misclassified_confident"] = idx.tolist()
    report["misclassified_confident_margin"] = [float(x) for x in margin]
    report.pop("misclassified_confident_p", None)
    return {
        "config": asdict(cfg),
        **report,
        "predictions": pred,
        "proba": proba,
        "timing": {"features_s": t1 - t0, "fit_predict_s": t2 - t1, "total_s": t2 - t0},
        # The CPU threads the search ran on (asked for, or chosen by timing; None on a GPU).
        "threads": neighbors.LAST_SEARCH["threads"],
        "n_train": len(x_train),
        "n_test": len(ds.x_test),
    }


def parse_k_range(text: str) -> list[int]:
    """'1-7' -> [1..7]; '1,3,5' -> [1, 3, 5]; '1-9:2' -> [1, 3, 5, 7, 9]."""
    try:
        ks = int_ranges(text)
    except TooManyValues as exc:
        raise ConfigError(f"k values {text!r}: {exc}") from None
    except ValueError:
        raise ConfigError(f"cannot read k values {text!r}; write e.g. 1-7 or 1,3,5") from None
    if not ks or min(ks) < 1:
        raise ConfigError(f"k values must be whole numbers >= 1, got {text!r}")
    return sorted(set(ks))


def run_knn_sweep(
    ds: Dataset,
    cfg: KNNConfig,
    ks: Sequence[int] | None = None,
    val_fraction: float | None = None,
) -> dict:
    """Choose k on a stratified validation split of the training subset, never on the test set.

    `ks` and `val_fraction` default to those of a SweepConfig. Neighbours are searched once at
    the largest k and every k is scored from that one search. The test accuracy of every k is
    reported too (clearly labelled), from the model refit on the whole training subset; it
    plays no part in the choice. Accuracies are fractions in [0, 1], keyed by k.
    """
    if not isinstance(cfg, SweepConfig):  # kNN settings and the k values beside them
        cfg = SweepConfig(**{k: v for k, v in asdict(cfg).items() if k != "k"})
    if ks is not None:
        cfg = replace(cfg, ks=",".join(str(int(k)) for k in ks))
    if val_fraction is not None:
        cfg = replace(cfg, val_fraction=val_fraction)
    cfg.validate(len(ds.x_train))
    ks, val_fraction = cfg.k_values(), cfg.val_fraction
    x_train, y_train = random_subset(ds.x_train, ds.y_train, cfg.train_size, cfg.seed)
    t0 = time.perf_counter()
    val_acc, n_fit, n_val = _validation_accuracy(x_train, y_train, cfg, ks, val_fraction)
    t1 = time.perf_counter()
    best = max(ks, key=lambda k: (val_acc[k], -k))  # best validation accuracy, then smallest k
    features = Features(cfg.deskew, cfg.pca, cfg.seed)
    f_train = features.fit_transform(x_train)
    test_pred = (
        _model(cfg, max(ks)).fit(f_train, y_train).predict_many_k(features.transform(ds.x_test), ks)
    )
    test_acc = {k: float(np.mean(p == ds.y_test)) for k, p in test_pred.items()}
    t2 = time.perf_counter()
    return {
        "config": asdict(cfg),
        "ks": ks,
        "val_fraction": val_fraction,
        "n_fit": n_fit,
        "n_val": n_val,
        "val_accuracy": val_acc,
        "test_accuracy": test_acc,
        "chosen_k": best,
        "chosen_by": "validation accuracy (ties: smaller k)",
        "test_accuracy_at_chosen_k": test_acc[best],
        "timing": {"validation_search_s": t1 - t0, "test_search_s": t2 - t1},
    }


def _validation_accuracy(
    x_train: np.ndarray,
    y_train: np.ndarray,
    cfg: KNNConfig,
    ks: Sequence[int],
    val_fraction: float,
) -> tuple[dict[int, float], int, int]:
    """Accuracy of every k on a stratified validation split of (x_train, y_train), from one
    neighbour search at the largest k; returns ({k: accuracy}, n_fit, n_val)."""
    fit_idx, val_idx = stratified_split(y_train, val_fraction, cfg.seed)
    if max(ks) > len(fit_idx):
        raise ConfigError(f"largest k ({max(ks)}) exceeds the {len(fit_idx)} fitting samples")
    features = Features(cfg.deskew, cfg.pca, cfg.seed)
    f_fit = features.fit_transform(x_train[fit_idx])
    val_pred = (
        _model(cfg, max(ks))
        .fit(f_fit, y_train[fit_idx])
        .predict_many_k(features.transform(x_train[val_idx]), ks)
    )
    val_acc = {k: float(np.mean(p == y_train[val_idx])) for k, p in val_pred.items()}
    return val_acc, len(fit_idx), len(val_idx)


def run_knn_validation(ds: Dataset, cfg: KNNConfig, val_fraction: float = 0.1) -> dict:
    """kNN at `cfg.k` scored on a stratified validation split of the seeded training subset.

    The split is the one `run_knn_sweep` uses for the same seed and `val_fraction`, so the figure
    equals its validation accuracy at this k. The test set is not touched: this is the figure a
    search over settings may choose on. Returns "val_accuracy" (a fraction in [0, 1]), "k",
    "n_fit", "n_val", "val_fraction" and "timing" (seconds). Raises ConfigError for settings out
    of range (k above the fitting samples included).
    """
    cfg.validate(len(ds.x_train))
    held_out_count(len(ds.x_train), val_fraction)  # checks the fraction before any work
    x_train, y_train = random_subset(ds.x_train, ds.y_train, cfg.train_size, cfg.seed)
    t0 = time.perf_counter()
    val_acc, n_fit, n_val = _validation_accuracy(x_train, y_train, cfg, [cfg.k], val_fraction)
    return {
        "k": cfg.k,
        "val_accuracy": val_acc[cfg.k],
        "val_fraction": val_fraction,
        "n_fit": n_fit,
        "n_val": n_val,
        "timing": {"validation_s": time.perf_counter() - t0},
    }
