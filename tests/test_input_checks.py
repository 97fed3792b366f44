"""Inputs from the Python API and the command line that once met numpy's, torch's or argparse's
own errors (or none): each is now ours, one line, naming what to change."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from digitlab.cli import main
from digitlab.errors import ConfigError, DataError


@pytest.fixture
def cnn_copy(tmp_path):
    """A copy of the shipped CNN's folder, to damage."""
    from digitlab.shipped import CNN

    folder = tmp_path / "cnn"
    shutil.copytree(CNN, folder)
    return folder


def _picture(tmp_path):
    from PIL import Image

    img = np.zeros((60, 60), np.uint8)
    img[10:50, 28:33] = 255  # a 1
    path = tmp_path / "one.png"
    Image.fromarray(255 - img).save(path)
    return path


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not an object"),
        ('{"classes": ["a", "b"]}', "names 2 classes but the network"),
        ('{"classes": "digits"}', "'classes' must be a non-empty list"),
        ('{"dataset": 5}', "'dataset' must be one of mnist"),
        ('{"dataset": "cifar"}', "'dataset' must be one of mnist"),
    ],
)
def test_damaged_model_metadata_is_one_line(cnn_copy, tmp_path, capsys, text, words):
    (cnn_copy / "metadata.json").write_text(text)
    code = main(["cnn", "predict", str(cnn_copy), str(_picture(tmp_path))])
    err = capsys.readouterr().err
    assert code == 1 and words in err and "metadata.json" in err
    assert len(err.strip().splitlines()) == 1


def test_model_without_metadata_reads_digits(cnn_copy, tmp_path, capsys):
    (cnn_copy / "metadata.json").unlink()
    code = main(["cnn", "predict", str(cnn_copy), str(_picture(tmp_path))])
    assert code == 0 and ": 1 (" in capsys.readouterr().out


def test_model_classes_names_a_network_with_other_outputs(cnn_copy):
    from digitlab.image_predict import model_classes

    (cnn_copy / "metadata.json").unlink()
    assert model_classes(cnn_copy, 10)[0] == tuple("0123456789")
    assert model_classes(cnn_copy, 3)[0] == ("0", "1", "2")
    (cnn_copy / "metadata.json").write_text(json.dumps({"classes": list("abc")}))
    assert model_classes(cnn_copy, 3)[0] == ("a", "b", "c")
    with pytest.raises(DataError, match="names 3 classes"):
        model_classes(cnn_copy, 10)


def test_load_cnn_refuses_an_unknown_device():
    from digitlab.loaders import load_cnn, load_gan_generator

    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        load_cnn(device="tpu")
    with pytest.raises(ConfigError, match="unknown device"):
        load_gan_generator(device="tpu")
    assert next(load_cnn(device="cpu").parameters()).device.type == "cpu"


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_predict_proba_refuses_a_batch_size_below_one(batch_size):
    from digitlab.cnn import predict_proba
    from digitlab.loaders import load_cnn

    with pytest.raises(ValueError, match="batch_size must be a whole number"):
        predict_proba(load_cnn(), np.zeros((3, 28, 28), np.uint8), batch_size=batch_size)


def test_predict_proba_batches_agree():
    from digitlab.cnn import predict_proba
    from digitlab.loaders import load_cnn

    x = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    model = load_cnn()
    np.testing.assert_allclose(
        predict_proba(model, x, batch_size=2), predict_proba(model, x), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("name", ["deskew", "centre_by_mass"])
@pytest.mark.parametrize(
    ("images", "words"),
    [
        (np.zeros(784), "non-empty stack of images"),
        (np.zeros((0, 28, 28)), "non-empty stack of images"),
        (np.full((2, 28, 28), np.nan, np.float32), "NaN or infinite"),
        (np.full((1, 28, 28), np.inf), "NaN or infinite"),
        (-np.ones((1, 28, 28)), "must not be negative"),
        (np.zeros((1, 28, 28), bool), "numeric pixel values"),
        (np.zeros((1, 28, 28), object), "numeric pixel values"),
    ],
)
def test_preprocessing_refuses_what_is_not_an_image_stack(name, images, words):
    from digitlab import preprocess

    with pytest.raises(ValueError, match=words):
        getattr(preprocess, name)(images)


def test_centre_by_mass_still_centres():
    from digitlab.preprocess import centre_by_mass

    img = np.zeros((1, 28, 28), np.uint8)
    img[0, 2:6, 2:6] = 200  # mass at (3.5, 3.5)
    out = centre_by_mass(img)
    ys, xs = np.nonzero(out[0])
    assert out.sum() == img.sum() and abs(ys.mean() - 14) <= 0.5 and abs(xs.mean() - 14) <= 0.5


@pytest.mark.parametrize("mirrors", [5, [5], [""], {"a": 1}])
def test_load_dataset_refuses_mirrors_that_are_not_urls(mirrors):
    from digitlab.data import load_dataset

    with pytest.raises(ConfigError, match="mirrors must be a list of base URLs"):
        load_dataset("mnist", mirrors=mirrors)


def test_load_dataset_takes_one_mirror_as_a_string(tmp_path):
    from digitlab.data import load_dataset

    # A dead mirror as a string is tried as one URL (not character by character).
    with pytest.raises(DataError, match="127.0.0.1:9"):
        load_dataset("mnist", home=tmp_path, mirrors="http://127.0.0.1:9/")


def test_raw_clustering_ignores_the_pca_components_default(fake_dir):
    from digitlab.cluster_experiment import ClusterConfig

    ClusterConfig(train_size=10).validate(200)  # raw pixels: pca_components (50) unused
    with pytest.raises(ConfigError, match="pca_components must be at most 10"):
        ClusterConfig(train_size=10, embedding="pca").validate(200)


def test_gallery_takes_all_as_its_help_says(fake_dir, tmp_path, capsys):
    out = tmp_path / "all.png"
    args = ["data", "gallery", "--data-dir", str(fake_dir), "--count", "2", "--out", str(out)]
    assert main([*args, "--digit", "all"]) == 0 and out.is_file()
    with pytest.raises(SystemExit) as exc:
        main([*args, "--digit", "seven"])
    assert exc.value.code == 2
    assert "a class number or all, got 'seven'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["knn", "--bogus"], ["knn", "--k", "x"], [], ["nosuch"], ["data", "gallery", "--digit"]],
)
def test_usage_errors_are_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "error:" in err and "--help" in err
    assert len(err.strip().splitlines()) == 1, err


def test_trials_csv_has_each_figure_once():
    from digitlab.sweep.outputs import trials_csv

    records = [
        {
            "name": "t0",
            "status": "done",
            "seed": 0,
            "settings": {"knn.k": 3},
            "objective": 0.9,
            "test": 0.8,
            "seconds": 1.0,
            "attempts": 1,
            "metrics": {"knn.val_accuracy": 0.9, "knn.accuracy": 0.8, "knn.f1_macro": 0.7},
        }
    ]
    head = trials_csv(records, ["knn.k"], "knn.val_accuracy", "knn.accuracy").splitlines()[0]
    columns = head.split(",")
    assert len(columns) == len(set(columns)) and "knn.f1_macro" in columns


def test_cnn_predict_without_a_model_folder_uses_the_shipped_cnn(tmp_path, capsys):
    picture = str(_picture(tmp_path))
    assert main(["cnn", "predict", picture]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{picture}: 1 (") and "shipped CNN" in captured.err
    from digitlab.shipped import CNN

    assert main(["cnn", "predict", str(CNN), picture]) == 0
    assert capsys.readouterr().out.startswith(f"{picture}: 1 (")
    assert main(["cnn", "predict", str(CNN)]) == 1
    assert "no pictures given after the model folder" in capsys.readouterr().err
    # A folder of pictures alone was called "the model folder" too.
    assert main(["cnn", "predict", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "is a folder, not a saved model" in err and "model folder" not in err, err
    assert f"digitlab cnn predict {tmp_path}/*.png" in err


def test_cnn_predict_takes_a_missing_folder_name_as_the_model(tmp_path, capsys):
    picture = str(_picture(tmp_path))
    out = tmp_path / "o"
    assert main(["cnn", "predict", str(tmp_path / "cnn-ot"), picture, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "cnn-ot does not exist: it is neither a saved model folder" in err
    assert not out.exists()
    # A missing picture first is a picture: one line, the others still read.
    assert main(["cnn", "predict", str(tmp_path / "gone.png"), picture]) == 1
    captured = capsys.readouterr()
    assert "gone.png" in captured.err and captured.out.startswith(f"{picture}: 1 (")


def test_report_names_another_commands_folder(tmp_path, fake_dir, capsys):
    out = tmp_path / "k"
    assert (
        main(
            [
                "knn",
                "--data-dir",
                str(fake_dir),
                "--train-size",
                "100",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["report", str(out)]) == 1
    err = capsys.readouterr().err
    assert "holds the output of `digitlab knn`, not a run" in err and "digitlab run --out" in err


def test_load_model_takes_a_training_folder(tmp_path, cnn_copy):
    from digitlab.loaders import load_model

    train = tmp_path / "train"
    train.mkdir()
    shutil.copytree(cnn_copy, train / "model")
    (train / "metrics.json").write_text("{}")
    assert load_model(train).cfg.n_classes == 10


@pytest.mark.parametrize(
    "setting, said",
    [
        ("knn.train_size=1e20", "knn.train_size must be a whole number or 'all' ("),
        ("cnn.train_size=half", "cnn.train_size must be a whole number or 'all' ("),
        ("knn.pca=x", "knn.pca must be a whole number or 'none' ("),
        ("cnn.threads=many", "cnn.threads must be a whole number or 'none' ("),
        ("cnn.ema=fast", "cnn.ema must be a number or 'none' ("),
    ],
)
def test_optional_settings_say_what_to_type(setting, said, capsys):
    """`knn.train_size=1e20` said "must be int or none": Python's words, and not the "all" that
    its help and every user spells; each optional setting names its own word."""
    assert main(["run", "--print-config", setting]) == 1
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1 and "int or none" not in err


def test_the_word_named_is_one_the_setting_takes(capsys):
    """The word a message offers is read back as the setting's 'unset'."""
    assert main(["run", "--print-config", "knn.train_size=all", "knn.pca=none"]) == 0
    out = capsys.readouterr().out
    assert 'train_size = "all"' in out and 'pca = "none"' in out


def test_every_unset_setting_reads_back_from_the_printed_config(tmp_path, capsys):
    """`cnn.ema=none` was printed as a comment, so rerunning with a run's config.toml took the
    preset's ema (0.95) again and trained afresh with other numbers. Every optional setting
    set to none reads back as none, and the whole config round-trips."""
    from dataclasses import fields

    from digitlab.run_config import STAGES, RunConfig, config_toml, load_config
    from digitlab.settings import settable_fields

    cfg = RunConfig()
    unset = []
    for stage in STAGES:
        section = getattr(cfg, stage)
        for name, hint in settable_fields(type(section)).items():
            if "None" in str(hint) and name != "preset":
                unset.append(f"{stage}.{name}=none")
    assert "cnn.ema=none" in unset and len(unset) >= 5
    for preset in ("course", "quick"):
        first = load_config(preset, overrides=unset)
        assert all(
            getattr(getattr(first, s.split(".")[0]), s.split(".")[1].split("=")[0]) is None
            for s in unset
        )
        path = tmp_path / f"{preset}.toml"
        path.write_text(config_toml(first), encoding="utf-8")
        again = load_config(preset, file=path)
        settings = [f.name for f in fields(again) if f.name != "config_file"]  # where from
        assert [getattr(again, n) for n in settings] == [getattr(first, n) for n in settings]
        assert again.config_file == str(path)


@pytest.mark.parametrize(
    "argv, said",
    [
        (["knn", "--test-size", "200"], "unknown option --test-size"),
        (["knn", "--k", "3", "--test-size", "200", "--out", "o"], "unknown option --test-size"),
        (["cnn", "--test-size", "200"], "unknown option --test-size"),
        (
            ["cnn", "--epochs", "3", "train"],
            "unknown option --epochs; it goes after the action: `digitlab cnn train` takes it",
        ),
        (["gan", "--digit", "3"], "unknown option --digit; it goes after the action"),
        (["data", "--count", "3", "gallery"], "`digitlab data gallery` takes it"),
        (["knn", "swep"], "invalid choice: 'swep'"),  # a wrong action alone says so
    ],
)
def test_an_unknown_option_before_the_action_is_named(argv, said, capsys):
    """`digitlab knn --test-size 200` said "invalid choice: '200' (choose from 'sweep')":
    argparse set the unknown option aside and took its value for the action's name."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and said in err and len(err.strip().splitlines()) == 1, err
    assert argv[1] == "swep" or "invalid choice" not in err


def test_another_commands_folder_is_not_taken_for_a_model(tmp_path, fake_dir, capsys):
    """A `knn` folder given to `cnn predict` as the model said "config.json is missing", and
    a `digitlab run` folder (its config.json holds settings) that model.safetensors was: the
    folder is named for what it is, and a run's CNN is pointed to."""
    from digitlab.cnn import CourseCNN
    from digitlab.loaders import save_model

    picture = str(_picture(tmp_path))
    knn, run = tmp_path / "k", tmp_path / "r"
    common = ["--data-dir", str(fake_dir), "--quiet", "--out"]
    assert main(["knn", "--train-size", "100", *common, str(knn)]) == 0
    assert main(["run", "--stages", "data", *common, str(run)]) == 0
    for argv in (["cnn", "predict", str(knn), picture], ["cnn", "eval", str(knn)]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"{knn} holds the output of `digitlab knn`, not a saved CNN" in err, err
        assert "missing" not in err
    assert main(["gan", "generate", "--model", str(knn)]) == 1
    assert "`digitlab knn`, not a saved GAN generator" in capsys.readouterr().err
    assert main(["cnn", "predict", str(run), picture]) == 1
    err = capsys.readouterr().err
    assert "holds the output of `digitlab run`, not a saved CNN" in err and "missing" not in err
    assert "its CNN is in" not in err  # this run trained none
    save_model(CourseCNN(), run / "models" / "cnn" / "model")  # as its cnn stage saves one
    assert main(["cnn", "predict", str(run), picture]) == 1
    assert f"its CNN is in {run / 'models' / 'cnn'}: pass that folder" in capsys.readouterr().err
    assert main(["cnn", "predict", str(run / "models" / "cnn"), picture]) == 0


def test_whole_numbers_stay_whole_in_number_settings(tmp_path, capsys):
    """`max_memory_mb = 512` in a config file was read as 512.0 and written back so in the
    run's config.toml and config.json; a whole number stays one however it is typed, and a
    fraction stays a fraction."""
    from digitlab.run_config import config_toml, load_config

    path = tmp_path / "c.toml"
    path.write_text("[knn]\nmax_memory_mb = 512\n[cnn]\nlr = 0.002\n", encoding="utf-8")
    cfg = load_config(file=path)
    assert type(cfg.knn.max_memory_mb) is int and cfg.knn.max_memory_mb == 512
    assert type(cfg.cnn.lr) is float and cfg.cnn.lr == 0.002
    text = config_toml(cfg)
    assert "\nmax_memory_mb = 512  #" in text and "512.0" not in text
    assert '"max_memory_mb": 512,' in json.dumps(cfg.as_dict())
    for typed, value in (("256.0", 256), ("1e3", 1000), ("0.5", 0.5)):
        got = load_config(overrides=[f"sweep.max_memory_mb={typed}"]).sweep.max_memory_mb
        assert got == value and type(got) is type(value)
    # argparse's float from --max-memory-mb goes through the same typing.
    from digitlab.cli.common import config
    from digitlab.knn_experiment import KNNConfig

    args = type("Args", (), {"max_memory_mb": 64.0, "k": 3})()
    assert type(config(KNNConfig, args).max_memory_mb) is int
    assert main(["run", "--print-config", "knn.max_memory_mb=64.0"]) == 0
    assert "\nmax_memory_mb = 64  #" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, said",
    [
        (["knn", "--train-size", "70000"], "--train-size must be in 1..60000 (or all), got 70000"),
        (["knn", "--k=0"], "--k must be a whole number >= 1, got 0"),
        (["cnn", "train", "--epochs", "0"], "--epochs must be a whole number >= 1, got 0"),
        (["cluster", "--n-clusters", "0"], "--n-clusters must be a whole number >= 1, got 0"),
        # Written as a setting, it is named as the setting.
        (
            ["run", "--preset", "quick", "--stages", "knn", "knn.train_size=70000"],
            "[knn] train_size must be in 1..60000 (or all), got 70000",
        ),
    ],
)
def test_a_range_error_names_what_the_user_typed(tmp_path, capsys, fake_dir, argv, said):
    """`--train-size 70000` was answered "train_size must be in 1..60000": the setting's
    name, not the flag the user typed and would look for in --help."""
    assert main([*argv, "--data-dir", str(fake_dir), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err == f"digitlab: error: {said}\n"
