import json

import numpy as np
import pytest

from conftest import write_fake_idx
from digitlab.cli import main
from digitlab.data import load_dataset
from digitlab.errors import ConfigError
from digitlab.knn_experiment import KNNConfig, parse_k_range, run_knn, run_knn_sweep


@pytest.fixture
def fake(tmp_path):
    return write_fake_idx(tmp_path / "d", n_train=400, n_test=100)


def test_parse_k_range():
    assert parse_k_range("1-7") == [1, 2, 3, 4, 5, 6, 7]
    assert parse_k_range("1,3,5") == [1, 3, 5]
    assert parse_k_range("1-9:2") == [1, 3, 5, 7, 9]
    for bad in ("0-3", "a", "", "3-x"):
        with pytest.raises(ConfigError):
            parse_k_range(bad)


def test_sweep_chooses_on_validation_not_test(fake, monkeypatch):
    ds = load_dataset("mnist", fake)
    result = run_knn_sweep(ds, KNNConfig(train_size=300), [1, 3, 5])
    assert result["chosen_k"] == max([1, 3, 5], key=lambda k: (result["val_accuracy"][k], -k))
    assert result["n_val"] == 30 and result["n_fit"] == 270
    # Make the test labels worthless: the choice must not move.
    ds.y_test = np.zeros_like(ds.y_test)
    again = run_knn_sweep(ds, KNNConfig(train_size=300), [1, 3, 5])
    assert (
        again["chosen_k"] == result["chosen_k"] and again["val_accuracy"] == result["val_accuracy"]
    )


def test_run_is_seeded(fake):
    ds = load_dataset("mnist", fake)
    a = run_knn(ds, KNNConfig(train_size=200, seed=3))
    b = run_knn(ds, KNNConfig(train_size=200, seed=3))
    np.testing.assert_array_equal(a["predictions"], b["predictions"])
    assert a["accuracy"] > 0.9
    import torch

    assert 1 <= a["threads"] <= torch.get_num_threads()  # what the search ran on
    c = run_knn(ds, KNNConfig(train_size=200, seed=3, threads=1, pca=20))
    assert c["threads"] == 1  # the float-feature path records its count too


@pytest.mark.parametrize(
    "cfg, message",
    [
        (KNNConfig(train_size=300, k=0), "k must be"),
        (KNNConfig(train_size=-5), "train_size must be"),
        (KNNConfig(train_size=10**6), "train_size must be"),
        (KNNConfig(train_size=300, weights="cubic"), "weights must be"),
        (KNNConfig(train_size=300, pca=0), "pca must be"),
    ],
)
def test_bad_config(fake, cfg, message):
    with pytest.raises(ConfigError, match=message):
        run_knn(load_dataset("mnist", fake), cfg)


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, "0.1", True, float("nan"), None])
def test_bad_validation_fraction(fake, fraction):
    """The sweep's settings, the validation run and a CNN's settings refuse it alike."""
    from digitlab.knn_experiment import SweepConfig, run_knn_validation
    from digitlab.train import TrainConfig

    with pytest.raises(ConfigError, match="val_fraction must be in"):
        SweepConfig(train_size=300, val_fraction=fraction).validate(60000)
    with pytest.raises(ConfigError, match="val_fraction must be in"):
        run_knn_validation(load_dataset("mnist", fake), KNNConfig(train_size=300), fraction)
    with pytest.raises(ConfigError, match="val_fraction must be in"):
        TrainConfig(val_fraction=fraction).validate(60000)


def test_sweep_checks_k_against_the_fitting_share():
    from digitlab.knn_experiment import SweepConfig

    SweepConfig(train_size=100, ks="1-90", val_fraction=0.1).validate(60000)  # 90 to fit on
    with pytest.raises(ConfigError, match=r"largest k \(91\) exceeds the 90 fitting samples"):
        SweepConfig(train_size=100, ks="1-91", val_fraction=0.1).validate(60000)


def test_cli_knn_writes_metrics_and_figures(fake, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["knn", "--k", "3", "--train-size", "300", "--data-dir", str(fake), "--out", str(out)]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "f1_macro", "confusion_matrix", "per_class"):
        assert key in metrics
    assert len(metrics["per_class"]) == 10 and {"tp", "fp", "fn", "tn"} <= set(
        metrics["per_class"][0]
    )
    for name in ("confusion_matrix", "per_class", "misclassified"):
        assert (out / f"knn_{name}.png").is_file()
    assert "macro F1" in capsys.readouterr().out


def test_cli_sweep(fake, tmp_path, capsys):
    out = tmp_path / "sw"
    assert (
        main(
            [
                "knn",
                "sweep",
                "--k",
                "1-4",
                "--train-size",
                "300",
                "--data-dir",
                str(fake),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads((out / "sweep.json").read_text())
    assert set(result["val_accuracy"]) == {"1", "2", "3", "4"} and (out / "knn_sweep.png").is_file()
    assert "<- chosen" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["knn", "--k", "0"], "k must be"),
        (["knn", "--train-size", "0"], "--train-size must be"),
        (["knn", "sweep", "--k", "0-3"], "k values must be"),
        (["knn", "--train-size", "300", "--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_cli_errors(fake, tmp_path, capsys, argv, message):
    assert main([*argv, "--data-dir", str(fake), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_bad_train_size_word(capsys):
    with pytest.raises(SystemExit):
        main(["knn", "--train-size", "lots"])
    assert "expected a whole number or 'all'" in capsys.readouterr().err


def test_training_subset_missing_a_class(fake):
    """A subset with no 5s: probabilities are spread to all 10 classes, 5 gets recall 0."""
    ds = load_dataset("mnist", fake)
    keep = ds.y_train != 5
    ds.x_train, ds.y_train = ds.x_train[keep], ds.y_train[keep]
    result = run_knn(ds, KNNConfig(train_size=None, k=1))
    assert result["proba"].shape == (len(ds.x_test), 10)
    assert (result["proba"][:, 5] == 0).all()
    np.testing.assert_allclose(result["proba"].sum(1), 1)
    cm = np.array(result["confusion_matrix"])
    assert cm.shape == (10, 10) and cm[:, 5].sum() == 0 and cm[5].sum() > 0
    assert result["per_class"][5]["recall"] == 0.0
    # Columns are labels: every wrong prediction has probability in its own label's column.
    for i in result["misclassified_confident"]:
        assert result["proba"][i, result["predictions"][i]] > 0
    assert len(result["misclassified_confident_margin"]) == len(result["misclassified_confident"])


@pytest.mark.real_data
def test_cli_knn_with_a_class_missing_from_the_subset(mnist_dir, tmp_path):
    """`knn --k 1 --train-size 30 --seed 0` draws no 5: a 10x10 matrix, recall 0 for 5."""
    out = tmp_path / "knn"
    args = ["knn", "--k", "1", "--train-size", "30", "--seed", "0"]
    assert main([*args, "--data-dir", str(mnist_dir), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    cm = np.array(metrics["confusion_matrix"])
    assert cm.shape == (10, 10) and cm[:, 5].sum() == 0 and cm[5].sum() == 892
    assert metrics["per_class"][5]["recall"] == 0.0
    assert list(out.rglob("*misclassified*.png"))


def test_knn_sweep_split_that_cannot_be_made_is_refused_before_the_data(tmp_path, capsys):
    """`knn sweep --val-fraction 0.001` failed only after the data had loaded."""
    from digitlab.cli import main

    argv = ["knn", "sweep", "--data-dir", str(tmp_path / "missing"), "--train-size", "300"]
    assert main([*argv, "--val-fraction", "0.001", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "holds out 0 of 300 training images" in err and "at least 0.0317" in err
    assert not (tmp_path / "o").exists()
