"""A fresh tester's findings on the data commands and the data stage: a picture name that is no
picture format, the settings of stages not run held to a small local folder, and the data
stage drawing something other than asked on small data or data without a class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_digits, write_fake_idx
from digitlab import plots
from digitlab.cli import main
from digitlab.data import load_dataset
from digitlab.errors import ConfigError
from digitlab.idx import write_idx
from digitlab.run_config import load_config, validate_config
from digitlab.tasks.data import DataConfig, overview

# Every stage's subset within a small folder: only the data stage's own settings matter.
ALL = ["knn.train_size=all", "sweep.train_size=all", "cnn.train_size=all", "cluster.train_size=all"]


def one_error_line(err: str) -> str:
    """The one line of a refusal (no traceback, nothing else on stderr)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("digitlab: error: "), err
    return lines[0]


@pytest.fixture
def small(tmp_path) -> Path:
    """A local IDX folder of 300 training images (every class)."""
    return write_fake_idx(tmp_path / "small", n_train=300, n_test=50)


@pytest.fixture
def no_6_or_7(tmp_path) -> Path:
    """A local IDX folder whose training images hold no 6 and no 7."""
    folder = write_fake_idx(tmp_path / "no67", n_train=10, n_test=50)
    x, y = make_digits(300, 1)
    keep = (y != 6) & (y != 7)
    write_idx(folder / "train-images-idx3-ubyte", x[keep])
    write_idx(folder / "train-labels-idx1-ubyte", y[keep])
    return folder


# ----- 1. data show / data gallery --out ------------------------------------------------------


@pytest.mark.parametrize("name", ["x.txt", "g"])
def test_data_pictures_refuse_a_name_that_is_no_picture(small, tmp_path, capsys, name):
    """`--out x.txt` was Pillow's 28-line traceback after the drawing, and `--out g` silently a
    PNG named g: both are refused before anything loads, in the words of `gan generate`."""
    out = tmp_path / "sub" / name
    commands = (
        ["data", "show", "--index", "0"],
        ["data", "gallery", "--digit", "3"],
        ["gan", "generate"],  # the check both reuse, and its words
    )
    lines = []
    for command in commands:
        argv = [*command, "--out", str(out), "--quiet"]
        if command[0] == "data":
            argv += ["--data-dir", str(small)]
        assert main(argv) == 1
        lines.append(one_error_line(capsys.readouterr().err))
    assert "--out must end in an image format (" in lines[0] and ".png" in lines[0]
    assert lines[0] == lines[1] == lines[2]
    assert not (tmp_path / "sub").exists()  # refused before its folder was made


def test_data_pictures_still_take_other_picture_formats(small, tmp_path, capsys):
    for command in (["data", "show", "--index", "0"], ["data", "gallery", "--digit", "3"]):
        out = tmp_path / f"{command[1]}.svg"
        argv = [*command, "--out", str(out), "--data-dir", str(small), "--quiet"]
        assert main(argv) == 0
        assert out.read_text(encoding="utf-8").lstrip().startswith("<?xml")


# ----- 2. stages not run are not held to the data's size -------------------------------------


def test_settings_of_stages_not_run_are_not_held_to_the_data():
    """The quick preset (subsets of 5,000 and 6,000) on a folder of 2,000 images: with only the
    data stage run, nothing is refused; a stage that runs is, naming the override that fixes
    it (and no setting of a stage that does not run)."""
    cfg = load_config("quick")
    validate_config(cfg, 2000, stages=["data"])
    with pytest.raises(ConfigError) as caught:
        validate_config(cfg, 2000, stages=["data", "knn"])
    message = str(caught.value)
    assert message.startswith("[knn] train_size must be in 1..2000 (or all), got 5000")
    assert "set knn.train_size=all" in message and "cnn" not in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"set knn\.train_size=all sweep\.train_size=all cnn"):
        validate_config(cfg, 2000)  # every stage runs: every subset to change, in one line
    # Stages not run still have their settings checked against the dataset's table.
    for bad in ("knn.k=0", "knn.train_size=70000", "cnn.epochs=0"):
        with pytest.raises(ConfigError):
            validate_config(load_config("quick", overrides=[bad]), 2000, stages=["data"])


def test_a_run_stage_larger_than_the_data_says_what_to_set(small, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--preset", "quick", "--data-dir", str(small), "--out", str(out), "--quiet"]
    assert main([*argv, "--stages", "data,knn"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "[knn] train_size must be in 1..300 (or all), got 5000" in line
    assert "set knn.train_size=all" in line


def test_quick_preset_runs_only_the_data_stage_on_a_small_folder(small, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--preset", "quick", "--data-dir", str(small), "--out", str(out), "--quiet"]
    assert main([*argv, "--stages", "data"]) == 0, capsys.readouterr().err
    assert main([*argv, "--stages", "data,knn"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "set knn.train_size=all" in line and "cnn" not in line  # only what runs


# ----- 3. the data stage on small data or data without a class -------------------------------


def run_data_stage(data: Path, out: Path, *settings: str) -> list[str]:
    return ["run", "--data-dir", str(data), "--out", str(out), "--stages", "data", *ALL, *settings]


def test_a_chosen_show_index_beyond_the_data_is_refused_before_work(small, tmp_path, capsys):
    """data.show_index=5000 on 300 images passed the check against 0..59999 and then drew
    image 0 (`shown_index: 0`): refused in one line naming the range, before the stage runs."""
    out = tmp_path / "run"
    assert main(run_data_stage(small, out, "data.show_index=5000", "--quiet")) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "[data] show_index must be a whole number in 0..299" in line and "5000" in line
    assert not (out / "stages" / "data.json").exists()
    assert not list(out.glob("**/data_digit.png"))
    # Called directly, the overview refuses it too (no silent image 0).
    ds = load_dataset("mnist", small)
    with pytest.raises(ConfigError, match=r"0\.\.299"):
        overview(ds, DataConfig(show_index=5000), 0, tmp_path / "figs")
    assert main(run_data_stage(small, out, "data.show_index=299", "--quiet")) == 0


def test_the_course_index_on_small_data_is_image_0_and_said(small, tmp_path, capsys):
    """The course's own show_index (22876) on a small folder keeps the default run usable:
    image 0 is drawn, and the record and the console say so."""
    out = tmp_path / "run"
    assert main(run_data_stage(small, out)) == 0
    said = capsys.readouterr().out
    record = json.loads((out / "stages" / "data.json").read_text())["metrics"]
    assert record["shown_index"] == 0
    assert any("22876" in note and "image 0" in note for note in record["notes"])
    assert said.count("note: [data] show_index 22876") == 1  # said once, with the results
    # ... and kept where a reader looks later: run.log and the report's data section.
    assert "[data] note: show_index 22876" in (out / "run.log").read_text()
    report = (out / "report.html").read_text()
    section = report[report.index("<section id='data'>") :]
    assert "<b>Note:</b> show_index 22876" in section[: section.index("</section>")]


def test_a_chosen_gallery_digit_the_data_lack_is_refused(no_6_or_7, tmp_path, capsys):
    """data.gallery_digit=7 on data without 7s drew an empty figure titled "Three 7s" (the
    `data gallery` command refuses the same request): refused, naming the classes there."""
    out = tmp_path / "run"
    assert main(run_data_stage(no_6_or_7, out, "data.show_index=0", "data.gallery_digit=7")) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "gallery_digit 7" in line and "no '7'" in line and "0, 1, 2, 3, 4, 5, 8, 9" in line
    assert not (out / "stages" / "data.json").exists()
    assert not list(out.glob("**/data_*.png"))  # refused before anything was drawn
    # The command says which classes there are too.
    gallery = ["data", "gallery", "--digit", "7", "--data-dir", str(no_6_or_7)]
    assert main([*gallery, "--out", str(tmp_path / "g.png")]) == 1
    assert "holds no image of '7'; it holds 0, 1, 2, 3, 4, 5, 8, 9" in capsys.readouterr().err


def test_the_course_gallery_digit_the_data_lack_leaves_its_figure_out(no_6_or_7, tmp_path, capsys):
    """The course's own gallery_digit (6) on data without 6s: no empty "Three 6s" figure; the
    rest of the overview is drawn and the record (and console) says why that one is not."""
    out = tmp_path / "run"
    assert main(run_data_stage(no_6_or_7, out, "data.show_index=0")) == 0
    said = capsys.readouterr().out
    record = json.loads((out / "stages" / "data.json").read_text())["metrics"]
    assert "three" not in record["figures"]
    assert {p.name for p in (out / "figures").iterdir()} == {"data_digit.png", "data_gallery.png"}
    assert any("no '6'" in note and "left out" in note for note in record["notes"])
    assert "note: [data] gallery_digit 6" in said
    # Rerun unchanged: the stage is reused (the left-out figure is not taken for a lost one).
    assert main(run_data_stage(no_6_or_7, out, "data.show_index=0")) == 0
    assert "[data] unchanged since it finished: reused" in (out / "run.log").read_text()


def test_fewer_than_three_of_the_class_are_titled_as_many(tmp_path, monkeypatch):
    """Two 6s in the data: the figure is titled "Two 6s", not "Three 6s"."""
    titles = []
    drawn = plots.digits_grid

    def digits_grid(*args, **kwargs):
        titles.append(kwargs.get("suptitle"))
        return drawn(*args, **kwargs)

    monkeypatch.setattr(plots, "digits_grid", digits_grid)
    x, y = make_digits(200, 1)
    sixes = np.flatnonzero(y == 6)
    keep = np.ones(len(y), bool)
    keep[sixes[2:]] = False
    folder = write_fake_idx(tmp_path / "two6", n_train=10, n_test=50)
    write_idx(folder / "train-images-idx3-ubyte", x[keep])
    write_idx(folder / "train-labels-idx1-ubyte", y[keep])
    ds = load_dataset("mnist", folder)
    record = overview(ds, DataConfig(show_index=0), 0, tmp_path / "figs")
    assert record["notes"] == [] and "three" in record["figures"]
    assert (tmp_path / "figs" / "data_three.png").is_file()
    assert titles[0] == "Two 6s"
