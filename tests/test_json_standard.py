"""Every JSON file digitlab writes is standard JSON: no Infinity or NaN, which Python reads
but a browser's JSON.parse, jq and most languages refuse."""

import json
import math

import numpy as np

from conftest import write_fake_idx
from digitlab.cli import main
from digitlab.files import atomic_write_json, jsonable


def _strict(path):
    """json.loads that refuses Infinity/NaN, as other JSON readers do."""

    def refuse(word):
        raise ValueError(f"{path.name} holds {word}: not standard JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def test_non_finite_floats_become_null_everywhere():
    data = {
        "a": float("inf"),
        "b": [1.5, -math.inf, float("nan")],
        "c": np.array([np.inf, 2.0]),
        "d": np.float64("nan"),
        "e": np.float32(0.25),
        "f": {"g": (math.nan,)},
    }
    assert jsonable(data) == {
        "a": None,
        "b": [1.5, None, None],
        "c": [None, 2.0],
        "d": None,
        "e": 0.25,
        "f": {"g": [None]},
    }


def test_atomic_json_is_standard(tmp_path):
    path = atomic_write_json(tmp_path / "x.json", {"margin": [math.inf, 0.5]})
    assert _strict(path) == {"margin": [None, 0.5]}


def test_a_run_whose_training_subset_lacks_a_digit_writes_standard_json(tmp_path, capsys):
    """knn.train_size=12 leaves digits with no training image: their misclassified test digits'
    distance margins are infinite, and metrics.json and stages/knn.json held `Infinity`. The
    report is rebuilt from that JSON all the same."""
    data = write_fake_idx(tmp_path / "data", n_train=200, n_test=50)
    out = tmp_path / "run"
    args = ["run", "--data-dir", str(data), "--stages", "knn", "--out", str(out)]
    assert main([*args, "knn.train_size=12", "knn.k=1"]) == 0
    metrics = _strict(out / "metrics.json")
    margins = metrics["stages"]["knn"]["misclassified_confident_margin"]
    assert None in margins  # a true digit absent from the 12 training images
    assert all(m is None or m >= 0 for m in margins)
    for path in out.rglob("*.json"):
        _strict(path)
    capsys.readouterr()
    assert main(["report", str(out)]) == 0


def test_the_report_shows_a_diverged_loss_instead_of_failing(tmp_path, capsys):
    """A NaN loss (a diverged CNN) is null in metrics.json; `digitlab report` shows it."""
    data = write_fake_idx(tmp_path / "data", n_train=200, n_test=50)
    out = tmp_path / "run"
    settings = ["cnn.train_size=150", "cnn.epochs=1", "cnn.threads=1"]
    args = ["run", "--data-dir", str(data), "--stages", "cnn", "--out", str(out)]
    assert main([*args, *settings]) == 0
    metrics = _strict(out / "metrics.json")
    metrics["stages"]["cnn"]["history"]["val_loss"][0] = None
    (out / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "not a number" in (out / "report.html").read_text(encoding="utf-8")
