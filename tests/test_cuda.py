"""The CUDA path: same answers as the CPU path. Skipped where no GPU is present (CI here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_digits

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_knn_on_cuda_equals_sklearn_on_real_digits(mnist):
    from sklearn.neighbors import KNeighborsClassifier as Reference

    from digitlab.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    train = rng.choice(len(mnist.x_train), 5000, replace=False)
    x, y = mnist.x_train[train].reshape(5000, -1), mnist.y_train[train]
    q = mnist.x_test[:2000].reshape(2000, -1)
    ref = Reference(n_neighbors=7, algorithm="brute").fit(x, y)
    ref_d, ref_i = ref.kneighbors(q)
    ours = KNeighborsClassifier(n_neighbors=7, device="cuda").fit(x, y)
    d, i = ours.kneighbors(q)
    # Integer pixels: exact squared distances, so neighbours and ties match the float64 reference.
    np.testing.assert_array_equal(np.sort(d, 1), np.sort(ref_d, 1))
    for k in (1, 3, 5, 7):
        ours.set_params(n_neighbors=k)
        ref.set_params(n_neighbors=k)
        np.testing.assert_array_equal(ours.predict(q), ref.predict(q))
    np.testing.assert_array_equal(i[:, 0], ref_i[:, 0])


def test_kmeans_on_cuda_matches_cpu_inertia(mnist):
    from digitlab.kmeans import KMeans

    x = mnist.x_test[:3000].reshape(3000, -1).astype(np.float32)
    cpu = KMeans(10, n_init=3, random_state=0, device="cpu").fit(x)
    gpu = KMeans(10, n_init=3, random_state=0, device="cuda").fit(x)
    assert gpu.inertia_ == pytest.approx(cpu.inertia_, rel=1e-3)
    assert gpu.predict(x).shape == (3000,)


def test_cnn_trains_on_cuda_and_reloads_on_cpu(tmp_path):
    from digitlab.cnn import predict_proba
    from digitlab.loaders import load_model, save_model
    from digitlab.train import TrainConfig, train_cnn

    x, y = make_digits(600)
    cfg = TrainConfig(epochs=2, train_size=None, device="cuda", batch_size=64)
    model, history, info = train_cnn(x, y, cfg, checkpoint_dir=tmp_path / "ck", progress=False)
    assert info["device"].startswith("cuda")
    assert history.val_accuracy[-1] > 0.5
    save_model(model, tmp_path / "m")
    on_cpu = load_model(tmp_path / "m")
    np.testing.assert_allclose(
        predict_proba(on_cpu, x[:100]), predict_proba(model, x[:100]), atol=1e-4
    )
    # Resume on CUDA from the CPU-readable checkpoint.
    cfg.epochs = 3
    _, history, _ = train_cnn(
        x, y, cfg, checkpoint_dir=tmp_path / "ck", resume=True, progress=False
    )
    assert len(history.loss) == 3


def test_gan_trains_on_cuda_and_generates_on_cpu(tmp_path):
    from digitlab.gan import generate
    from digitlab.gan_train import GANTrainConfig, train_gan
    from digitlab.loaders import load_generator, save_generator

    x, y = make_digits(640)
    cfg = GANTrainConfig(epochs=1, device="cuda", max_steps=6, checkpoint_every=3)
    g, _, info = train_gan(x, y, cfg, tmp_path / "run", progress=False)
    assert info["device"].startswith("cuda") and info["steps"] == 6
    save_generator(g, tmp_path / "g")
    on_cpu = load_generator(tmp_path / "g")
    np.testing.assert_allclose(
        generate(on_cpu, 3, 4, seed=1).astype(int), generate(g, 3, 4, seed=1).astype(int), atol=1
    )
    cfg.max_steps = 9
    _, _, info = train_gan(x, y, cfg, tmp_path / "run", resume=True, progress=False)
    assert info["steps"] == 9
