"""How good is a conditional generator? Two numbers the course never computed.

- Conditional accuracy: the share of generated digits that a trained CNN classifier reads as
  the digit that was asked for (per digit and overall).
- Fréchet distance between real and generated images in the CNN's penultimate features (the
  1,600 activations before its classifier): an MNIST analogue of FID. The distance between two
  disjoint halves of the real test set is printed beside it as the floor.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg
from threadpoolctl import threadpool_limits

from digitlab.cnn import CourseCNN, predict_proba, to_tensor
from digitlab.gan import Generator, generate
from digitlab.preprocess import centre_by_mass
from digitlab.validation import check_seed


@torch.no_grad()
def cnn_features(model: CourseCNN, images: np.ndarray, batch: int = 1000) -> np.ndarray:
    """The CNN's penultimate activations (float64 (n, 1600)) of uint8 images (n, 28, 28)."""
    device = next(model.parameters()).device
    x = to_tensor(images, device)
    model.eval()
    return (
        torch.cat([model.features(x[i : i + batch]) for i in range(0, len(x), batch)])
        .double()
        .cpu()
        .numpy()
    )


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """|mu_a - mu_b|^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2)) between two feature sets (float
    arrays (n_a, d) and (n_b, d); Fréchet 1948, as FID: Heusel et al. 2017)."""
    return _Moments(b).distance_to(_Moments(a))


class _Moments:
    """A feature set's mean and covariance, and (made once, on first use) the square root of
    the covariance, for the distances from other sets to this one."""

    def __init__(self, features: np.ndarray):
        self.mean = features.mean(0)
        with threadpool_limits(1, user_api="blas"):  # see distance_to
            self.cov = np.atleast_2d(np.cov(features, rowvar=False))
        self._root: np.ndarray | None = None

    def root(self) -> np.ndarray:
        """C^(1/2), symmetric: C is symmetric positive semi-definite (tiny negative eigenvalues
        are rounding, set to 0)."""
        if self._root is None:
            with threadpool_limits(1, user_api="blas"):  # see distance_to
                w, v = linalg.eigh(self.cov)
                self._root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        return self._root

    def distance_to(self, other: _Moments) -> float:
        """The Fréchet distance between this set and `other`.

        Tr((C_a C_b)^(1/2)) is the sum of the square roots of C_a C_b's eigenvalues, which are
        those of the symmetric S C_b S with S = C_a^(1/2) (similar matrices). So one symmetric
        eigenvalue problem replaces scipy's `sqrtm` of the non-symmetric product (a Schur
        decomposition: 2.9-3.7 s for the CNN's 1,600 features on one AVX2 core, against
        0.3 s), and C_a's root is made once for the three distances `evaluate_generator` takes
        to the same real digits. It needs no regularising offset for singular covariances
        (dead ReLU features, fewer digits than features), which moved the old figure.

        On one BLAS thread: with another process busy, two threads took 5.8 s a problem
        (waiting for each other) against 0.3-0.9 s on one; quiet, two save about a third."""
        root = other.root()
        with threadpool_limits(1, user_api="blas"):
            inner = linalg.eigvalsh(root @ self.cov @ root)
        trace_root = np.sqrt(np.clip(inner, 0, None)).sum()
        gap = ((self.mean - other.mean) ** 2).sum()
        return float(gap + np.trace(self.cov) + np.trace(other.cov) - 2 * trace_root)


def evaluate_generator(
    generator: Generator,
    classifier: CourseCNN,
    real_images: np.ndarray,
    per_digit: int = 500,
    seed: int = 0,
) -> dict:
    """Conditional accuracy (per digit, overall) and the Fréchet distance with its floor.

    The figures are for the digits as `generate` returns them (centred by mass, as MNIST's);
    `raw` holds the same figures for the network's output before centring.
    """
    k = generator.cfg.n_classes
    seed = check_seed(seed)  # before any work (digit d's noise uses seed + d)
    raw = np.concatenate(
        [generate(generator, d, per_digit, seed=seed + d, centre=False) for d in range(k)]
    )
    wanted = np.repeat(np.arange(k), per_digit)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(real_images))
    half = len(order) // 2
    real_a = _Moments(cnn_features(classifier, real_images[order[:half]]))
    real_b = _Moments(cnn_features(classifier, real_images[order[half : 2 * half]]))
    pick = rng.permutation(len(raw))[:half]

    def scores(images: np.ndarray) -> dict:
        read = predict_proba(classifier, images).argmax(1)
        confusion = np.zeros((k, k), np.int64)  # row: the digit asked for, column: read as
        np.add.at(confusion, (wanted, read), 1)
        return {
            "conditional_accuracy": float(np.mean(read == wanted)),
            "per_digit": {str(d): float(np.mean(read[wanted == d] == d)) for d in range(k)},
            "confusion": confusion.tolist(),
            "frechet": _Moments(cnn_features(classifier, images[pick])).distance_to(real_a),
        }

    return {
        **scores(centre_by_mass(raw)),
        "frechet_real_vs_real": real_b.distance_to(real_a),
        "n_generated": len(raw),
        "raw": scores(raw),
    }
