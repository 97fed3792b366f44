"""Any picture of a digit -> MNIST's 28x28: modes, orientation, photos, bad files, the faces."""

from __future__ import annotations

import csv
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitlab import app_handlers
from digitlab.cli import main
from digitlab.cnn import CourseCNN, predict_proba
from digitlab.errors import DataError, ImageError
from digitlab.image_predict import model_classes, predict_images
from digitlab.loaders import load_model, save_model
from digitlab.picture_kinds import KINDS, render
from digitlab.preprocess import MNIST_SATURATED, MNIST_STROKE, prepare, to_mnist
from digitlab.shipped import CNN as SHIPPED_CNN

CASES = Path(__file__).parent / "fixtures" / "images"
EXPECTED = list(csv.DictReader((CASES / "expected.csv").open()))


@pytest.fixture(scope="module")
def shipped():
    return load_model(SHIPPED_CNN)


def _page(h: int = 300, w: int = 240) -> np.ndarray:
    """A '7'-like digit of dark ink (0.1) on light paper (0.9), float (h, w); ink mask too."""
    ink = np.zeros((h, w), bool)
    ink[60:75, 60:180] = True  # the bar
    for r in range(75, 250):  # the slanted stem
        c = 175 - (r - 75) * 0.45
        ink[r, int(c) - 8 : int(c) + 8] = True
    return np.where(ink, 0.1, 0.9), ink


def _corr(a, b) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


# ----- the cases handed over with the issue, through both faces ---------------------------


@pytest.mark.parametrize("row", EXPECTED, ids=[r["file"] for r in EXPECTED])
def test_cases_through_cnn_predict(row, capsys):
    path = CASES / row["file"]
    code = main(["cnn", "predict", str(SHIPPED_CNN), str(path), "--top", "1"])
    out, err = capsys.readouterr()
    if row["expected"] == "error":
        assert code == 1 and out == ""
        assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err
    else:
        assert code == 0 and err == ""
        assert out.startswith(f"{path}: {row['expected']} (")


@pytest.mark.parametrize("row", EXPECTED, ids=[r["file"] for r in EXPECTED])
def test_cases_through_the_app(row, shipped):
    models = app_handlers.Models(cnn=shipped)
    result = app_handlers.classify(models, str(CASES / row["file"]))
    if row["expected"] == "error":
        assert result["seen"] is None and result["cnn"] is None and result["message"]
    else:
        assert result["message"] == ""
        assert max(result["cnn"], key=result["cnn"].get) == row["expected"]
        assert result["preprocessing"]  # what was done, for the page


def test_one_bad_file_does_not_stop_the_others(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    good = CASES / "thin_4.png"
    data = (CASES / "six_dim.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])  # a truncated file
    argv = ["cnn", "predict", str(SHIPPED_CNN), str(good), str(bad), str(tmp_path / "cut.jpg")]
    assert main([*argv, str(CASES / "two_exif8.jpg")]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith(f"{good}: 4") and "two_exif8.jpg: 2" in out
    lines = err.splitlines()
    assert len(lines) == 2 and str(bad) in lines[0] and "cut.jpg" in lines[1]


# ----- every mode, orientation, bad input --------------------------------------------------


def _in_mode(grey: np.ndarray, ink: np.ndarray, mode: str) -> Image.Image:
    u8 = np.rint(grey * 255).astype(np.uint8)
    if mode == "1":
        return Image.fromarray(u8).convert("1")
    if mode in ("L", "RGB", "CMYK"):
        return Image.fromarray(u8).convert(mode)
    if mode == "P":
        return Image.fromarray(u8).convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
    if mode == "P_transparent":  # the paper's palette entry is transparent
        p = Image.fromarray(u8).convert("P")
        p.info["transparency"] = int(np.asarray(p)[0, 0])
        return p
    if mode in ("LA", "RGBA"):  # white ink in the alpha channel, the rest transparent
        alpha = Image.fromarray(np.where(ink, 255, 0).astype(np.uint8))
        base = Image.new("L", alpha.size, 255)
        return Image.merge("LA", (base, alpha)).convert(mode)
    if mode == "I;16":  # a 16-bit scan: paper about 52000, ink about 9000
        return Image.fromarray(np.where(ink, 9000, 52000).astype(np.uint16))
    if mode == "I":
        return Image.fromarray(np.where(ink, -200_000, 3_000_000).astype(np.int32), "I")
    if mode == "F":
        return Image.fromarray((grey * 40.0).astype(np.float32), "F")
    raise AssertionError(mode)


MODES = ["1", "L", "LA", "P", "P_transparent", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]


@pytest.mark.parametrize("mode", MODES)
def test_every_pillow_mode_gives_the_same_digit(mode, tmp_path):
    grey, ink = _page()
    want = to_mnist(Image.fromarray(np.rint(grey * 255).astype(np.uint8)))
    image = _in_mode(grey, ink, mode)
    suffix = ".tif" if mode in ("I", "F", "CMYK") else ".png"
    path = tmp_path / f"digit{suffix}"
    image.save(path, **({"transparency": image.info["transparency"]} if "P_" in mode else {}))
    got = prepare(path)
    assert got.image.dtype == np.uint8 and got.image.shape == (28, 28)
    assert _corr(got.image, want) > 0.9, mode
    assert got.image.max() == 255  # scaled to full contrast, not clipped or left faint
    # a transparent paper (P with its paper colour transparent) leaves the ink in the alpha too
    in_alpha = mode in ("LA", "RGBA", "P_transparent")
    assert got.ink_from_alpha == in_alpha and got.inverted == (not in_alpha)


def test_arrays_of_any_dtype():
    grey, ink = _page()
    want = to_mnist((grey * 255).astype(np.uint8))
    for arr in (grey, (grey * 65535).astype(np.uint16), np.stack([grey] * 3, -1), ~ink):
        assert _corr(to_mnist(arr), want) > 0.9


def test_exif_orientation_is_applied(tmp_path):
    grey, _ = _page()
    upright = Image.fromarray(np.rint(grey * 255).astype(np.uint8)).convert("RGB")
    want = to_mnist(upright)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view": stored turned the other way
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "t.jpg", exif=exif)
    got = prepare(tmp_path / "t.jpg")
    assert got.rotated and _corr(got.image, want) > 0.95
    stored = to_mnist(Image.open(tmp_path / "t.jpg").convert("L").copy().transpose(0))
    assert _corr(stored, want) < 0.6  # without the tag it would be another picture


def test_what_was_done_is_reported():
    grey, ink = _page()
    page = np.full((400, 500), 0.9)
    page[:300, :240] = grey
    page[380:384, 470:474] = 0.1  # a speck far from the digit
    got = prepare(page)
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    want = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    assert got.inverted and got.dropped == 1
    assert np.abs(np.subtract(got.crop_box, want)).max() <= 4
    assert "inverted" in got.describe() and "speck" in got.describe()
    light = prepare(1 - page)
    assert not light.inverted and _corr(light.image, got.image) > 0.98


def test_uneven_light_and_a_shadowed_corner():
    grey, _ = _page(300, 300)
    yy, xx = np.mgrid[:300, :300]
    light = 0.45 + 0.55 * xx / 299  # from dim to bright across the page
    light = light * np.where(xx + yy < 160, 0.5, 1.0)  # and a corner in shadow
    got = prepare(grey * light)
    want = to_mnist(grey)
    assert _corr(got.image, want) > 0.9 and not got.warnings


def test_thin_and_fat_strokes_come_out_at_mnists_weight():
    from skimage.morphology import dilation, disk, skeletonize

    _, ink = _page()

    thin = prepare(np.where(skeletonize(ink), 0.0, 1.0))
    fat = prepare(np.where(dilation(ink, disk(14)), 0.0, 1.0))
    assert thin.stroke_scale > 2 and fat.stroke_scale < 1
    for got in (thin, fat):
        ink_px = got.image[got.image > 25]
        assert 0.15 < (ink_px >= 250).mean() < 0.7  # saturated cores, not a faint grey digit
        assert 60 < (got.image > 25).sum() < 260  # MNIST's digits: 10-90% is 85-210 pixels


def test_a_fat_markers_closed_loop_is_ink_throughout():
    """A filled blob far wider than any paper estimate's reach stays ink to its middle (issue
    14: the fattest markers close the loops of 3s, 6s and 9s, whose insides came out grey)."""
    from digitlab.preprocess import _flatten

    yy, xx = np.mgrid[:300, :400]
    blob = (yy - 150) ** 2 + (xx - 200) ** 2 < 110**2
    flat, _, inverted, _ = _flatten(np.where(blob, 0.15, 0.85))
    inside = flat[(yy - 150) ** 2 + (xx - 200) ** 2 < 100**2]
    assert inverted and inside.min() > 0.9 * inside.max()
    outside = (yy - 150) ** 2 + (xx - 200) ** 2 > 115**2  # past the blob's smoothed edge
    assert flat[outside].max() < 0.1 * inside.max()


def test_coloured_ink_as_bright_as_its_paper():
    """Red ink on grey-yellow paper of the same brightness (luma): blank by brightness, clear
    by colour. It must read as the same digit as black on white."""
    grey, ink = _page()
    luma = np.array([0.299, 0.587, 0.114])
    pen, paper = np.array([0.85, 0.3, 0.2]), np.array([0.5, 0.45, 0.15])
    paper = paper * (pen @ luma) / (paper @ luma)  # the very same brightness
    rgb = np.where(ink[..., None], pen, paper)
    got = prepare(np.rint(rgb * 255).astype(np.uint8))
    assert got.ink_by_colour and "colour" in got.describe()
    assert _corr(got.image, to_mnist(grey)) > 0.95
    assert not prepare(grey).ink_by_colour  # grey pictures keep the brightness path


def test_lined_and_squared_paper_rules_are_dropped():
    grey, _ = _page()
    want = to_mnist(grey)
    lined = grey.copy()
    lined[5::22] = 0.7  # faint rules every 22 rows, across the digit too
    lined[6::22] = 0.7
    got = prepare(lined)
    assert "ruled lines" in got.describe() and _corr(got.image, want) > 0.95
    squared = lined.copy()
    squared[:, 9::22] = np.minimum(squared[:, 9::22], 0.7)
    assert _corr(prepare(squared).image, want) > 0.95
    # A lone stroke from edge to edge is a digit, not a rule.
    one = np.full((300, 240), 0.9)
    one[:, 110:126] = 0.1
    seen = prepare(one)
    assert "ruled" not in seen.describe()
    assert np.ptp(np.flatnonzero((seen.image > 128).any(1))) >= 18  # still the full height


@pytest.mark.real_data
@pytest.mark.parametrize("kind", ["coloured_ink", "ruled_paper", "thick_marker"])
def test_seeded_pictures_of_the_new_kinds(kind, mnist, shipped):
    """The kinds added after the first benchmark (and the fattest pens), on their own seed:
    at least 9 of 10 read right."""
    rng = np.random.default_rng(11)
    idx = rng.choice(len(mnist.x_test), 10, replace=False)
    files = [render(d, kind, rng) for d in mnist.x_test[idx]]
    images = np.stack([prepare(f).image for f in files])
    ok = predict_proba(shipped, images).argmax(1) == mnist.y_test[idx]
    assert ok.sum() >= 9, np.flatnonzero(~ok)


def test_bad_pictures_name_the_file(tmp_path):
    cases = {
        "blank.png": Image.new("L", (300, 300), 250),
        "tiny.png": Image.new("L", (1, 1), 0),
        "huge.png": Image.new("1", (12100, 12000), 1),
    }
    for name, image in cases.items():
        image.save(tmp_path / name)
    (tmp_path / "text.png").write_text("not an image at all")
    whole = (CASES / "thin_4.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    messages = {
        "blank.png": "no digit found",
        "tiny.png": "too small",
        "huge.png": "too large",
        "text.png": "not an image",
        "cut.png": "damaged or incomplete",
    }
    for name, text in messages.items():
        with pytest.raises(ImageError, match=text) as info:
            prepare(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)
        assert isinstance(info.value, (DataError, ValueError))
        assert info.value.reason == ("blank" if name == "blank.png" else "unreadable")
    noisy = np.clip(0.6 + np.random.default_rng(0).normal(0, 0.05, (400, 400)), 0, 1)
    with pytest.raises(ImageError, match=r"no digit found \(the picture looks blank\)") as info:
        prepare(noisy)  # a blank sheet photographed: noise is not a digit
    assert info.value.reason == "blank"
    # Pure noise is not called blank (it was).
    for shape in ((300, 300, 3), (300, 300), (600, 800, 3)):
        static = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
        with pytest.raises(ImageError, match="nothing in it stands out as a digit") as info:
            prepare(static)
        assert info.value.reason == "no_digit"
    # The reason travels with the error to a worker process and back.
    back = pickle.loads(pickle.dumps(info.value))
    assert (type(back), str(back), back.reason) == (ImageError, str(info.value), "no_digit")
    with pytest.raises(ValueError, match="reason must be one of"):
        ImageError("x", "odd")


# ----- models of other datasets ----------------------------------------------------------


def test_fashion_model_prints_its_class_names(tmp_path, capsys):
    from digitlab.data import DATASETS

    names = list(DATASETS["fashion-mnist"].classes)
    save_model(CourseCNN().eval(), tmp_path / "m", {"dataset": "fashion-mnist"})
    assert model_classes(tmp_path / "m") == (tuple(names), "fashion-mnist")
    assert main(["cnn", "predict", str(tmp_path / "m"), str(CASES / "thin_4.png")]) == 0
    out = capsys.readouterr().out
    assert sum(name in out for name in names) == 3
    # a garment is fitted whole into 28x28, not put through the digit's 20x20 and mass centring
    answer = next(
        predict_images(load_model(tmp_path / "m"), [CASES / "thin_4.png"], recipe="object")
    )
    rows = np.flatnonzero(answer.prepared.image.max(1) > 0)
    assert rows[-1] - rows[0] + 1 > 24
    stored = json.loads((SHIPPED_CNN / "metadata.json").read_text())
    assert stored["classes"] == [str(d) for d in range(10)]


# ----- the figures preprocessing aims at, and a small seeded benchmark ---------------------


@pytest.mark.real_data
def test_mnist_stroke_figures(mnist):
    from skimage.morphology import skeletonize

    widths, saturated = [], []
    for image in mnist.x_test[:500]:
        strokes = image >= 128
        ys, xs = np.nonzero(image > 25)
        box = max(np.ptp(ys), np.ptp(xs)) + 1
        widths.append(strokes.sum() / skeletonize(strokes).sum() / box)
        saturated.append((image[image > 25] >= 250).mean())
    assert abs(np.median(widths) - MNIST_STROKE) < 0.01
    assert abs(np.median(saturated) - MNIST_SATURATED) < 0.03


FIRST_ROUND = KINDS[: KINDS.index("tight_crop")]


@pytest.mark.slow
@pytest.mark.real_data
def test_seeded_pictures_of_every_kind(mnist, shipped):
    """14 pictures of each first-round kind (238 in all, seed 3): the shipped CNN reads >= 95%
    of them, and no kind falls below 11/14 (the benchmark's targets are 97% and 93% on 40 a
    kind, every kind). The later rounds' kinds have their own tests on their own seeds
    (`SECOND_ROUND`, `THIRD_ROUND`): here they only doubled the suite's slowest test."""
    rng = np.random.default_rng(3)
    right, per_kind = 0, {}
    for kind in FIRST_ROUND:
        idx = rng.choice(len(mnist.x_test), 14, replace=False)
        files = [render(d, kind, rng) for d in mnist.x_test[idx]]
        images = np.stack([prepare(f).image for f in files])
        ok = predict_proba(shipped, images).argmax(1) == mnist.y_test[idx]
        per_kind[kind] = int(ok.sum())
        right += int(ok.sum())
    assert right / (14 * len(FIRST_ROUND)) >= 0.95, per_kind
    assert min(per_kind.values()) >= 11, per_kind


def test_render_is_seeded():
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    for kind in KINDS:
        a = render(digit, kind, np.random.default_rng(1))
        assert a == render(digit, kind, np.random.default_rng(1))
        Image.open(io.BytesIO(a)).load()


# ----- pictures in the wild, second round (a fresh tester's kinds) -------------------------

SECOND_ROUND = ("tight_crop", "tiny_in_big", "alpha_paper", "stencil", "form_box")
SECOND_ROUND += ("underlined", "framed_board")


@pytest.mark.real_data
@pytest.mark.parametrize("kind", SECOND_ROUND)
def test_seeded_pictures_of_the_second_round(kind, mnist, shipped):
    """Digits cropped to their box (read as the paper once: 11/14), small on a big page (7/14,
    "blank"), on partly transparent paper (9/14; the rest crashed), cut out of an opaque sheet
    (0/14, "blank"), in a printed box (9/14), underlined, chalk on a framed board (3/14): now
    at least 11 of 14 each, on a seed of their own (old code, seed 21: 53 of 98 in all)."""
    rng = np.random.default_rng(31)
    idx = rng.choice(len(mnist.x_test), 14, replace=False)
    images = np.stack([prepare(render(d, kind, rng)).image for d in mnist.x_test[idx]])
    ok = predict_proba(shipped, images).argmax(1) == mnist.y_test[idx]
    assert ok.sum() >= 11, np.flatnonzero(~ok)


def _blank_pages() -> dict[str, np.ndarray]:
    """Blank paper as people photograph it: nothing on it but light and its own edge."""
    h, w = 600, 800
    yy, xx = np.mgrid[:h, :w]
    centred = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / ((h / 2) ** 2 + (w / 2) ** 2)
    return {
        "vignette": 0.9 - 0.5 * centred,
        "gradient": np.tile(np.linspace(0.2, 1.0, w), (h, 1)),
        "paper edge": np.where(xx < 650, 0.85, 0.2),
        "paper on a table": np.where((abs(yy - 300) < 220) & (abs(xx - 400) < 300), 0.85, 0.25),
        "shadowed corner": np.where(xx + yy < 300, 0.45, 0.9),
    }


@pytest.mark.parametrize("page", list(_blank_pages()))
def test_blank_pages_in_uneven_light_are_blank(page):
    """These got a digit at 70-100% (a vignette 0 at 99.8%, a gradient 1 at 100%)."""
    grey = _blank_pages()[page]
    noisy = np.clip(grey + np.random.default_rng(0).normal(0, 0.01, grey.shape), 0, 1)
    for picture in (grey, noisy):
        with pytest.raises(ImageError, match="no digit found"):
            prepare(picture)


def test_a_filled_shape_is_one_clear_error_everywhere(shipped):
    """A filled square made an erosion of ~100 px radius: MemoryError (800 MB), a traceback
    for the file and for every file after it, and the app's request crashed."""
    square = np.full((400, 400), 255, np.uint8)
    square[100:300, 100:300] = 0
    yy, xx = np.mgrid[:400, :400]
    disc = np.where((yy - 200) ** 2 + (xx - 200) ** 2 < 120**2, 0, 255).astype(np.uint8)
    with pytest.raises(ImageError, match="one filled shape"):
        prepare(disc)
    # A black square in a white frame is as well a black picture with white padding: blank.
    with pytest.raises(ImageError, match="one filled shape|no digit found"):
        prepare(square)
    rgba = np.dstack([np.repeat(disc[..., None], 3, 2), np.full((400, 400), 255, np.uint8)])
    text = app_handlers.classify({"cnn": shipped}, {"composite": rgba})
    assert "filled shape" in str(text)


def test_pixel_values_a_scan_or_a_float_file_can_hold(tmp_path, shipped):
    """One hot pixel (65535 in a 16-bit scan of 500..3000, 1e30 in a float file) squeezed the
    picture into 4% of the range (read as blank); inf or NaN in a float TIFF gave a traceback
    or "blank": now the hot pixel is clipped and non-finite values are one message."""
    grey, _ = _page()
    scan = (500 + 2500 * grey).astype(np.uint16)
    scan[0, 0] = 65535
    Image.fromarray(scan).save(tmp_path / "scan.png")
    assert _corr(prepare(tmp_path / "scan.png").image, to_mnist(grey)) > 0.95
    hot = grey.astype(np.float32)
    hot[0, 0] = 1e30
    Image.fromarray(hot, "F").save(tmp_path / "hot.tif")
    assert _corr(prepare(tmp_path / "hot.tif").image, to_mnist(grey)) > 0.95
    for bad in (np.inf, np.nan):
        f = grey.astype(np.float32)
        f[5, 5] = bad
        Image.fromarray(f, "F").save(tmp_path / "bad.tif")
        with pytest.raises(ImageError, match="NaN or infinite"):
            prepare(tmp_path / "bad.tif")


def test_odd_sources_are_read_or_named(tmp_path):
    """Open files and BytesIO are read; None, a number, "", a pipe, a closed image, complex
    pixels and an over-size bomb each get an ImageError (some were misleading, a raw
    ValueError, or a wait forever); Pillow's warning about corrupt EXIF stays quiet."""
    import os
    import warnings

    grey, _ = _page()
    png = io.BytesIO()
    Image.fromarray((grey * 255).astype(np.uint8)).save(png, "PNG")
    want = to_mnist(grey)
    assert _corr(prepare(io.BytesIO(png.getvalue())).image, want) > 0.99
    (tmp_path / "d.png").write_bytes(png.getvalue())
    with open(tmp_path / "d.png", "rb") as handle:
        assert _corr(prepare(handle).image, want) > 0.99
    assert _corr(prepare(memoryview(png.getvalue())).image, want) > 0.99
    la = Image.fromarray((grey * 255).astype(np.uint8)).convert("LA").convert("La")
    assert _corr(prepare(la).image, want) > 0.95
    closed = Image.open(tmp_path / "d.png")
    closed.close()
    os.mkfifo(tmp_path / "pipe.png")
    for source, text in [
        (None, "expected a picture"),
        (7, "expected a picture"),
        ("", "empty path"),
        (tmp_path / "pipe.png", "not a regular file"),
        (closed, "Pillow cannot read"),
        (grey.astype(complex), "real numbers"),
    ]:
        with pytest.raises(ImageError, match=text):
            prepare(source)
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)
    with pytest.raises(ImageError, match=r"too large \(far more pixels than at most 12000x12000"):
        prepare(bomb)
    jpeg = io.BytesIO()
    Image.fromarray((grey * 255).astype(np.uint8)).convert("RGB").save(
        jpeg, "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03\xff\xff"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _corr(prepare(jpeg.getvalue()).image, want) > 0.95


def test_cnn_predict_checks_the_model_before_out_and_writes_what_it_saw(tmp_path, capsys):
    """A wrong model left --out's folder marker behind; --out held a titled matplotlib figure
    (341x363) under the name *_28x28.png; warnings were never shown."""
    grey, _ = _page()
    Image.fromarray((grey * 255).astype(np.uint8)).save(tmp_path / "seven.png")
    assert (
        main(
            [
                "cnn",
                "predict",
                str(tmp_path / "nope"),
                str(tmp_path / "seven.png"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    assert not (tmp_path / "o").exists()
    capsys.readouterr()
    edge = grey[:, 60:]  # the 7's bar now starts at the left edge: "may be cut off"
    Image.fromarray((edge * 255).astype(np.uint8)).save(tmp_path / "edge.png")
    pictures = [str(tmp_path / "seven.png"), str(tmp_path / "edge.png")]
    out = ["--out", str(tmp_path / "o")]
    assert main(["cnn", "predict", str(SHIPPED_CNN), *pictures, *out]) == 0
    seen = Image.open(tmp_path / "o" / "seven_28x28.png")
    assert seen.size == (28, 28) and seen.mode == "L"
    np.testing.assert_array_equal(np.asarray(seen), prepare(tmp_path / "seven.png").image)
    err = capsys.readouterr().err
    assert "edge.png: note: the ink touches the edge" in err


def _on_page(digit: np.ndarray, side: int = 300) -> np.ndarray:
    """An MNIST digit drawn dark on a white page, uint8 (side, side)."""
    big = Image.fromarray(255 - digit).resize((side // 2, side // 2), Image.Resampling.BICUBIC)
    page = np.full((side, side), 255, np.uint8)
    page[side // 4 : side // 4 + side // 2, side // 4 : side // 4 + side // 2] = np.asarray(big)
    return page


def _padded(page: np.ndarray, how: str, rng) -> np.ndarray:
    """The page letterboxed, padded with transparency, or inside a printed border."""
    h, w = page.shape
    if how == "letterbox":  # black bands on all four sides, 25-35% of the page each
        m = int(rng.uniform(0.25, 0.35) * h)
        return np.pad(page, m, constant_values=0)
    if how == "transparent padding":  # opaque page, transparent margins wider than itself
        m = int(rng.uniform(0.5, 0.8) * h)
        rgba = np.zeros((h + 2 * m, w + 2 * m, 4), np.uint8)
        rgba[m : m + h, m : m + w, :3] = page[..., None]
        rgba[m : m + h, m : m + w, 3] = 255
        return rgba
    framed = page.copy()  # a printed border 2-4 px wide, 5-12% inside the edges
    m, t = int(rng.uniform(0.05, 0.12) * h), int(rng.integers(2, 5))
    framed[m : h - m, m : m + t] = framed[m : h - m, w - m - t : w - m] = 0
    framed[m : m + t, m : w - m] = framed[h - m - t : h - m, m : w - m] = 0
    return framed


@pytest.mark.real_data
@pytest.mark.parametrize("how", ["letterbox", "transparent padding", "page border"])
def test_padding_and_borders_are_not_the_digit(how, mnist, shipped):
    """A fresh tester's third round: the picture's outline was read as the digit (letterboxed
    on four sides 9/12, a printed page border 4/12, a 0 at 100%) or refused as one filled shape
    (transparent padding wider than the picture, 0/12)."""
    rng = np.random.default_rng(41)
    idx = rng.choice(len(mnist.x_test), 10, replace=False)
    images = np.stack([prepare(_padded(_on_page(d), how, rng)).image for d in mnist.x_test[idx]])
    ok = predict_proba(shipped, images).argmax(1) == mnist.y_test[idx]
    assert ok.sum() >= 9, np.flatnonzero(~ok)
    # A page's own white margin is no padding: a fat 7 whose bar makes a plain row stays whole.
    _, ink = _page()
    from skimage.morphology import dilation, disk

    fat = prepare(np.where(dilation(ink, disk(14)), 0.0, 1.0))
    assert fat.crop_box[1] > 30  # the bar starts 46 px down; trimming would put it at 0


@pytest.mark.real_data
def test_a_second_digit_beside_it_is_said(mnist):
    """ "87" answered one digit at 100% with "1 speck dropped"; now a note says a digit-sized
    mark was left out."""
    pair = np.concatenate([_on_page(mnist.x_test[0]), _on_page(mnist.x_test[1])], axis=1)
    seen = prepare(pair)
    assert any("digit-sized mark" in w for w in seen.warnings) and seen.dropped == 0
    assert not any("digit-sized" in w for w in prepare(_on_page(mnist.x_test[0])).warnings)


def _note_on_desk(digit: np.ndarray, rng) -> np.ndarray:
    """An MNIST digit on a yellow sticky note turned 0-40 degrees, on a dark wooden desk,
    uint8 RGB (480, 560, 3), as a phone photographs it."""
    h, w = 480, 560
    xx = np.mgrid[:h, :w][1]
    desk = np.stack([0.35, 0.22, 0.12]) * (0.8 + 0.2 * np.sin(xx / rng.uniform(6, 14)))[..., None]
    side = int(rng.uniform(0.45, 0.6) * h)
    note = Image.new("L", (side, side), 255)
    ink = Image.fromarray(digit).resize((side * 2 // 3, side * 2 // 3), Image.Resampling.BICUBIC)
    note.paste(0, (side // 6, side // 6), ink)
    angle = float(rng.uniform(0, 40))
    shape = Image.new("L", (side, side), 255).rotate(angle, expand=True)
    note = note.rotate(angle, expand=True, fillcolor=255)
    top, left = (h - note.height) // 2, (w - note.width) // 2
    where = np.zeros((h, w), bool)
    where[top : top + note.height, left : left + note.width] = np.asarray(shape) > 128
    paper = np.zeros((h, w))
    paper[top : top + note.height, left : left + note.width] = np.asarray(note) / 255.0
    yellow = np.array([1.0, 0.92, 0.45]) * (0.15 + 0.85 * paper[..., None])
    rgb = np.where(where[..., None], yellow, desk) + rng.normal(0, 0.015, (h, w, 3))
    return np.clip(rgb * 255, 0, 255).astype(np.uint8)


@pytest.mark.real_data
def test_a_sticky_note_on_a_desk_is_read_inside(mnist, shipped):
    """The note (a square, turned) was taken for the digit and its digit-shaped hole read:
    2 of 12 right, the rest mostly 0 at 98-99%. A sheet is told by its outline: a rectangle
    turned any way, holding the digit as a small hole."""
    rng = np.random.default_rng(43)
    idx = rng.choice(len(mnist.x_test), 10, replace=False)
    images = np.stack([prepare(_note_on_desk(d, rng)).image for d in mnist.x_test[idx]])
    ok = predict_proba(shipped, images).argmax(1) == mnist.y_test[idx]
    assert ok.sum() >= 8, np.flatnonzero(~ok)


def _big_photo(digit: np.ndarray, size=(8200, 6000), at=(3000, 1500), side=2000) -> Image.Image:
    page = Image.new("L", size, 228)
    page.paste(Image.fromarray(255 - digit).resize((side, side), Image.Resampling.BICUBIC), at)
    return page


def test_phone_sized_photos_are_read_reduced_not_refused(mnist, tmp_path):
    """A 48-50 MP phone photo (8,000 x 6,000 and more) was refused as "too large (at most
    4096x4096)": now read reduced by a whole factor (JPEGs decoded at that scale), the same
    digit as at half the size, its crop box in the file's own pixels."""
    model = load_model(SHIPPED_CNN)
    for i in (0, 1, 4):
        page = _big_photo(mnist.x_test[i])
        half = prepare(page.reduce(3))
        for fmt in ("PNG", "JPEG"):
            path = tmp_path / f"big{i}.{fmt.lower()}"
            page.save(path, fmt, quality=92)
            seen = prepare(path)
            assert predict_proba(model, seen.image[None])[0].argmax() == mnist.y_test[i]
            left, top, right, bottom = seen.crop_box  # inside the pasted square
            assert 2990 <= left < right <= 5010 and 1490 <= top < bottom <= 3510
            for ours, theirs in zip(seen.crop_box, half.crop_box, strict=True):
                assert abs(ours - 3 * theirs) <= 12
        # The PNG is reduced exactly as Pillow's reduce(3): the same 28x28 as the smaller one.
        np.testing.assert_array_equal(prepare(tmp_path / f"big{i}.png").image, half.image)
        np.testing.assert_array_equal(prepare(page).image, half.image)  # a PIL image too
    array = np.asarray(_big_photo(mnist.x_test[4]))
    assert predict_proba(model, prepare(array).image[None])[0].argmax() == mnist.y_test[4]


def test_reduced_array_is_the_block_mean():
    from digitlab.images import _reduced_array

    rng = np.random.default_rng(0)
    for shape, f, dtype in [
        ((5, 7), 2, np.uint8),
        ((9, 10, 3), 3, np.float32),
        ((8, 8), 4, np.uint16),
    ]:
        a = (rng.random(shape) * 60000).astype(dtype)
        ref = np.array(
            [
                [
                    a[i : i + f, j : j + f].astype(np.float64).mean((0, 1))
                    for j in range(0, shape[1], f)
                ]
                for i in range(0, shape[0], f)
            ]
        )
        out = _reduced_array(a, f)
        assert out.dtype == dtype
        np.testing.assert_allclose(out, ref if dtype == np.float32 else np.round(ref), rtol=1e-6)


# ----- pictures in the wild, third round (a fresh tester's kinds) ---------------------------

THIRD_ROUND = ("sheet_on_desk", "notebook_margin", "screen_photo")


@pytest.mark.real_data
@pytest.mark.parametrize("kind", THIRD_ROUND)
def test_seeded_pictures_of_the_third_round(kind, mnist, shipped):
    """A sheet on a darker desk (its edges read as the digit: old code 19-20 of 40, a 4 as a
    7 at 96%), a small digit beside a notebook's red margin (the margin read as a 1 at 99.8%),
    a photo of a screen with moire (read as blank): at least 12 of 14 each on their own seed
    (new code 36-40 of 40 on two other seeds)."""
    rng = np.random.default_rng(41)
    idx = rng.choice(len(mnist.x_test), 14, replace=False)
    images = np.stack([prepare(render(d, kind, rng)).image for d in mnist.x_test[idx]])
    ok = predict_proba(shipped, images).argmax(1) == mnist.y_test[idx]
    assert ok.sum() >= 12, np.flatnonzero(~ok)


def test_every_kind_has_a_seeded_test():
    """A kind added to `picture_kinds.KINDS` joins a round's test, or fails here."""
    assert sorted(FIRST_ROUND + SECOND_ROUND + THIRD_ROUND) == sorted(KINDS)


def test_a_blank_sheet_on_a_desk_is_still_blank():
    rng = np.random.default_rng(0)
    desk = np.clip(0.3 + rng.normal(0, 0.03, (600, 800)), 0, 1)
    desk[100:500, 200:600] = np.clip(0.93 + rng.normal(0, 0.01, (400, 400)), 0, 1)
    with pytest.raises(ImageError, match="no digit found|one filled shape"):
        prepare(desk)


def test_a_light_digit_on_a_dark_canvas_is_no_sheet(mnist, shipped):
    """A light 0 on black is a bright loop round a dark hole, never a sheet on a desk."""
    for i in np.flatnonzero(mnist.y_test == 0)[:5]:
        big = np.asarray(Image.fromarray(mnist.x_test[i]).resize((400, 400)))
        seen = prepare(big)
        assert predict_proba(shipped, seen.image[None])[0].argmax() == 0
        assert not seen.inverted


def test_a_lone_line_across_the_page_is_left_out_beside_a_digit(mnist, shipped):
    """A fold or a table's edge as one thin straight line from edge to edge beside a small
    digit; and a "1" that is alone on its page is still read, even from edge to edge."""
    digit = mnist.x_test[np.flatnonzero(mnist.y_test == 9)[0]]
    page = np.full((600, 800), 0.95)
    page[:, 100:104] = 0.45  # a fold's shadow, top to bottom
    small = np.asarray(Image.fromarray(255 - digit).resize((60, 60))) / 255
    page[270:330, 400:460] = np.minimum(page[270:330, 400:460], small)
    seen = prepare(page)
    assert predict_proba(shipped, seen.image[None])[0].argmax() == 9
    one = np.full((300, 200), 0.95)
    one[:, 98:104] = 0.1
    assert predict_proba(shipped, prepare(one).image[None])[0].argmax() == 1


def test_a_four_sided_outline_is_told_from_an_oval():
    from skimage.draw import ellipse, polygon

    from digitlab.preprocess import _four_sided

    quad, oval = np.zeros((200, 300), bool), np.zeros((200, 300), bool)
    quad[polygon([10, 20, 190, 180], [30, 270, 250, 10], quad.shape)] = True
    oval[ellipse(100, 150, 80, 120, oval.shape)] = True
    assert _four_sided(quad) and not _four_sided(oval)


def test_files_that_are_no_pictures_say_what_they_are(tmp_path):
    (tmp_path / "scan.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << >> endobj\n")
    (tmp_path / "d.svg").write_text(
        '<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>'
    )
    (tmp_path / "empty.png").write_bytes(b"")
    for name, words in [
        ("scan.pdf", "a PDF document"),
        ("d.svg", "an SVG drawing"),
        ("empty.png", "an empty file"),
    ]:
        with pytest.raises(ImageError, match=words):
            prepare(tmp_path / name)


def test_files_pillow_decodes_only_through_other_programs_say_what_they_are(tmp_path):
    """An EPS file was "damaged or incomplete (Unable to locate Ghostscript on paths)"; the
    stub formats (GRIB, BUFR, HDF5) "damaged" too ("cannot find loader")."""
    Image.new("L", (64, 64), 255).save(tmp_path / "3_fmt.eps")
    (tmp_path / "hand.eps").write_text(
        "%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nnewpath 10 10 moveto stroke\n"
    )
    (tmp_path / "page.ps").write_text("%!PS-Adobe-3.0\nshowpage\n")
    (tmp_path / "rain.grb").write_bytes(b"GRIB\x00\x00\x00\x01" + bytes(100))
    (tmp_path / "cube.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    for name, words in [
        ("3_fmt.eps", "an EPS drawing, not a picture of pixels: export it as PNG"),
        ("hand.eps", "an EPS drawing"),
        ("page.ps", "a PostScript document"),
        ("rain.grb", "a GRIB file, which Pillow reads only through a plug-in"),
        ("cube.h5", "a HDF5 file"),
    ]:
        for source in (tmp_path / name, (tmp_path / name).read_bytes()):
            with pytest.raises(ImageError, match=words) as caught:
                prepare(source)
            assert "damaged" not in str(caught.value)
    opened = Image.open(tmp_path / "3_fmt.eps")  # a PIL image not yet loaded
    with opened, pytest.raises(ImageError, match="an EPS drawing"):
        prepare(opened)


@pytest.mark.parametrize(
    "dtype", ["U1", "S1", object, "datetime64[D]", "timedelta64[s]", complex, [("a", int)]]
)
@pytest.mark.parametrize("shape", [(1, 1), (40, 40)])
def test_arrays_of_no_numbers_are_said_so_at_any_size(dtype, shape):
    """prepare(np.array([['a']])) said "too small (1x1 pixels)"; a timedelta array counted as
    integers and was read as a picture."""
    with pytest.raises(ImageError, match="pixels must be real numbers"):
        prepare(np.zeros(shape, dtype=dtype))


def test_heic_photos_are_read_with_the_plug_in_and_named_without_it(
    tmp_path, monkeypatch, mnist, shipped
):
    pillow_heif = pytest.importorskip("pillow_heif")
    digit = mnist.x_test[0]
    page = Image.fromarray(255 - np.asarray(Image.fromarray(digit).resize((300, 300)))).convert(
        "RGB"
    )
    heif = pillow_heif.from_pillow(page)
    heif.save(tmp_path / "photo.heic", quality=90)
    seen = prepare(tmp_path / "photo.heic")
    assert predict_proba(shipped, seen.image[None])[0].argmax() == mnist.y_test[0]
    monkeypatch.setitem(__import__("sys").modules, "pillow_heif", None)  # not installed
    with pytest.raises(ImageError, match=r"HEIC/HEIF photo .* pip install 'digitlab\[heic\]'"):
        prepare((tmp_path / "photo.heic").read_bytes())


@pytest.mark.parametrize("angle", [10, 35, 60, 80, 100, 140, 170])
def test_a_blank_sheet_with_a_shadow_across_it_is_blank(angle):
    """A hand's or phone's shadow across the middle of an empty sheet, its soft edge
    running off the page: the trace it left at the border read as a 1 at 99.8% or a 7."""
    h, w = 600, 800
    yy, xx = np.mgrid[:h, :w]
    a = np.radians(angle)
    d = np.cos(a) * (xx - 0.45 * w) + np.sin(a) * (yy - 0.55 * h)
    light = 0.55 + 0.45 / (1 + np.exp(-d / 16))
    rng = np.random.default_rng(angle)
    page = np.clip(0.94 * light + rng.normal(0, 0.01, (h, w)), 0, 1)
    buf = io.BytesIO()
    Image.fromarray((page * 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
    with pytest.raises(ImageError, match="no digit found"):
        prepare(buf.getvalue())


def test_one_rule_straight_across_a_blank_page_is_blank(mnist, shipped):
    page = np.full((600, 800), 0.94)
    page[300:303] = 0.5
    with pytest.raises(ImageError, match="no digit found"):
        prepare(page)
    # The same rule under a digit is left out, and the digit read.
    digit = mnist.x_test[np.flatnonzero(mnist.y_test == 4)[0]]
    ink = np.asarray(Image.fromarray(digit).resize((200, 200))) / 255
    page[60:260, 300:500] = np.minimum(page[60:260, 300:500], 1 - 0.9 * ink)
    assert predict_proba(shipped, prepare(page).image[None])[0].argmax() == 4


@pytest.mark.parametrize("side", [6, 8, 12, 20])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_digit_on_a_transparency_checkerboard(side, fmt, mnist, shipped):
    """Editors draw transparency as grey and white squares, and screenshots keep them: black
    digits on them read as blank (10 of 10 from one tester, 8 of 8 from another)."""
    rng = np.random.default_rng(side)
    idx = rng.choice(len(mnist.x_test), 4, replace=False)
    right = 0
    for i in idx:
        h, w = 360, 420
        yy, xx = np.mgrid[:h, :w]
        grey_level = rng.uniform(0.75, 0.85)
        board = np.where((yy // side + xx // side) % 2, grey_level, 1.0)
        ink = np.asarray(Image.fromarray(mnist.x_test[i]).resize((240, 240))) / 255
        board[60:300, 90:330] = np.minimum(board[60:300, 90:330], 1 - ink)
        buf = io.BytesIO()
        Image.fromarray((board * 255).astype(np.uint8)).convert("RGB").save(buf, fmt, quality=92)
        seen = prepare(buf.getvalue())
        right += predict_proba(shipped, seen.image[None])[0].argmax() == mnist.y_test[i]
    assert right >= 3


@pytest.mark.parametrize("turn", [0, 12, 25])
def test_a_blank_sheet_or_note_on_a_desk_is_blank(turn):
    """Its outline was read as a 0 at 100% or its shading as a 1 at 99.9% (turned sheets,
    patterned desks, a sticky note)."""
    rng = np.random.default_rng(turn)
    desk = Image.fromarray((100 + rng.normal(0, 8, (1000, 1400))).clip(0, 255).astype(np.uint8))
    for size in ((560, 720), (260, 260)):
        sheet = Image.new("L", size, 232).rotate(turn, expand=True, fillcolor=0)
        mask = Image.new("L", size, 255).rotate(turn, expand=True)
        page = desk.copy()
        page.paste(sheet, ((1400 - sheet.width) // 2, (1000 - sheet.height) // 2), mask)
        buf = io.BytesIO()
        page.save(buf, "JPEG", quality=88)
        with pytest.raises(ImageError, match="no digit found"):
            prepare(buf.getvalue())


@pytest.mark.parametrize("axis", [0, 1])
def test_a_blank_page_with_a_fold_is_blank(axis):
    page = 0.93 + np.random.default_rng(axis).normal(0, 0.012, (900, 700))
    if axis:
        page[:, 340:344] *= 0.9  # a fold down the page
    else:
        page[440:444] *= 0.9
    with pytest.raises(ImageError, match="no digit found"):
        prepare(np.clip(page, 0, 1))


def test_an_apps_colour_swatches_are_not_the_digit(mnist, shipped):
    """A drawing app's palette row (solid boxes) was read as a 7 at 97% beside a thin 1."""
    from PIL import ImageDraw

    for label in (1, 4):
        digit = mnist.x_test[np.flatnonzero(mnist.y_test == label)[1]]
        im = Image.new("RGB", (1280, 800), (240, 240, 240))
        d = ImageDraw.Draw(im)
        d.rectangle([0, 0, 1280, 40], fill=(50, 50, 60))
        colours = [(0, 0, 0), (255, 0, 0), (0, 160, 0), (0, 0, 255), (255, 200, 0), (255, 128, 0)]
        for k, c in enumerate(colours):
            d.rectangle([80 + 36 * k, 764, 110 + 36 * k, 794], fill=c, outline=(0, 0, 0))
        d.rectangle([100, 70, 1060, 740], fill="white")
        ink = Image.fromarray(255 - digit).resize((420, 420), Image.Resampling.BILINEAR)
        thin = np.asarray(ink) > 60  # a thin pen's lines
        canvas = np.asarray(im).copy()
        canvas[200:620, 380:800][~thin] = 0
        seen = prepare(canvas)
        assert predict_proba(shipped, seen.image[None])[0].argmax() == label


@pytest.mark.real_data
def test_a_zero_one_mask_reads_as_ink_and_paper(mnist, shipped):
    """A uint8 mask of 0 and 1 (a segmentation or threshold export) read as a black, blank
    picture ("no digit found"); the same mask as 0/255, as bool or as a mode-1 image read
    fine. Now every form reads the same pixels: as a PNG (L and RGB), a uint8 array, and
    beside an alpha channel, whose 0/1 values stay nearly transparent (by 255)."""
    digits = mnist.x_test[:12]
    masks = (digits > 128).astype(np.uint8)
    for mask, label in zip(masks, mnist.y_test[:12], strict=True):
        big = np.kron(mask, np.ones((6, 6), np.uint8))  # a 168 px export
        expected = prepare(big * 255).image
        for form in ("L", "RGB"):
            buf = io.BytesIO()
            image = Image.fromarray(1 - big if form == "L" else np.dstack([1 - big] * 3))
            image.save(buf, "PNG")  # dark ink (0) on paper (1), as a mask is often saved
            np.testing.assert_array_equal(prepare(buf.getvalue()).image, expected)
        np.testing.assert_array_equal(prepare(big).image, expected)
        assert predict_proba(shipped, expected[None]).argmax() == label
    rgba = np.zeros((120, 120, 4), np.uint8)
    rgba[..., 3] = 1  # all but transparent: no picture in it
    with pytest.raises(ImageError):
        prepare(rgba)


@pytest.mark.parametrize("fmt", ["TIFF", "GIF"])
def test_only_the_first_frame_is_read_and_that_is_said(tmp_path, mnist, shipped, fmt):
    """A multi-page TIFF or an animated GIF: its first frame is read, with a note saying so;
    a blank first frame with the digit on the second was "blank" with no word why."""
    seven = Image.fromarray(255 - mnist.x_test[0]).resize((140, 140))  # test digit 0 is a 7
    blank = Image.new("L", (140, 140), 255)
    for frames, path in (([seven, blank], "seven-first"), ([blank, seven], "blank-first")):
        file = tmp_path / f"{path}.{fmt.lower()}"
        frames[0].save(file, fmt, save_all=True, append_images=frames[1:])
        if path == "seven-first":
            seen = prepare(file)
            assert predict_proba(shipped, seen.image[None])[0].argmax() == 7
            assert "only the first of its 2 frames (pages) is read" in seen.warnings
        else:
            with pytest.raises(ImageError, match=r"no digit found .*first of its 2 frames") as info:
                prepare(file)
            assert info.value.reason == "blank"  # kept through the note on frames
    assert not prepare(CASES / "thin_4.png").warnings  # one frame: nothing said


def _vignetted_page(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A 50-px digit on a 1,600 x 1,200 warm-grey photo whose light falls off by a quarter
    toward the corners (a phone's vignette), with sensor noise, as a JPEG."""
    W, H, S = 1600, 1200, 50
    yy, xx = np.mgrid[0:H, 0:W]
    falloff = 1 - 0.125 * (((xx - W / 2) / (W / 2)) ** 2 + ((yy - H / 2) / (H / 2)) ** 2)
    page = falloff[..., None] * np.array([230.0, 226, 218])
    ink = np.asarray(Image.fromarray(digit).resize((S, S), Image.Resampling.BICUBIC)) / 255
    ink = np.clip((ink - 0.25) / 0.5, 0, 1)[..., None]
    x0, y0 = int(rng.integers(W // 4, W // 2)), int(rng.integers(H // 4, H // 2))
    page[y0 : y0 + S, x0 : x0 + S] = page[y0 : y0 + S, x0 : x0 + S] * (1 - ink) + 35 * ink
    page += rng.normal(0, 3, page.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.real_data
def test_a_small_digit_on_a_vignetted_photo(mnist, shipped):
    """Light falling off toward a photo's corners made them peaks the paper's estimate cut
    off, and the cut corners read as the digit beside a small real one (old code: 4 of 10,
    a fresh tester's 4000 x 3000 pages 5 of 10); now at least 9 of 10."""
    rng = np.random.default_rng(7)
    idx = rng.choice(len(mnist.x_test), 10, replace=False)
    images = np.stack([prepare(_vignetted_page(mnist.x_test[i], rng)).image for i in idx])
    ok = predict_proba(shipped, images).argmax(1) == mnist.y_test[idx]
    assert ok.sum() >= 9, np.flatnonzero(~ok)
