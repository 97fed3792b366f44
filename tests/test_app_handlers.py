"""The web app's handlers as plain functions: arrays in, results out, bad input -> a message."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_digits, write_fake_idx
from digitlab import app_handlers as h
from digitlab.cnn import CourseCNN
from digitlab.data import DATASETS
from digitlab.gan import Generator
from digitlab.loaders import save_model
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
    Image.new("1", (12100, 12000), 1).save(huge)
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


def _varied_canvas(i: int) -> np.ndarray:
    canvas = _stroke_canvas()
    canvas[100 + i : 120 + i, 60 : 200 - 3 * i] = (0, 0, 0, 255)  # a different bar per request
    return canvas


def test_many_requests_at_once_are_batched_and_each_gets_its_own_answer(models):
    """Concurrent requests are answered in shared batches, each with the answer it would get
    alone (to float rounding of the batched forward pass), never another request's."""
    from concurrent.futures import ThreadPoolExecutor

    alone = [h.classify(models, _varied_canvas(i)) for i in range(24)]
    models.predictions().batch_sizes.clear()
    with ThreadPoolExecutor(24) as pool:
        together = list(pool.map(lambda i: h.classify(models, _varied_canvas(i)), range(24)))
    for a, b in zip(alone, together, strict=True):
        assert np.array_equal(a["seen"], b["seen"])
        pa = np.array([a["cnn"][str(d)] for d in range(10)])
        pb = np.array([b["cnn"][str(d)] for d in range(10)])
        np.testing.assert_allclose(pa, pb, atol=1e-5)
        assert a["knn"]["vote"] == b["knn"]["vote"]
        assert [n[1:] for n in a["knn"]["neighbours"]] == [n[1:] for n in b["knn"]["neighbours"]]
    sizes = models.predictions().batch_sizes
    assert sum(sizes) == 24 and max(sizes) > 1  # shared batches, nothing lost or doubled


def test_batcher_hands_errors_to_every_waiting_request():
    class Broken:
        def kneighbors(self, X, k):
            raise RuntimeError("index gone")

    m = h.Models(knn=Broken(), knn_labels=np.zeros(1, int))
    with pytest.raises(RuntimeError, match="index gone"):
        m.predictions().predict(np.zeros((28, 28), np.uint8), timeout=10)


def test_negative_or_fractional_seed_is_refused(models):
    assert "seed must be a whole number" in h.generate_digits(models, 3, 2, -1)[1]
    assert "seed must be a whole number" in h.generate_digits(models, 3, 2, 1.5)[1]
    assert h.generate_digits(models, 3, 2, 7)[1] == ""


def test_digits_come_as_text_and_the_limits_are_the_pages(models, tmp_path):
    """The page's dropdowns send digits as text ('3' was refused by Gradio for a dropdown of
    ints); the count's limit is one constant for the slider and the message (the slider
    stopped at 32, the message said 1..64)."""
    assert h.generate_digits(models, "3", 2, 0)[1] == ""
    assert h.generate_digits(models, " 7 ", 1, "5")[1] == ""
    for bad in ("3.5", "x", "", "١", "10", "-1"):  # "١": an Arabic-Indic one
        images, message = h.generate_digits(models, bad, 2, 0)
        assert images is None and "digit must be a whole number 0..9" in message, bad
    top = h.GENERATE_COUNT[1]
    assert h.generate_digits(models, 3, top, 0)[0].shape == (top, 28, 28)
    assert (
        f"count must be a whole number 1..{top}, got {top + 1}"
        in (h.generate_digits(models, 3, top + 1, 0)[1])
    )
    path, message = h.morph(models, "2", "6", 2, tmp_path)
    assert message == "" and path.name == "morph-2-6-2.gif"
    steps = h.MORPH_STEPS[1] + 1
    assert (
        f"steps must be a whole number 2..{steps - 1}" in h.morph(models, 2, 6, steps, tmp_path)[1]
    )


def test_rgba_upload_reaches_the_handler_with_its_alpha(models, tmp_path):
    """A dark digit drawn only in the alpha channel (transparent paper, black ink with zero RGB
    everywhere) must still be read: the file is handed over as it is."""
    rgba = np.zeros((100, 100, 4), np.uint8)
    rgba[20:80, 45:55, 3] = 255  # ink exists only where alpha is opaque
    path = tmp_path / "ink.png"
    Image.fromarray(rgba, "RGBA").save(path)
    seen, message = h.read_drawing(str(path))
    assert message == "" and seen.max() > 200 and seen[:, :5].max() == 0


def test_browse_pages_and_shuffles():
    class DS:
        y_train = np.repeat(np.arange(10), 30)
        x_train = np.arange(300 * 784, dtype=np.int64).reshape(300, 28, 28) % 251

    m = h.Models(dataset=DS())
    first, msg = h.browse(m, 4, count=12, seed=0, page=0)
    second, _ = h.browse(m, 4, count=12, seed=0, page=1)
    shuffled, _ = h.browse(m, 4, count=12, seed=1, page=0)
    assert "page 1 of 3" in msg and first.shape == (12, 28, 28)
    ids = lambda imgs: {int(i[0, 0]) for i in imgs}  # noqa: E731
    assert not ids(first) & ids(second)  # pages never repeat an image
    assert ids(first) != ids(shuffled)
    again, _ = h.browse(m, 4, count=12, seed=0, page=0)
    assert np.array_equal(first, again)  # same seed and page, same images
    assert "must be" in h.browse(m, 4, page=-1)[1]


def test_a_lone_request_gets_the_exact_neighbours(models):
    """One learner alone (a batch of one) gets scikit-learn's exact neighbours."""
    from sklearn.neighbors import NearestNeighbors

    r = h.classify(models, _varied_canvas(3))
    x = models.knn_images.reshape(len(models.knn_images), -1).astype(float)
    dist, idx = (
        NearestNeighbors(n_neighbors=3, algorithm="brute")
        .fit(x)
        .kneighbors(r["seen"].reshape(1, -1).astype(float))
    )
    got = r["knn"]["neighbours"]
    assert [int(models.knn_labels[i]) for i in idx[0]] == [n[1] for n in got]
    np.testing.assert_allclose([n[2] for n in got], dist[0], rtol=1e-6)


def _decode_data_uri(uri: str) -> np.ndarray:
    import base64
    import io

    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_answer_pictures_travel_inline_black_on_white_and_exact():
    """The Draw answer's 28x28 pictures are PNG data URIs (no cache files): 28x28 exactly,
    black ink on white, every pixel as the model saw it (255 - ink)."""
    from digitlab import app

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    back = _decode_data_uri(app.png_data_uri(image))
    assert back.shape == (28, 28) and back.dtype == np.uint8
    assert np.array_equal(back, 255 - image)
    html = app.seen_html(image)
    assert html.count("<img ") == 1 and 'width="168"' in html
    assert app.seen_html(None) == ""


def test_neighbours_strip_has_one_captioned_picture_each():
    import re

    from digitlab import app

    x, y = make_digits(3, seed=2)
    neighbours = [(x[i].reshape(28, 28), int(y[i]), 100.0 * (i + 1)) for i in range(3)]
    html = app.neighbours_html(neighbours)
    uris = re.findall(r'src="([^"]+)"', html)
    assert len(uris) == 3 and html.count("<figcaption>") == 3
    for uri, (img, lab, d) in zip(uris, neighbours, strict=True):
        assert np.array_equal(_decode_data_uri(uri), 255 - img)
        assert f"{lab} · dist {d:.0f}" in html
    assert app.neighbours_html([]) == ""


def test_odd_numbers_from_the_ui_are_one_message(models, tmp_path):
    """Infinity, NaN, fractions and a zero count from the number boxes: a message, never an
    exception (infinity raised OverflowError, count 0 ZeroDivisionError, and a fractional digit
    was truncated)."""
    inf, nan = float("inf"), float("nan")
    for digit, count, seed in ((3, inf, 0), (inf, 4, 0), (3.7, 4, 0), (3, 4, nan), (3, 0, 0)):
        images, message = h.generate_digits(models, digit, count, seed)
        assert images is None and "must be a whole number" in message
    for start, end, steps in ((2, 6, inf), (inf, 6, 9), (2.5, 6, 9)):
        path, message = h.morph(models, start, end, steps, tmp_path)
        assert path is None and "must be a whole number" in message
    for kwargs in ({"digit": inf}, {"digit": 3, "page": inf}, {"digit": 3, "count": 0},
                   {"digit": 3.9}):  # fmt: skip
        dataset = type("DS", (), {"y_train": np.repeat(np.arange(10), 3),
                                  "x_train": np.zeros((30, 28, 28), np.uint8)})()  # fmt: skip
        images, message = h.browse(h.Models(dataset=dataset), **kwargs)
        assert images is None and "must be a whole number" in message
    images, message = h.generate_digits(models, 3.0, 2.0, 5.0)  # whole floats are fine
    assert images.shape == (2, 28, 28) and message == ""


def test_a_cnn_of_another_dataset_answers_with_its_class_names(tmp_path):
    """A Fashion-MNIST CNN's answers were labelled 0-9 and its pictures read as digits."""
    names = tuple(DATASETS["fashion-mnist"].classes)
    torch.manual_seed(0)
    save_model(CourseCNN().eval(), tmp_path / "m", {"dataset": "fashion-mnist"})
    data = write_fake_idx(tmp_path / "data", n_train=200, n_test=50)
    m = h.load_models(data_dir=data, cnn_dir=tmp_path / "m", knn_size=200)
    assert m.cnn_classes == names and m.cnn_recipe == "object"
    assert any("fashion-mnist" in note and "kNN reads MNIST digits" in note for note in m.notes)
    r = h.classify(m, {"composite": _stroke_canvas()})
    assert set(r["cnn"]) == set(names) and abs(sum(r["cnn"].values()) - 1) < 1e-5
    assert 0 <= r["knn"]["vote"] <= 9  # the kNN still votes a digit
    # the CNN saw the picture fitted whole (the object recipe), not MNIST's 20x20 digit box
    from digitlab.cnn import predict_proba
    from digitlab.preprocess import prepare

    whole = prepare(_stroke_canvas(), recipe="object").image
    assert np.ptp(np.flatnonzero(whole.max(1) > 0)) + 1 > 24
    expected = predict_proba(m.cnn, whole[None])[0]
    assert np.allclose([r["cnn"][name] for name in names], expected, atol=1e-6)
    digit_model = h.load_models(data_dir=data, knn_size=200)  # the shipped CNN: digits
    assert digit_model.cnn_classes == tuple(str(d) for d in range(10))
    assert digit_model.cnn_recipe == "digit"


def test_a_cnn_with_damaged_metadata_is_left_out_and_said(tmp_path):
    """metadata.json naming 3 classes for a 10-output network: no CNN (not one labelled
    wrongly, nor one loaded while the page says it is unavailable)."""
    import json

    save_model(CourseCNN().eval(), tmp_path / "m", {"dataset": "mnist"})
    meta = tmp_path / "m" / "metadata.json"
    assert meta.is_file()
    meta.write_text(json.dumps({"classes": ["a", "b", "c"]}))
    data = write_fake_idx(tmp_path / "data", n_train=200, n_test=50)
    m = h.load_models(data_dir=data, cnn_dir=tmp_path / "m", knn_size=200)
    assert m.cnn is None and any(n.startswith("CNN unavailable") for n in m.notes)
    r = h.classify(m, {"composite": _stroke_canvas()})
    assert r["cnn"] is None and r["knn"] is not None


def test_morph_into_a_file_is_a_message_not_an_exception(models, tmp_path):
    """A scratch "folder" that is a regular file: the OutputError came out of the handler."""
    not_a_folder = tmp_path / "plain-file"
    not_a_folder.write_text("x")
    path, message = h.morph(models, 2, 6, 9, not_a_folder)
    assert path is None and str(not_a_folder) in message and message.startswith("cannot write")


def test_bad_seed_and_knn_size_are_notes_and_leave_no_browser(tmp_path):
    """A negative seed raised NumPy's bare ValueError out of load_models; a bad knn_size left
    the dataset browser working while the note said it was unavailable."""
    data = write_fake_idx(tmp_path / "data", n_train=200, n_test=50)
    none = tmp_path / "none"  # no CNN, no generator: only the kNN part is loaded
    for kwargs, said in (
        # knn_size below the 200 images: the seed is used (the path that raised ValueError)
        ({"seed": -1, "knn_size": 100}, "seed must be a whole number >= 0"),
        ({"seed": -1}, "seed must be a whole number >= 0"),
        ({"seed": 1.5, "knn_size": 100}, "seed must be a whole number >= 0"),
        ({"knn_size": 0}, "subset size must be between 1 and 200"),
    ):
        m = h.load_models(data_dir=data, cnn_dir=none, generator_dir=none, **kwargs)
        notes = [n for n in m.notes if n.startswith("kNN and the dataset browser unavailable")]
        assert len(notes) == 1 and said in notes[0], m.notes
        assert m.knn is None and m.dataset is None
        assert "No dataset" in h.browse(m, 3)[1]
    m = h.load_models(data_dir=data, cnn_dir=none, generator_dir=none, knn_size=100, seed=3)
    assert m.knn is not None and len(m.knn_labels) == 100
    assert not any(n.startswith("kNN") for n in m.notes)


def test_a_run_dir_without_figures_is_a_note(tmp_path):
    """--run /nonexistent (or a folder that is no run) was accepted without a word."""
    from digitlab import figures

    none = tmp_path / "none"
    quick = {"data_dir": none, "cnn_dir": none, "generator_dir": none}

    def run_notes(run_dir):
        m = h.load_models(run_dir=run_dir, **quick)
        return m, [n for n in m.notes if n.startswith("run figures unavailable")]

    m, notes = run_notes(tmp_path / "nonexistent")
    assert notes == [
        f"run figures unavailable: {tmp_path / 'nonexistent'} is not a folder; give a run "
        "folder (`digitlab run --out`) with --run"
    ]
    assert m.run_dir is None and h.run_figures(m) == []
    (tmp_path / "afile").write_text("x")
    assert "is not a folder" in run_notes(tmp_path / "afile")[1][0]
    (tmp_path / "empty").mkdir()
    m, notes = run_notes(tmp_path / "empty")
    assert len(notes) == 1 and "holds none of a run's figures" in notes[0]
    assert m.run_dir is None
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    (run / "figures" / figures.CNN["confusion_matrix"]).write_bytes(b"png")
    m, notes = run_notes(run)
    assert notes == [] and m.run_dir == run
    assert h.run_figures(m) == [(run / "figures" / figures.CNN["confusion_matrix"],
                                 "CNN confusion matrix")]  # fmt: skip
    m = h.load_models(**quick)  # no --run: nothing shown, and nothing to say about it
    assert h.run_figures(m) == [] and not any("run figures" in n for n in m.notes)


def test_out_of_range_numbers_are_said_in_short_form(models, tmp_path):
    """A seed of 1e300 in the Generate tab came back as a message with the 301 digits of the
    int it was turned into; every number box's message keeps a long number short."""
    message = h.generate_digits(models, 3, 2, 1e300)[1]
    assert message == "seed must be a whole number >= 0 and <= 2**63 - 1, got 1e+300"
    assert h.generate_digits(models, 3, 2, 10**40)[1].endswith("got 1e+40")
    assert h.generate_digits(models, 3, 2, 2**64)[1].endswith("got 2**64")
    assert (
        h.generate_digits(models, 3, 1e300, 0)[1]
        == "count must be a whole number 1..64, got 1e+300"
    )
    assert h.morph(models, 2, 6, -1e300, tmp_path)[1].endswith("got -1e+300")
    assert h.morph(models, "9" * 200, 6, 9, tmp_path)[1].endswith("got 1e+200")
    dataset = type("DS", (), {"y_train": np.repeat(np.arange(10), 3),
                              "x_train": np.zeros((30, 28, 28), np.uint8)})()  # fmt: skip
    for kwargs in ({"seed": 1e300}, {"page": -(10**300)}):
        message = h.browse(h.Models(dataset=dataset), 3, **kwargs)[1]
        assert message.endswith(("got 1e+300", "got -1e+300")) and len(message) < 70, message
    # load_models' seed is checked by the library's check, in the same short form.
    from digitlab.errors import ConfigError
    from digitlab.validation import check_seed

    with pytest.raises(ConfigError, match=r"got 1e\+300$"):
        check_seed(10**300)


def test_the_app_answers_by_the_reason_not_the_words(tmp_path):
    """The app told "blank" from "nothing stands out" by the error message's words, and the
    message holds the file's name: a blank upload named "it stands out.png" was answered as
    a busy picture."""
    blank = tmp_path / "it stands out.png"
    Image.new("L", (300, 300), 250).save(blank)
    assert h.prepare_drawing(str(blank))[1] == (
        "No digit found: the canvas is empty or the picture is blank."
    )
    static = tmp_path / "a blank sheet.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 300), np.uint8)).save(static)
    assert "nothing in the picture stands out" in h.prepare_drawing(str(static))[1]
