import json
import re

import pytest
import torch

from conftest import write_fake_idx
from digitlab.cli import main
from digitlab.errors import ConfigError, DataError
from digitlab.pipeline import run_course
from digitlab.run_config import (
    STAGES,
    choose_stages,
    config_toml,
    load_config,
    validate_config,
)

TINY = [
    "knn.train_size=300",
    "sweep.train_size=300",
    "sweep.ks='1-3'",
    "cnn.train_size=300",
    "cnn.epochs=1",
    "cnn.threads=1",
    "cluster.train_size=300",
    "cluster.n_init=2",
]


def test_presets_and_overrides(tmp_path):
    assert load_config("course").knn.train_size == 20000
    assert load_config("full").cnn.train_size is None
    quick = load_config("quick", overrides=["knn.k=5", "cluster.embedding=pca", "device=cpu"])
    assert quick.knn.k == 5 and quick.cluster.embedding == "pca"
    assert {getattr(quick, s).device for s in ("knn", "sweep", "cnn", "cluster", "gan")} == {"cpu"}
    assert quick.knn.train_size == 5000
    toml = tmp_path / "c.toml"
    toml.write_text('device = "cpu"\n[knn]\nk = 7\nweights = "distance"\n')
    cfg = load_config("course", toml, ["knn.k=1"])
    assert cfg.knn.k == 1 and cfg.knn.weights == "distance"  # the command line wins
    assert "[knn]\nk = 1" in config_toml(cfg)
    assert load_config().cnn.ema == 0.95 and load_config(overrides=["cnn.ema=none"]).cnn.ema is None
    with pytest.raises(ConfigError, match=re.escape("[cnn] ema must be in (0, 1)")):
        validate_config(load_config(overrides=["cnn.ema=2"]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"preset": "huge"}, "unknown preset 'huge'; choose one of: quick, course, full"),
        ({"overrides": ["knn.kk=3"]}, "unknown setting 'knn.kk'; knn settings: k, train_size"),
        ({"overrides": ["gann.digit=3"]}, "unknown section 'gann'"),
        ({"overrides": ["knn.k=three"]}, "knn.k must be int"),
        ({"overrides": ["knn.k"]}, "is not key=value"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(**kwargs)


def test_stage_choice():
    assert choose_stages(None) == list(STAGES)
    assert choose_stages(["cnn", "knn"]) == ["knn", "cnn"]
    assert choose_stages(None, ["cnn"]) == ["data", "knn", "sweep", "cluster", "gan"]
    with pytest.raises(ConfigError, match="unknown stage 'gann'"):
        choose_stages(["gann"])
    # None left: refused (an empty choice once ran nothing and rewrote config and report)
    for only, skip in (([], []), (["knn"], ["knn"]), (None, list(STAGES))):
        with pytest.raises(ConfigError, match="no stage left to run"):
            choose_stages(only, skip)


def test_cli_empty_stage_choice_is_refused(tmp_path, capsys):
    from digitlab.cli import main

    for argv in (["--stages", ""], ["--stages", ","], ["--stages", "knn", "--skip", "knn"]):
        assert main(["run", *argv, "--out", str(tmp_path / "r")]) == 1
        assert "no stage left to run" in capsys.readouterr().err
        assert not (tmp_path / "r").exists()


def test_whole_course_reuse_and_report(tmp_path):
    from digitlab.gan import Generator
    from digitlab.loaders import save_generator

    data = write_fake_idx(tmp_path / "d", n_train=400, n_test=80)
    save_generator(Generator(), tmp_path / "gen", {"epochs": 0})
    cfg = load_config(
        "quick", overrides=[*TINY, f'data.data_dir="{data}"', f'gan.model="{tmp_path / "gen"}"']
    )
    out = tmp_path / "run"
    metrics = run_course(cfg, out, quiet=True)
    assert set(metrics["stages"]) == set(STAGES)
    for name in ("config.json", "config.toml", "metrics.json", "run.log", "report.html"):
        assert (out / name).is_file()
    assert (out / "models" / "cnn" / "model" / "model.safetensors").is_file()
    page = (out / "report.html").read_text()
    for stage in STAGES:
        assert f"id='{stage}'" in page
    assert "<img" in page and "data:image/png;base64," in page
    assert not re.search(r"(src|href)=[\"']https?://", page)  # self-contained
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {
        "knn_confusion_matrix.png",
        "knn_sweep.png",
        "cnn_training_curves.png",
        "cluster_pca_scatter.png",
        "data_three.png",
    } <= figures

    # Unchanged settings: every stage is reused; a changed k reruns only what depends on it.
    again = run_course(cfg, out, quiet=True)
    assert again["stages"]["cnn"]["accuracy"] == metrics["stages"]["cnn"]["accuracy"]
    assert (out / "run.log").read_text().count("reused") == len(STAGES)
    cfg.knn.k = 1
    run_course(cfg, out, quiet=True)
    log = (out / "run.log").read_text().splitlines()
    assert any("[knn] running" in line for line in log[-12:])
    assert not any("[cnn] running" in line for line in log[-12:])


def test_same_data_found_another_way_reuses_the_stages(tmp_path, monkeypatch):
    """The stage key held the data folder: the same files given by --data-dir and then found
    through $DIGITLAB_DATA (or copied elsewhere) counted as new settings and reran everything.
    What the data are is their digest; other files still rerun."""
    import shutil

    data = write_fake_idx(tmp_path / "d", n_train=400, n_test=80)
    out = tmp_path / "run"
    stages = ["data", "knn"]
    run_course(
        load_config("quick", overrides=[*TINY, f'data.data_dir="{data}"']),
        out,
        stages=stages,
        quiet=True,
    )
    monkeypatch.setenv("DIGITLAB_DATA", str(shutil.copytree(data, tmp_path / "copy")))
    run_course(load_config("quick", overrides=TINY), out, stages=stages, quiet=True)
    log = (out / "run.log").read_text().splitlines()
    assert sum("reused" in line for line in log[-8:]) == 2, log[-8:]
    other = write_fake_idx(tmp_path / "other", n_train=400, n_test=60)
    monkeypatch.setenv("DIGITLAB_DATA", str(other))
    run_course(load_config("quick", overrides=TINY), out, stages=stages, quiet=True)
    log = (out / "run.log").read_text().splitlines()
    assert any("[knn] running" in line for line in log[-12:])


@pytest.mark.parametrize("damage", ["{not json", "[]", '{"stages": [1, 2]}', ""])
def test_damaged_metrics_file_is_rebuilt_from_the_stage_records(tmp_path, damage):
    """A damaged metrics.json stopped every rerun (one line, but no way on). Its figures are
    all in the stage records: the rerun reuses them, logs the damage and writes it anew."""
    data = write_fake_idx(tmp_path / "d", n_train=400, n_test=80)
    cfg = load_config("quick", overrides=[*TINY, f'data.data_dir="{data}"'])
    out = tmp_path / "run"
    first = run_course(cfg, out, stages=["data", "knn"], quiet=True)
    (out / "metrics.json").write_text(damage)
    again = run_course(cfg, out, stages=["data", "knn"], quiet=True)
    assert again["stages"]["knn"] == first["stages"]["knn"]
    log = (out / "run.log").read_text().splitlines()
    assert sum("reused" in line for line in log[-8:]) == 2
    assert any("rebuilt from the stage records" in line for line in log[-8:])
    assert json.loads((out / "metrics.json").read_text())["stages"]["knn"] == first["stages"]["knn"]


def test_gan_stage_reruns_when_its_generator_changes(tmp_path):
    """A generator trained further in the same folder left the stage "unchanged": its old
    pictures and figures were reused."""
    from digitlab.gan import Generator
    from digitlab.loaders import save_generator

    data = write_fake_idx(tmp_path / "d", n_train=400, n_test=80)
    gen = tmp_path / "gen"
    save_generator(Generator(), gen, {"epochs": 0})
    cfg = load_config("quick", overrides=[*TINY, f'data.data_dir="{data}"', f'gan.model="{gen}"'])
    out = tmp_path / "run"
    run_course(cfg, out, stages=["gan"], quiet=True)
    run_course(cfg, out, stages=["gan"], quiet=True)
    assert "[gan] unchanged since it finished: reused" in (out / "run.log").read_text()
    torch.manual_seed(1)
    save_generator(Generator(), gen, {"epochs": 1})  # trained further, same folder
    run_course(cfg, out, stages=["gan"], quiet=True)
    last = (out / "run.log").read_text().split("digitlab run:")[-1]
    assert "[gan] running" in last and "reused" not in last


def test_incompatible_run_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"run_format": 99}))
    with pytest.raises(DataError, match="another digitlab version"):
        run_course(load_config("quick"), tmp_path)


def test_cli_run_print_config_and_errors(tmp_path, capsys):
    assert main(["run", "--preset", "quick", "--print-config", "knn.k=4"]) == 0
    assert "[knn]\nk = 4" in capsys.readouterr().out
    assert main(["run", "--stages", "nope", "--out", str(tmp_path)]) == 1
    assert "unknown stage 'nope'" in capsys.readouterr().err
    assert main(["run", "knn.train_size=-5", "--out", str(tmp_path)]) == 1
    assert "[knn] train_size must be" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 1
    assert "missing is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()
    assert main(["report", str(tmp_path)]) == 1
    assert "is not a digitlab run folder (no metrics.json)" in capsys.readouterr().err


def test_cli_run_quick_subset(tmp_path, capsys):
    data = write_fake_idx(tmp_path / "d", n_train=400, n_test=80)
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--preset",
                "quick",
                *TINY,
                "knn.compare_sklearn=true",
                "--stages",
                "data,knn",
                "--data-dir",
                str(data),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["stages"]) == {"data", "knn"}
    assert metrics["stages"]["knn"]["reference"]["identical_predictions"] is True
    assert "scikit-learn brute force" in (out / "report.html").read_text()
    assert main(["report", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out


def test_report_renders_in_chromium(tmp_path):
    import shutil
    import subprocess

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    data = write_fake_idx(tmp_path / "d", n_train=400, n_test=80)
    cfg = load_config("quick", overrides=[*TINY, f'data.data_dir="{data}"'])
    out = tmp_path / "run"
    run_course(cfg, out, stages=["data", "knn", "sweep"], quiet=True)
    for size in ("1280,2400", "390,2400"):
        shot = tmp_path / f"shot-{size.split(',')[0]}.png"
        proc = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / ('profile' + size[:3])}",
                f"--window-size={size}",
                f"--screenshot={shot}",
                (out / "report.html").as_uri(),
            ],
            capture_output=True,
            timeout=120,
        )
        assert proc.returncode == 0 and shot.stat().st_size > 20_000
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            f"--user-data-dir={tmp_path / 'pdom'}",
            "--dump-dom",
            (out / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "2. k-nearest neighbours" in dom.stdout and "3. Tuning k" in dom.stdout


def test_gan_stage_without_a_generator_is_skipped_not_fatal(tmp_path, monkeypatch):
    from digitlab import shipped

    monkeypatch.setattr(shipped, "GENERATOR", tmp_path / "none")
    data = write_fake_idx(tmp_path / "d", n_train=400, n_test=80)
    cfg = load_config("quick", overrides=[*TINY, f'data.data_dir="{data}"'])
    metrics = run_course(cfg, tmp_path / "run", stages=["data", "gan"], quiet=True)
    assert "skipped" in metrics["stages"]["gan"]
    assert "Skipped: no generator is shipped" in (tmp_path / "run" / "report.html").read_text()
    with pytest.raises(ConfigError, match=r"\[gan\] digit must be"):
        run_course(load_config("quick", overrides=["gan.digit=11"]), tmp_path / "run2")


def test_show_index_beyond_the_dataset_is_refused(tmp_path, capsys):
    """data.show_index past the training set is refused before any work (it once showed image
    0 silently); the default index on smaller local data still falls back to image 0."""
    from digitlab.cli import main

    for bad in ("60000", "-1", "99999999"):
        assert main(["run", f"data.show_index={bad}", "--out", str(tmp_path / "r")]) == 1
        assert "show_index must be a whole number in 0..59999" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_an_interrupted_cnn_resumes_from_its_last_epoch(tmp_path):
    """Stopped after its first epoch, the CNN continues from its checkpoint (kept under
    .staged/ until the run finishes, so the folder shows no half-trained model)."""
    data = write_fake_idx(tmp_path / "d", n_train=300, n_test=60)
    cfg = load_config(
        "quick", overrides=[*TINY, "cnn.epochs=3", "cnn.batch_size=64", f'data.data_dir="{data}"']
    )
    out = tmp_path / "run"

    def stop_after_first(stage, epoch, figures):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_course(cfg, out, stages=["cnn"], quiet=True, on_epoch=stop_after_first)
    assert not (out / "models" / "cnn").exists() and not (out / "metrics.json").exists()
    metrics = run_course(cfg, out, stages=["cnn"], quiet=True)
    cnn = metrics["stages"]["cnn"]
    assert cnn["training"]["resumed_from_epoch"] == 1 and len(cnn["history"]["loss"]) == 3
    assert "[cnn] continuing from its checkpoint" in (out / "run.log").read_text()
    assert (out / "models" / "cnn" / "model" / "model.safetensors").is_file()


def test_a_run_from_a_config_file_says_it_came_from_that_file(tmp_path, capsys):
    """`digitlab run --config <old run>/config.toml` without --preset was labelled "preset
    course" in its config.toml, config.json and report, though its settings came from the
    file (which names no preset). Each says where the settings came from, the same way."""
    data = write_fake_idx(tmp_path / "d", n_train=200, n_test=50)
    first, again = tmp_path / "first", tmp_path / "again"
    common = ["--stages", "data", "--quiet", "--out"]
    assert main(["run", "--data-dir", str(data), *common, str(first)]) == 0
    old = first / "config.toml"
    assert main(["run", "--config", str(old), *common, str(again)]) == 0
    said = f"settings from {old}"
    assert (again / "config.toml").read_text().startswith(f"# digitlab run configuration ({said})")
    config = json.loads((again / "config.json").read_text())
    assert config["preset"] is None and config["config_file"] == str(old)
    page = (again / "report.html").read_text()
    assert f"settings from <b>{old}</b>" in page and f"({said})</title>" in page
    assert "preset <b>course" not in page
    # The first run's own labels, a preset chosen as well, and a file that sets only some
    # settings (the rest are the preset's).
    assert json.loads((first / "config.json").read_text())["preset"] == "course"
    assert "A digitlab run, preset <b>course</b>" in (first / "report.html").read_text()
    assert load_config("quick", old).source() == f"preset quick, then {said}"
    part = tmp_path / "part.toml"
    part.write_text("[knn]\nk = 5\n")
    assert load_config(file=part).source() == f"preset course, then settings from {part}"
