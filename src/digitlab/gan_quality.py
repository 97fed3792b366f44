"""How good is a conditional generator? Two numbers the course never computed.

- Conditional accuracy: the share of generated digits that a trained CNN classifier reads as
  the digit that was asked for (per digit and overall).
- Fréchet distance between real and generated images in the CNN's penultimate features (the
  1,600 activations before its classifier): an MNIST analogue of FID. The distance between two
  disjoint halves of the real test set is printed beside it as the floor.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg

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
    """|mu_a - mu_b|^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2)) between two feature sets."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", linalg.LinAlgWarning)
        try:
            root = linalg.sqrtm(ca @ cb)
        except linalg.LinAlgWarning:
            # Singular covariances (dead ReLU features, few samples): regularise slightly,
            # as the reference FID code does.
            offset = np.eye(len(ca)) * 1e-6
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            root = linalg.sqrtm((ca + offset) @ (cb + offset))
    root = root.real  # tiny imaginary parts are numerical noise
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * root))


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
    real_a = cnn_features(classifier, real_images[order[:half]])
    real_b = cnn_features(classifier, real_images[order[half : 2 * half]])
    pick = rng.permutation(len(raw))[:half]

    def scores(images: np.ndarray) -> dict:
        read = predict_proba(classifier, images).argmax(1)
        confusion = np.zeros((k, k), np.int64)  # row: the digit asked for, column: read as
        np.add.at(confusion, (wanted, read), 1)
        return {
            "conditional_accuracy": float(np.mean(read == wanted)),
            "per_digit": {str(d): float(np.mean(read[wanted == d] == d)) for d in range(k)},
            "confusion": confusion.tolist(),
            "frechet": frechet_distance(cnn_features(classifier, images[pick]), real_a),
        }

    return {
        **scores(centre_by_mass(raw)),
        "frechet_real_vs_real": frechet_distance(real_b, real_a),
        "n_generated": len(raw),
        "raw": scores(raw),
    }
