"""The web app's handlers as plain functions: arrays in, results out, bad input -> a message."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_digits
from digitlab import app_handlers as h
from digitlab.cnn import CourseCNN
from digitlab.gan import Generator
from digitlab.neighbors import KNeighborsClassifier


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    x, y = make_digits(300, seed=4)
    return h.Models(
        cnn=CourseCNN().eval(),
        knn=KNeighborsClassifier(3).fit(x, y),
        knn_images=x,
        knn_labels=y,
        generator=Generator().eval(),
    )


def _stroke_canvas() -> np.ndarray:
    """An RGBA canvas as Gradio's sketchpad sends it: a black stroke on transparency."""
    canvas = np.zeros((280, 280, 4), np.uint8)
    canvas[60:220, 130:150] = (0, 0, 0, 255)  # a "1"
    return canvas


def test_drawing_becomes_mnist_and_both_models_answer(models):
    r = h.classify(models, {"composite": _stroke_canvas(), "layers": [], "background": None})
    assert r["message"] == "" and r["seen"].shape == (28, 28) and r["seen"].dtype == np.uint8
    assert abs(sum(r["cnn"].values()) - 1) < 1e-5 and len(r["cnn"]) == 10
    assert 0 <= r["knn"]["vote"] <= 9 and len(r["knn"]["neighbours"]) == 3
    # the stroke is vertical and centred: the 28x28 has its ink in the middle columns
    cols = np.flatnonzero(r["seen"].max(0) > 50)
    assert cols.min() >= 9 and cols.max() <= 18


@pytest.mark.parametrize(
    "image, message",
    [
        (None, "Draw a digit"),
        ({"composite": np.zeros((280, 280, 4), np.uint8)}, "canvas is empty"),
        ({"composite": None}, "Draw a digit"),
    ],
)
def test_empty_input_gives_a_message(models, image, message):
    r = h.classify(models, image)
    assert r["seen"] is None and message in r["message"] and r["cnn"] is None


def test_bad_uploads_give_a_message(models, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture")
    assert "not an image" in h.read_drawing(str(text))[1]
    huge = tmp_path / "huge.png"
    Image.new("L", (5000, 5000), 255).save(huge)
    assert "too large" in h.read_drawing(str(huge))[1]
    good = tmp_path / "digit.png"
    Image.fromarray(255 - _stroke_canvas()[..., 3]).save(good)  # dark ink on white paper
    seen, message = h.read_drawing(str(good))
    assert message == "" and seen.shape == (28, 28)


def test_generate_morph_browse(models, tmp_path):
    images, msg = h.generate_digits(models, 3, 4, 0)
    assert msg == "" and images.shape == (4, 28, 28)
    assert h.generate_digits(models, 12, 4, 0)[1].startswith("digit must be")
    assert "count must be" in h.generate_digits(models, 3, 500, 0)[1]
    path, msg = h.morph(models, 2, 6, 5, tmp_path)
    assert msg == "" and path.suffix == ".gif" and path.is_file()
    assert "steps must be" in h.morph(models, 2, 6, 1, tmp_path)[1]
    assert "No dataset" in h.browse(models, 3)[1]
    assert h.run_figures(models) == []
    empty = h.Models()
    assert "No generator" in h.generate_digits(empty, 3, 2, 0)[1]


def test_many_requests_at_once(models):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: h.classify(models, _stroke_canvas()), range(24)))
    assert all(r["cnn"] is not None for r in results)
    first = results[0]["cnn"]
    assert all(r["cnn"] == first for r in results)  # same drawing, same answer, no crosstalk
