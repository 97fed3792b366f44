"""The report's headline figures say what was measured: a figure that is not 0 (or not a
perfect 1) never reads as one after rounding."""

from digitlab import report


def test_a_gan_trained_for_40_steps_is_not_zero_epochs(tmp_path):
    """`gan train --max-steps 40` then `digitlab run --stages gan` headlined "0.0 training
    epochs"."""
    meta = {"steps": 40, "epochs": 40 / 1094, "dataset": "mnist", "seed": 0}
    html = report.section_gan(tmp_path, {"generator_metadata": meta})
    assert "40 steps (0.04 epochs)" in html
    assert "0.0 training epochs" not in html and ">0.0<" not in html
    long = {"steps": 21_880, "epochs": 20.0}
    assert "21,880 steps (20.0 epochs)" in report.section_gan(
        tmp_path, {"generator_metadata": long}
    )
    # A generator saved after an epoch, without its step count: whole epochs as before.
    assert ">3.0</b><span>training epochs" in report.section_gan(
        tmp_path, {"generator_metadata": {"epochs": 3}}
    )


def test_small_or_nearly_perfect_figures_keep_their_digits():
    assert report._pct(3e-5) == "0.003%"  # not "0.00%"
    assert report._pct(0.99999) == "99.999%"  # not "100.00%"
    assert report._pct(1.0) == "100.00%" and report._pct(0.0) == "0.00%"
    assert report._pct(0.9912) == "99.12%"
    assert report._seconds(0.04) == "0.04 s" and report._seconds(0.0) == "0.0 s"
    assert report._honest(-0.0004, 3) == "-0.0004"  # an ARI just below chance, not "-0.000"
    assert report._honest(12.34, 1) == "12.3"


def test_the_knn_cards_of_a_fast_tiny_run_keep_their_digits(tmp_path):
    """ "fit + predict 0.0 s" and "macro F1 0.0000" for figures that were not 0."""
    knn = {
        "accuracy": 0.00002,
        "f1_macro": 0.00004,
        "n_errors": 49_999,
        "n_samples": 50_000,
        "timing": {"fit_predict_s": 0.03},
        "per_class": [],
        "config": {"k": 3, "weights": "uniform", "train_size": 50, "deskew": False, "pca": 0},
    }
    html = report.section_knn(tmp_path, knn)
    for card in ("0.03 s", "0.00004", "0.002%"):
        assert f"<b>{card}</b>" in html, card


def test_the_gan_cards_say_they_were_recorded_not_measured_here(tmp_path):
    """The GAN stage draws pictures; its quality cards are the generator's own metadata. They
    once stood beside the run's measured kNN and CNN figures with nothing saying so."""
    quality = {
        "conditional_accuracy": 0.9752,
        "frechet": 26.51,
        "frechet_real_vs_real": 8.31,
        "n_generated": 5000,
    }
    html = report.section_gan(tmp_path, {"generator_metadata": {"quality": quality}})
    assert "<b>97.52%</b>" in html and "<b>26.5</b>" in html
    assert "recorded with it when it was measured (5,000 generated digits" in html
    assert "this run did not measure them" in html and "digitlab gan evaluate" in html
    # No quality recorded: no cards and nothing said about them.
    bare = report.section_gan(tmp_path, {"generator_metadata": {"steps": 40, "epochs": 0.04}})
    assert "did not measure" not in bare


def _cnn_metrics(resumed_from: int) -> dict:
    epochs = 60
    return {
        "train_config": {"lr": 0.001, "batch_size": 128, "epochs": epochs, "train_size": 6000},
        "history": {
            key: [0.5] * epochs
            for key in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds")
        },
        "accuracy": 0.968,
        "f1_macro": 0.967,
        "n_errors": 320,
        "n_samples": 10_000,
        "training": {"threads": 2, "resumed_from_epoch": resumed_from},
        "summary": "",
        "per_class": [],
    }


def test_a_resumed_cnn_says_so(tmp_path):
    """A CNN resumed at epoch 37 of 60 read as 60 epochs trained in its 31 s stage time, with
    `resumed_from_epoch` only in metrics.json."""
    html = report.section_cnn(tmp_path, _cnn_metrics(36))
    assert "Resumed at epoch 37 of 60</b>: epochs 1–36 were trained by an earlier" in html
    assert "stage time counts this run's part only" in html
    assert "Resumed" not in report.section_cnn(tmp_path, _cnn_metrics(0))
