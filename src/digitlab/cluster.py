"""k-means (fast, seeded, scikit-learn's algorithm) and PCA for pictures of the clusters.

`KMeans` runs its `n_init` restarts *together*: each Lloyd step is one matrix product of the
data with all restarts' centres (n_init * k columns), which a CPU multiplies far more
efficiently than n_init products of k columns each. Initialisation is scikit-learn's greedy
k-means++; convergence uses its tolerance (a fraction of the mean feature variance); the best
restart by inertia wins. Distances are float32 products, inertia is reported in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin

from digitlab.device import resolve_device, threads
from digitlab.errors import NotFittedError


def _check_X(X, what: str = "X") -> np.ndarray:
    X = np.asarray(X)
    if X.ndim == 3:
        X = X.reshape(len(X), -1)
    if X.ndim != 2:
        raise ValueError(f"{what} must be 2-D (n_samples, n_features) or images, got {X.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"{what} must be numeric, got dtype {X.dtype}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{what} is empty (shape {X.shape})")
    if np.issubdtype(X.dtype, np.floating) and not np.isfinite(X).all():
        raise ValueError(f"{what} contains NaN or infinity")
    return X


def _sq_dist(x: torch.Tensor, x_sq: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared distances (n, m) from rows of x to rows of c, clamped at zero."""
    return (x_sq[:, None] - 2 * (x @ c.T) + (c * c).sum(1)[None, :]).clamp_(min=0)


def _kmeans_plusplus(x, x_sq, k: int, gen: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ (scikit-learn's): 2 + ln(k) candidates per step, keep the best."""
    n = len(x)
    trials = 2 + int(math.log(k))
    first = torch.randint(n, (1,), generator=gen, device=x.device)
    centres = [x[first]]
    closest = _sq_dist(x, x_sq, centres[0])[:, 0]
    potential = closest.sum()
    for _ in range(1, k):
        u = torch.rand(trials, generator=gen, device=x.device, dtype=torch.float64) * potential
        cand = torch.searchsorted(torch.cumsum(closest.double(), 0), u).clamp_(max=n - 1)
        d = _sq_dist(x, x_sq, x[cand])  # (n, trials)
        new_closest = torch.minimum(closest[:, None], d)
        pots = new_closest.sum(0)
        best = int(torch.argmin(pots))
        closest, potential = new_closest[:, best].contiguous(), pots[best]
        centres.append(x[cand[best]][None])
    return torch.cat(centres)


class KMeans(ClusterMixin, TransformerMixin, BaseEstimator):
    """k-means with scikit-learn's interface: `fit`, `predict`, `transform`, `inertia_`.

    Parameters: n_clusters, n_init (restarts, best inertia kept), max_iter, tol (relative to
    the mean feature variance, as scikit-learn), random_state, device, threads.
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        n_init: int = 10,
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state: int | None = 0,
        device: str = "auto",
        threads: int | None = None,
    ):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.device = device
        self.threads = threads

    def _check_params(self, n: int) -> None:
        for name in ("n_clusters", "n_init", "max_iter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.n_clusters > n:
            raise ValueError(
                f"n_samples={n} should be >= n_clusters={self.n_clusters}: cannot make "
                f"{self.n_clusters} clusters from {n} samples"
            )
        if not self.tol >= 0:
            raise ValueError(f"tol must be >= 0, got {self.tol!r}")

    def fit(self, X, y=None) -> KMeans:
        X = _check_X(X)
        self._check_params(len(X))
        device = resolve_device(self.device)
        seed = self.random_state
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % 2**63)
        gen = torch.Generator(device=device).manual_seed(int(seed))
        with threads(self.threads):
            x = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device)
            x_sq = (x * x).sum(1)
            tol = float(self.tol * x.double().var(0).mean())
            k, r = self.n_clusters, self.n_init
            centres = torch.stack([_kmeans_plusplus(x, x_sq, k, gen) for _ in range(r)])  # (r,k,d)
            active = torch.ones(r, dtype=torch.bool, device=device)
            self.n_iter_ = np.zeros(r, dtype=int)
            for it in range(self.max_iter):
                idx = torch.flatnonzero(active)
                labels = self._assign(x, x_sq, centres[idx])  # (n, a)
                new = self._centres(x, labels, centres[idx])
                shift = ((new - centres[idx]) ** 2).sum((1, 2))
                centres[idx] = new
                self.n_iter_[idx.cpu().numpy()] = it + 1
                done = shift <= tol
                active[idx[done]] = False
                if not active.any():
                    break
            labels = self._assign(x, x_sq, centres)
            inertias = torch.stack([self._inertia(x, centres[j], labels[:, j]) for j in range(r)])
            best = int(torch.argmin(inertias))
        self.cluster_centers_ = centres[best].cpu().numpy().astype(np.float64)
        self.labels_ = labels[:, best].cpu().numpy()
        self.inertia_ = float(inertias[best])
        self.inertias_ = inertias.cpu().numpy()
        self.n_iter_ = int(self.n_iter_[best])
        self.n_features_in_ = X.shape[1]
        return self

    @staticmethod
    def _assign(x, x_sq, centres) -> torch.Tensor:
        """Nearest centre of each sample, for every restart at once: (n, restarts)."""
        r, k, d = centres.shape
        dist = _sq_dist(x, x_sq, centres.reshape(r * k, d)).reshape(len(x), r, k)
        return dist.argmin(2)

    @staticmethod
    def _centres(x, labels, old) -> torch.Tensor:
        """Means of each restart's clusters; an empty cluster keeps its old centre.

        The sums are one product with a one-hot membership matrix (exact for pixel data:
        20,000 values of at most 255 stay below 2**24 in float32).
        """
        r, k, d = old.shape
        cols = labels + torch.arange(r, device=x.device) * k  # (n, r): column per restart
        onehot = torch.zeros(len(x), r * k, device=x.device)
        onehot.scatter_(1, cols, 1.0)
        sums = onehot.T @ x  # (r*k, d)
        counts = onehot.sum(0)[:, None]
        means = torch.where(counts > 0, sums / counts.clamp(min=1), old.reshape(r * k, d))
        return means.reshape(r, k, d)

    @staticmethod
    def _inertia(x, centres, labels) -> torch.Tensor:
        diff = x.double() - centres.double()[labels]
        return (diff * diff).sum()

    def _check_fitted(self) -> None:
        if not hasattr(self, "cluster_centers_"):
            raise NotFittedError("This KMeans instance is not fitted yet; call fit(X) first")

    def transform(self, X) -> np.ndarray:
        """Euclidean distances to every centre."""
        self._check_fitted()
        X = self._check_query(X)
        x = torch.from_numpy(np.asarray(X, np.float64))
        c = torch.from_numpy(self.cluster_centers_)
        return torch.cdist(x, c).numpy()

    def _check_query(self, X) -> np.ndarray:
        X = _check_X(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but KMeans was fitted with {self.n_features_in_}"
            )
        return X

    def predict(self, X) -> np.ndarray:
        self._check_fitted()
        X = self._check_query(X)
        device = resolve_device(self.device)
        with threads(self.threads):
            x = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device)
            c = torch.from_numpy(self.cluster_centers_.astype(np.float32)).to(device)
            return self._assign(x, (x * x).sum(1), c[None])[:, 0].cpu().numpy()

    def score(self, X, y=None) -> float:
        """Minus the inertia of X under the fitted centres (scikit-learn's convention)."""
        X = self._check_query(X)
        labels = self.predict(X)
        diff = np.asarray(X, np.float64) - self.cluster_centers_[labels]
        return -float((diff * diff).sum())
