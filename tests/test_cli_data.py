import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT, TEST_COUNTS, TRAIN_COUNTS
from digitlab.cli import main


@pytest.mark.real_data
def test_info_prints_shapes_and_counts(mnist_dir, capsys):
    assert main(["data", "info", "--data-dir", str(mnist_dir)]) == 0
    out = capsys.readouterr().out
    assert "(60000, 28, 28) uint8" in out and "(10000,) uint8" in out and "0..255" in out
    assert " ".join(f"{n:7d}" for n in TRAIN_COUNTS) in out
    assert " ".join(f"{n:7d}" for n in TEST_COUNTS) in out


def test_info_json(fake_dir, capsys):
    assert main(["data", "info", "--data-dir", str(fake_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["train"]["class_counts"] == [20] * 10 and info["test"]["images_shape"] == [
        50,
        28,
        28,
    ]


def test_show_and_gallery_write_pngs(fake_dir, tmp_path, capsys):
    out = tmp_path / "one.png"
    assert (
        main(["data", "show", "--index", "7", "--data-dir", str(fake_dir), "--out", str(out)]) == 0
    )
    assert Image.open(out).size[0] > 100
    out = tmp_path / "six.png"
    assert (
        main(
            [
                "data",
                "gallery",
                "--digit",
                "6",
                "--count",
                "3",
                "--data-dir",
                str(fake_dir),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert Image.open(out).format == "PNG"
    assert capsys.readouterr().out.count("wrote") == 1
    out = tmp_path / "all.png"
    assert (
        main(["data", "gallery", "--count", "2", "--data-dir", str(fake_dir), "--out", str(out)])
        == 0
    )
    assert out.is_file()


def test_default_output_name(fake_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        main(["data", "gallery", "--digit", "6", "--count", "3", "--data-dir", str(fake_dir)]) == 0
    )
    assert (tmp_path / "mnist-6-gallery.png").is_file()


@pytest.mark.parametrize(
    "argv, name",
    [
        (["show", "--index", "7"], "mnist-train-7.png"),
        (["gallery", "--digit", "3", "--count", "2"], "mnist-3-gallery.png"),
        (["gallery", "--count", "1"], "mnist-gallery.png"),
    ],
)
def test_a_default_name_never_replaces_the_users_file(
    fake_dir, tmp_path, monkeypatch, capsys, argv, name
):
    """`data show`/`data gallery` once wrote over the user's own file of their default name
    (an essay, a photo) and said "wrote": now refused in one line, the file kept; a picture
    the command itself wrote there is replaced on a rerun, and a name the user gives is
    written as asked."""
    monkeypatch.chdir(tmp_path)
    command = ["data", *argv, "--data-dir", str(fake_dir)]
    mine = tmp_path / name
    photo = io.BytesIO()
    Image.new("L", (40, 30), 200).save(photo, "PNG")  # the user's own picture, a PNG too
    for content in (b"my essay", photo.getvalue()):
        mine.write_bytes(content)
        assert main(command) == 1
        err = capsys.readouterr().err
        assert "is already there, and digitlab did not write it" in err and "Traceback" not in err
        assert mine.read_bytes() == content
    mine.unlink()
    assert main(command) == 0 and Image.open(mine).size[0] > 40
    first = mine.read_bytes()
    assert main(command) == 0 and mine.read_bytes() == first  # its own picture: replaced
    mine.write_bytes(b"my essay")
    assert main([*command, "--out", name]) == 0  # named by the user: written as asked
    assert mine.read_bytes() == first


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data", "info", "--dataset", "cifar"], "unknown dataset 'cifar'"),
        (["data", "info", "--data-dir", "/nonexistent/dir"], "does not exist"),
        (["data", "show", "--index", "999"], "--index must be in 0..199"),
        (["data", "gallery", "--digit", "11"], "--digit must be in 0..9"),
        (["data", "gallery", "--count", "0"], "--count must be at least 1"),
    ],
)
def test_errors_are_one_line(fake_dir, capsys, argv, message):
    if "--data-dir" not in argv:
        argv = [*argv, "--data-dir", str(fake_dir)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.startswith("digitlab: error:") and err.count("\n") == 1
    assert "Traceback" not in err


def test_unknown_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["data", "info", "--colour"])
    assert info.value.code == 2
    assert "unrecognized arguments: --colour" in capsys.readouterr().err


def test_every_command_has_help(capsys):
    for argv in (
        ["--help"],
        ["data", "--help"],
        ["data", "info", "--help"],
        ["data", "show", "--help"],
        ["data", "gallery", "--help"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
    assert "--data-dir" in capsys.readouterr().out


def test_console_script_runs(fake_dir):
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "digitlab",
            "data",
            "info",
            "--data-dir",
            str(fake_dir / "missing"),
        ],
        capture_output=True,
        text=True,
    )
    assert (
        proc.returncode == 1 and "Traceback" not in proc.stderr and "does not exist" in proc.stderr
    )


@pytest.mark.parametrize(
    "argv",
    [["run"], ["knn"], ["cluster"], ["sweep"], ["data", "gallery"], ["gan", "generate"]],
)
def test_empty_out_is_refused(argv, capsys):
    """`--out ""` (an unset shell variable) was the current folder, and a run wrote there."""
    with pytest.raises(SystemExit) as info:
        main([*argv, "--out", ""])
    assert info.value.code == 2
    assert "--out: an empty path names no place to write" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "info", "--data-dir", ""],
        ["data", "show", "--index", "0", "--data-dir", " "],
        ["data", "gallery", "--data-dir", ""],
        ["knn", "--data-dir", ""],
        ["knn", "sweep", "--data-dir", ""],
        ["cluster", "--data-dir", ""],
        ["cnn", "train", "--data-dir", ""],
        ["cnn", "eval", "somewhere", "--data-dir", ""],
        ["cnn", "eval", ""],
        ["gan", "train", "--data-dir", ""],
    ],
)
def test_an_empty_data_dir_is_refused(argv, capsys):
    """`--data-dir ""` (an unset shell variable) searched the current folder and blamed it."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "an empty path names no folder; give a path" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv, said",
    [
        (["cnn", "predict", ""], "argument MODEL_DIR|IMAGE: an empty path names no model folder"),
        (["cnn", "predict", "model", ""], "argument IMAGE: an empty path names no picture"),
        (["cnn", "predict", "a.png", "", "b.png"], "an empty path names no picture"),
    ],
)
def test_cnn_predict_refuses_an_empty_path(argv, said, capsys):
    """`cnn predict ""` took "." as the model folder ("no pictures given after ... .")."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert said in err and "give a path" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv, command",
    [
        (["data", "show", "--index", "3"], "data show"),
        (["data", "gallery", "--digit", "1", "--count", "1"], "data gallery"),
        (["gan", "generate", "--digit", "1"], "gan generate"),
    ],
)
def test_a_file_command_into_a_run_folder_says_it_writes_a_file(
    argv, command, fake_dir, tmp_path, capsys
):
    """`data show --out q4/x.png` into a run folder said the command "writes its own folder"."""
    from digitlab.folders import claim

    run = tmp_path / "q4"
    with claim(run, "run"):
        (run / "config.json").write_text('{"run_format": 1}')
    before = sorted(run.iterdir())
    data = ["--data-dir", str(fake_dir)] if argv[0] == "data" else []
    assert main([*argv, *data, "--out", str(run / "x.png")]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"digitlab: error: {run} holds the output of `digitlab run`; `digitlab {command}` "
        "writes a single file, and none into another command's output: choose a path "
        "outside it\n"
    )
    assert sorted(run.iterdir()) == before


# --- cnn predict: what the first path is, and what --out holds --------------------------------

_PICTURE = ROOT / "tests" / "fixtures" / "images" / "thin_2.png"


@pytest.mark.parametrize("first", ["photo 1", "nonexist", "brokenlink", "broken.png"])
def test_a_first_path_that_is_no_folder_is_a_picture(first, tmp_path, monkeypatch, capsys):
    """A missing first path alone, a missing one with a suffix and a broken link were taken
    as the model folder and nothing was read; only an existing folder is a model. A missing
    first path with no suffix before other pictures is refused in words that name both
    readings: the shipped CNN must not answer for a mistyped model folder."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(_PICTURE, "9_font.png")
    for link in ("brokenlink", "broken.png"):
        Path(link).symlink_to(tmp_path / "no" / "such" / "thing")
    assert main(["cnn", "predict", first, "9_font.png"]) == 1
    captured = capsys.readouterr()
    if first in ("photo 1", "nonexist"):
        assert captured.out == ""
        assert captured.err == (
            f"digitlab: error: {first} does not exist: it is neither a saved model folder "
            "(`cnn train --out`) nor a picture; give a model folder first, or the pictures "
            "alone\n"
        )
    else:
        assert captured.out.startswith("9_font.png: 2 (")
        assert f"{first}: cannot read the file (No such file or directory)" in captured.err
        assert "model" not in captured.err.replace("give a `cnn train` folder first", "")
    assert main(["cnn", "predict", first]) == 1  # alone: a picture too, not "no pictures after"
    err = capsys.readouterr().err
    assert f"{first}: cannot read the file" in err and "no pictures given" not in err


def _record(folder: Path) -> list[dict]:
    with open(folder / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_predict_out_holds_one_invocation_and_its_record(tmp_path, monkeypatch, capsys):
    """A second `cnn predict --out p2` left the first's 28x28s beside its own, with no record
    of which picture gave which file."""
    monkeypatch.chdir(tmp_path)
    for folder in ("a", "b", "img"):
        Path(folder).mkdir()
    for name in ("a/x.png", "b/x.png", "img/9_font.png"):
        shutil.copy(_PICTURE, name)
    assert main(["cnn", "predict", "a/x.png", "b/x.png", "a/x.tiff", "--out", "p2"]) == 1
    capsys.readouterr()
    p2 = Path("p2")
    assert sorted(p.name for p in p2.iterdir() if not p.name.startswith(".")) == [
        "predictions.csv",
        "x-2_28x28.png",
        "x_28x28.png",
    ]
    rows = _record(p2)
    assert [(r["input"], r["seen"], r["class"]) for r in rows] == [
        ("a/x.png", "x_28x28.png", "2"),
        ("b/x.png", "x-2_28x28.png", "2"),
        ("a/x.tiff", "", ""),
    ]
    assert 0.5 < float(rows[0]["probability"]) <= 1 and rows[0]["error"] == ""
    assert rows[2]["error"] == "a/x.tiff: cannot read the file (No such file or directory)"
    # The next invocation replaces all of it together.
    assert main(["cnn", "predict", "img/9_font.png", "--out", "p2"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in p2.iterdir()) == [
        ".digitlab-folder.json",
        "9_font_28x28.png",
        "predictions.csv",
    ]
    assert [(r["input"], r["seen"]) for r in _record(p2)] == [
        ("img/9_font.png", "9_font_28x28.png")
    ]


def test_predict_out_is_left_whole_when_an_invocation_is_interrupted(tmp_path, monkeypatch, capsys):
    """Stopped half way, the folder keeps the last finished invocation's files, none of the
    new one's."""
    from digitlab.image_predict import ImageAnswer

    out = tmp_path / "p"
    shutil.copy(_PICTURE, tmp_path / "one.png")
    assert main(["cnn", "predict", str(tmp_path / "one.png"), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted(self, k=3):  # Ctrl-C as the answer is printed, its 28x28 already made
        raise KeyboardInterrupt

    shutil.copy(_PICTURE, tmp_path / "two.png")
    with monkeypatch.context() as m:
        m.setattr(ImageAnswer, "line", interrupted)
        assert main(["cnn", "predict", str(tmp_path / "two.png"), "--out", str(out)]) != 0
    capsys.readouterr()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".digitlab.lock"} == before


def test_file_names_are_printed_on_one_line(fake_dir, tmp_path, monkeypatch, capsys):
    """A picture named with a newline split `cnn predict`'s answer over two lines (the second
    read as an answer of its own); predictions.csv quoted it. Every name the CLI prints is
    one line, quoted with escapes where it holds such a character; the record keeps it."""
    monkeypatch.chdir(tmp_path)
    two_lines, gone = "a\nb.png", "gone\n.png"
    shutil.copy(_PICTURE, two_lines)
    shutil.copy(_PICTURE, "plain.png")
    assert main(["cnn", "predict", two_lines, gone, "plain.png", "--out", "p"]) == 1
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert len(out) == 2 and out[0].startswith("'a\\nb.png': 2 (") and out[1].startswith("plain")
    errors = [line for line in captured.err.splitlines() if "shipped CNN" not in line]
    assert errors == ["'gone\\n.png': cannot read the file (No such file or directory)"]
    assert [r["input"] for r in _record(Path("p"))] == [two_lines, gone, "plain.png"]
    # Other commands' printed paths, and an error line naming one.
    assert (
        main(["data", "show", "--index", "0", "--data-dir", str(fake_dir), "--out", "x\ty.png"])
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("wrote 'x\\ty.png' (train image 0")
    assert main(["report", "no\nrun"]) == 1
    assert capsys.readouterr().err.count("\n") == 1
