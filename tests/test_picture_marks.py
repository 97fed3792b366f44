"""Pictures holding more than one digit: the reader keeps one digit and says so.

Two handwritten digits half a digit apart once joined as one mark (an 8 and a 7 read as a 0 at
99.9%, with no note); typed "87" and "2024" were read as one digit with no note either."""

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from digitlab.preprocess import prepare

SCALE = 10  # a 28x28 digit becomes a 280x280 drawing


def _page(digits: list[np.ndarray], gap: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """MNIST digits side by side on white paper (dark ink), `gap` pixels between their ink
    boxes at SCALE; returns the page and each digit's ink columns on it."""
    parts, spans, x = [], [], 40
    for d in digits:
        cols = np.flatnonzero((d > 64).any(0))
        ink = d[:, cols[0] : cols[-1] + 1]
        big = np.asarray(Image.fromarray(ink).resize((ink.shape[1] * SCALE, 28 * SCALE)))
        parts.append((x, big))
        spans.append((x, x + big.shape[1]))
        x += big.shape[1] + gap
    page = np.full((28 * SCALE + 80, x + 40), 255, np.uint8)
    for left, big in parts:
        part = page[40 : 40 + big.shape[0], left : left + big.shape[1]]
        np.minimum(part, 255 - big, out=part)  # overlapping ink stays ink
    return page, spans


def _first_of_each(mnist, classes):
    return [mnist.x_test[np.flatnonzero(mnist.y_test == c)[0]] for c in classes]


@pytest.mark.parametrize("pair", [(8, 7), (4, 2), (1, 2), (3, 9), (1, 5), (2, 0)])
@pytest.mark.parametrize("gap_share", [0.0, 0.25, 0.6, 1.0])
def test_two_handwritten_digits_side_by_side_read_one_and_note_the_other(mnist, pair, gap_share):
    digits = _first_of_each(mnist, pair)
    gap = max(8, int(gap_share * 20 * SCALE))  # a share of a digit's width apart
    page, spans = _page(digits, gap)
    seen = prepare(page)
    assert any("1 more digit-sized mark left out" in w for w in seen.warnings), seen.describe()
    left, _, right, _ = seen.crop_box
    inside = [lo >= left - 4 and hi <= right + 4 for lo, hi in spans]
    assert sum(inside) == 1, (seen.crop_box, spans)  # exactly one of the two is read


def test_typed_numbers_say_how_many_digits_were_left_out():
    try:
        font = ImageFont.load_default(size=120)  # Pillow >= 10.1: a scalable font
    except TypeError:
        pytest.skip("this Pillow has no scalable default font")
    for text in ("87", "42", "2024"):
        page = Image.new("L", (200 + 110 * len(text), 260), 255)
        ImageDraw.Draw(page).text((60, 40), text, fill=0, font=font)
        seen = prepare(page)
        left_out = len(text) - 1
        word = "mark" if left_out == 1 else "marks"
        assert any(f"{left_out} more digit-sized {word} left out" in w for w in seen.warnings), (
            text,
            seen.describe(),
        )


def test_single_digits_get_no_second_digit_note(mnist):
    """The same reader on 150 single test digits drawn the same way: no digit's own strokes
    are taken for a second digit, and at most 3% are called wider than a digit (1.4% of
    MNIST's training digits are 1.4 times as wide as high or wider)."""
    wide = 0
    for d in mnist.x_test[:150]:
        page, _ = _page([d], 0)
        seen = prepare(page)
        assert not any("digit-sized mark" in w for w in seen.warnings), seen.describe()
        wide += any("times as wide as high" in w for w in seen.warnings)
    assert wide <= 5


def test_digits_written_touching_are_said_to_be_wide(mnist):
    """Two digits overlapping into one mark cannot be told apart; the note says so."""
    a, b = _first_of_each(mnist, (4, 2))
    page, _ = _page([a, b], -10)
    seen = prepare(page)
    assert any("times as wide as high" in w for w in seen.warnings), seen.describe()


def test_cnn_predict_out_records_the_notes(mnist, tmp_path, capsys):
    """predictions.csv held no notes: a page of two digits read as one confident answer."""
    import csv

    from digitlab.cli import main

    page, _ = _page(_first_of_each(mnist, (8, 7)), 60)
    Image.fromarray(page).save(tmp_path / "pair.png")
    Image.fromarray(_page(_first_of_each(mnist, (3,)), 0)[0]).save(tmp_path / "one.png")
    out = tmp_path / "o"
    pictures = [str(tmp_path / "pair.png"), str(tmp_path / "one.png")]
    assert main(["cnn", "predict", *pictures, "--out", str(out)]) == 0
    capsys.readouterr()
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert "1 more digit-sized mark left out" in rows[0]["notes"]
    assert "digit-sized" not in rows[1]["notes"]
