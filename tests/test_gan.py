"""The conditional GAN's networks, sampling, interpolation, GIF, save/load and resume."""

import contextlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_digits
from digitlab.errors import ConfigError, DataError
from digitlab.gan import (
    Discriminator,
    Generator,
    generate,
    generate_grid,
    interpolate,
    one_hot,
)
from digitlab.gan_train import CHECKPOINT, GANTrainConfig, train_gan
from digitlab.loaders import load_generator, save_generator
from digitlab.plots import save_gif as write_gif
from digitlab.tasks.gan import write_epoch_samples


def test_parameter_counts_match_keras():
    assert sum(p.numel() for p in Generator().parameters()) == 1_491_215
    assert sum(p.numel() for p in Discriminator().parameters()) == 80_385


def test_shapes_and_range():
    g, d = Generator(), Discriminator()
    z, hot = torch.randn(5, 128), one_hot([0, 1, 2, 3, 4])
    images = g(z, hot)
    assert images.shape == (5, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    assert d(images, hot).shape == (5, 1)


def test_generate_is_seeded_and_validated():
    torch.manual_seed(0)
    g = Generator()
    a, b = generate(g, 3, 4, seed=1), generate(g, 3, 4, seed=1)
    assert a.dtype == np.uint8 and a.shape == (4, 28, 28)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, generate(g, 3, 4, seed=2))
    assert generate_grid(g, per_class=2).shape == (20, 28, 28)
    for digit in (-1, 10, 2.5, True):
        with pytest.raises(ConfigError, match="digit must be"):
            generate(g, digit)
    with pytest.raises(ConfigError, match="count must be"):
        generate(g, 3, -2)
    # Sampling leaves the network in the mode it was in (it once left a training one in eval).
    for mode in (True, False):
        g.train(mode)
        generate(g, 1), generate_grid(g, per_class=1), interpolate(g, 1, 2, steps=3)
        assert g.training is mode


def test_interpolation_holds_noise_and_blends_labels(tmp_path):
    torch.manual_seed(0)
    g = Generator()
    frames = interpolate(g, 2, 6, steps=9, seed=0)
    assert frames.shape == (9, 28, 28)
    np.testing.assert_array_equal(frames[0], generate(g, 2, 1, seed=0)[0])
    np.testing.assert_array_equal(frames[-1], generate(g, 6, 1, seed=0)[0])
    gif = write_gif(frames, tmp_path / "morph.gif", size=84, fps=5)
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.size == (84, 84) and im.n_frames == 16  # there and back
    with pytest.raises(ConfigError, match="steps must be"):
        interpolate(g, 2, 6, steps=1)
    with pytest.raises(ConfigError, match="fps must be"):
        write_gif(frames, tmp_path / "x.gif", fps=0)


def test_save_load_round_trip_and_mismatch(tmp_path):
    torch.manual_seed(0)
    g = Generator()
    save_generator(g, tmp_path / "g", {"epochs": 0})
    np.testing.assert_array_equal(generate(load_generator(tmp_path / "g"), 7, 3), generate(g, 7, 3))
    (tmp_path / "g" / "config.json").write_text(
        '{"model": "conditional_gan_generator", "latent_dim": 64}'
    )
    with pytest.raises(DataError, match="does not match"):
        load_generator(tmp_path / "g")
    with pytest.raises(DataError, match="nothing does not exist: give the folder"):
        load_generator(tmp_path / "nothing")


def test_training_resumes_exactly(tmp_path):
    x, y = make_digits(160, seed=2)
    cfg = GANTrainConfig(epochs=2, batch_size=16, threads=1, checkpoint_every=3)
    # Sample grids are the caller's (the task layer's): handed over through on_epoch.
    draw = write_epoch_samples(tmp_path / "a")
    full, h_full, info = train_gan(
        x, y, cfg, tmp_path / "a", progress=False, on_epoch=lambda e, g, h: draw(e, g)
    )
    assert info["steps"] == 20 and len(h_full.d_loss) == 2
    assert (tmp_path / "a" / "samples" / "epoch_002.png").is_file()
    # Stop mid-epoch (step 7), then resume to the end: the same weights as one run.
    stopped = GANTrainConfig(epochs=2, batch_size=16, threads=1, checkpoint_every=3, max_steps=7)
    train_gan(x, y, stopped, tmp_path / "b", progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        train_gan(x, y, cfg, tmp_path / "b", progress=False)
    resumed, _, info = train_gan(x, y, cfg, tmp_path / "b", resume=True, progress=False)
    assert info["steps"] == 20
    for a, b in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert (tmp_path / "b" / CHECKPOINT).is_file()


def _interrupt_at_step(at, x, y, cfg, out, monkeypatch) -> None:
    """Train into `out` as Ctrl-C would stop it: KeyboardInterrupt as step `at` begins."""
    from digitlab import gan_train

    run_step = gan_train.run_step

    def interrupted(nets, real, hot, step):
        if step == at:
            raise KeyboardInterrupt
        return run_step(nets, real, hot, step)

    monkeypatch.setattr(gan_train, "run_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_gan(x, y, cfg, out, progress=False)
    monkeypatch.setattr(gan_train, "run_step", run_step)


def test_an_interrupt_mid_epoch_resumes_from_the_last_checkpoint_exactly(tmp_path, monkeypatch):
    """Interrupted after a checkpoint inside an epoch (as Ctrl-C does): the checkpoint says
    the step its weights are at (it once said the epoch's first step, so a resume ran those
    steps twice), and resuming gives the weights of a run never stopped, bit for bit."""
    from digitlab.checkpoint import load_state

    x, y = make_digits(160, seed=2)
    cfg = GANTrainConfig(epochs=1, batch_size=16, threads=1, checkpoint_every=3)  # 10 steps
    full, _, _ = train_gan(x, y, cfg, tmp_path / "a", progress=False)
    _interrupt_at_step(7, x, y, cfg, tmp_path / "b", monkeypatch)
    assert load_state(tmp_path / "b" / CHECKPOINT)["step"] == 6
    resumed, _, info = train_gan(x, y, cfg, tmp_path / "b", resume=True, progress=False)
    assert info["steps"] == 10
    for a, b in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_an_epoch_resumed_midway_logs_the_means_of_all_its_steps(tmp_path, monkeypatch):
    """The checkpoint keeps the unfinished epoch's loss totals: a run interrupted at step 7
    and resumed logs epoch 1's mean losses over its 10 steps, as a run never stopped does
    (it once logged the mean of the 4 steps after the resume)."""
    x, y = make_digits(160, seed=2)
    cfg = GANTrainConfig(epochs=2, batch_size=16, threads=1, checkpoint_every=3)  # 10 a epoch
    _, h_full, _ = train_gan(x, y, cfg, tmp_path / "a", progress=False)
    _interrupt_at_step(7, x, y, cfg, tmp_path / "b", monkeypatch)
    _, h_resumed, _ = train_gan(x, y, cfg, tmp_path / "b", resume=True, progress=False)
    assert len(h_resumed.d_loss) == len(h_full.d_loss) == 2
    np.testing.assert_allclose(h_resumed.d_loss, h_full.d_loss, rtol=1e-5)
    np.testing.assert_allclose(h_resumed.g_loss, h_full.g_loss, rtol=1e-5)
    # Epoch 1's rate counts its 10 steps over the seconds of both runs' parts.
    assert all(s > 0 for s in h_resumed.steps_per_second)


def test_both_training_steps_learn(tmp_path):
    """keras.io's step (a second generator pass) and ours (one generated batch) both update
    both networks; the second step would fail if the discriminator were left frozen."""
    from digitlab.checkpoint import load_state, restore

    x, y = make_digits(64, seed=3)
    for reuse in (True, False):
        cfg = GANTrainConfig(epochs=1, batch_size=16, threads=1, reuse_fakes=reuse, max_steps=2)
        g, _, info = train_gan(x, y, cfg, tmp_path / str(reuse), progress=False)
        assert info["steps"] == 2
        torch.manual_seed(cfg.seed)  # the initial networks, as train_gan builds them
        g0, d0 = Generator(), Discriminator()
        d = Discriminator()
        restore(load_state(tmp_path / str(reuse) / CHECKPOINT), {"g": Generator(), "d": d}, {})
        for trained, initial in ((g, g0), (d, d0)):
            changed = [
                not torch.equal(a, b)
                for a, b in zip(trained.parameters(), initial.parameters(), strict=True)
            ]
            assert all(changed)


def test_quality_metrics_on_a_known_case():
    from digitlab.cnn import CourseCNN
    from digitlab.gan_quality import evaluate_generator, frechet_distance

    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 5))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(a, a + 3) == pytest.approx(45, rel=1e-6)  # 5 dims x 3^2
    torch.manual_seed(0)
    x, _ = make_digits(200)
    r = evaluate_generator(Generator(), CourseCNN(), x, per_digit=20)
    assert 0 <= r["conditional_accuracy"] <= 1 and len(r["per_digit"]) == 10
    assert r["frechet"] > 0 and r["frechet_real_vs_real"] >= 0 and r["n_generated"] == 200
    confusion = np.array(r["confusion"])
    assert confusion.shape == (10, 10) and (confusion.sum(1) == 20).all()
    per_digit = np.diag(confusion) / 20
    np.testing.assert_allclose(per_digit, [r["per_digit"][str(d)] for d in range(10)])
    assert np.trace(confusion) / 200 == pytest.approx(r["conditional_accuracy"])


def test_frechet_distance_equals_the_matrix_square_root_formula():
    """The eigenvalue form against the formula as written, with scipy's `sqrtm` of C_a C_b (the
    slow, obvious code it replaced), and against the eigenvalues of C_a C_b from a general
    eigensolver where the covariances are singular (dead features, fewer samples than
    features), where `sqrtm` is unreliable."""
    from scipy import linalg

    from digitlab.gan_quality import frechet_distance

    def by_sqrtm(a, b):
        ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        gap = ((a.mean(0) - b.mean(0)) ** 2).sum()
        return gap + np.trace(ca + cb - 2 * linalg.sqrtm(ca @ cb).real)

    def by_eigvals(a, b):
        ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        roots = np.sqrt(np.clip(linalg.eigvals(ca @ cb).real, 0, None)).sum()
        return ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb) - 2 * roots

    rng = np.random.default_rng(1)
    for n, d in ((500, 8), (3000, 120)):
        a = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
        b = np.maximum(rng.standard_normal((n, d)) + 0.3, 0) * rng.uniform(0.5, 2, d)
        assert frechet_distance(a, b) == pytest.approx(by_sqrtm(a, b), rel=1e-9)
        assert frechet_distance(b, a) == pytest.approx(by_sqrtm(a, b), rel=1e-9)
    a = np.maximum(rng.standard_normal((60, 200)), 0)
    b = np.maximum(rng.standard_normal((60, 200)) + 0.2, 0)
    a[:, :30] = 0  # dead features; 60 samples for 200 features: both covariances singular
    expected = by_eigvals(a, b)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    # A set against itself: 0, up to the rounding in the roots of the zero eigenvalues.
    assert frechet_distance(a, b) > 0 and frechet_distance(a, a) == pytest.approx(0, abs=1e-4)


def test_cli_gan_train_generate_interpolate_evaluate(tmp_path, capsys):
    from conftest import write_fake_idx
    from digitlab.cli import main
    from digitlab.cnn import CourseCNN
    from digitlab.loaders import save_model

    data = write_fake_idx(tmp_path / "d", n_train=120, n_test=40)
    out = tmp_path / "gan"
    assert (
        main(
            [
                "gan",
                "train",
                "--max-steps",
                "6",
                "--threads",
                "1",
                "--data-dir",
                str(data),
                "--out",
                str(out),
                "--quiet",
                "--keep-best",
            ]
        )
        == 0
    )
    assert (out / "generator" / "generator.safetensors").is_file()
    meta = json.loads((out / "generator" / "metadata.json").read_text())
    assert meta["threads"] == 1  # the count the steps ran on (--threads 1)
    logged = meta["quality_per_epoch"]  # 160 digits, batch 64: an epoch is 2 steps
    assert [q["epoch"] for q in logged] == [1, 2, 3]
    assert all(0 <= q["conditional_accuracy"] <= 1 for q in logged)
    best = json.loads((out / "generator-best" / "metadata.json").read_text())
    first_best = max(logged, key=lambda q: q["conditional_accuracy"])  # ties: the earliest
    assert best["epochs"] == first_best["epoch"]
    assert best["quality"]["conditional_accuracy"] == first_best["conditional_accuracy"]
    assert (
        main(
            [
                "gan",
                "generate",
                "--model",
                str(out),
                "--digit",
                "3",
                "--count",
                "4",
                "--out",
                str(tmp_path / "g.png"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "gan",
                "generate",
                "--model",
                str(out),
                "--count",
                "2",
                "--out",
                str(tmp_path / "grid.png"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "gan",
                "interpolate",
                "2",
                "6",
                "--model",
                str(out),
                "--steps",
                "5",
                "--out",
                str(tmp_path / "m.gif"),
            ]
        )
        == 0
    )
    assert (tmp_path / "m.gif").is_file() and (tmp_path / "m.png").is_file()
    save_model(CourseCNN(), tmp_path / "cnn")
    assert (
        main(
            [
                "gan",
                "evaluate",
                "--model",
                str(out),
                "--classifier",
                str(tmp_path / "cnn"),
                "--per-digit",
                "5",
                "--data-dir",
                str(data),
                "--json",
                str(tmp_path / "quality.json"),
            ]
        )
        == 0
    )
    quality = json.loads((tmp_path / "quality.json").read_text())
    assert quality["n_generated"] == 50 and set(quality["per_digit"]) == set("0123456789")
    said = capsys.readouterr().out
    assert "conditional accuracy" in said and "note: Fréchet distances from 50 images" in said
    assert main(["gan", "generate", "--model", str(out), "--digit", "12"]) == 1
    assert "digit must be" in capsys.readouterr().err
    assert main(["gan", "generate", "--model", str(tmp_path / "nothing")]) == 1
    capsys.readouterr()
    # Output names checked before any work: no traceback, nothing written or overwritten.
    for argv, said in (
        (["generate", "--digit", "3", "--out", str(tmp_path / "g.txt")], "image format"),
        (["generate", "--digit", "3", "--out", str(tmp_path / "g")], "image format"),
        (["interpolate", "2", "6", "--out", str(tmp_path / "m2.png")], "must end in .gif"),
        (["generate", "--digit", "3", "--seed", "-1"], "seed must be a whole number >= 0"),
    ):
        with pytest.raises(SystemExit) if "--seed" in argv else contextlib.nullcontext():
            assert main(["gan", *argv, "--model", str(out)]) == 1
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err
    assert not list(tmp_path.glob("g.txt")) and not (tmp_path / "m2.png").exists()


def test_sigterm_stops_training_with_a_valid_checkpoint(tmp_path):
    """`kill` (SIGTERM) stops `digitlab gan train` like Ctrl-C, with exit 143 (128 + 15, as a
    shell says a process SIGTERM stopped; it was 130, Ctrl-C's), and --resume works."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import write_fake_idx
    from digitlab.checkpoint import load_state

    data = write_fake_idx(tmp_path / "d", n_train=100, n_test=28)  # 2 steps per epoch
    out = tmp_path / "gan"
    cmd = [sys.executable, "-m", "digitlab", "gan", "train", "--threads", "1"]
    cmd += ["--data-dir", str(data), "--out", str(out), "--quiet", "--epochs", "100000"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / CHECKPOINT).is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (out / CHECKPOINT).is_file(), "no checkpoint after 120 s"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143 and "interrupted" in err
    step = load_state(out / CHECKPOINT)["step"]
    assert step >= 2 and not list(out.glob(".*.part"))
    resumed = subprocess.run(
        [*cmd[:-1], str(step // 2 + 1), "--resume"], capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    assert load_state(out / CHECKPOINT)["step"] == (step // 2 + 1) * 2


def test_shipped_generator_draws_the_digits_it_is_asked_for():
    """The generator in the package loads, and the shipped CNN reads its digits as the digit
    asked for, as often as the metadata (and the README) says: centred by mass as `generate`
    returns them, and raw (a guard against shipping broken or mismatched weights)."""
    from digitlab import shipped
    from digitlab.cnn import predict_proba
    from digitlab.loaders import load_model

    g = load_generator(shipped.GENERATOR)
    quality = json.loads((shipped.GENERATOR / "metadata.json").read_text())["quality"]
    cnn = load_model(shipped.CNN)
    wanted = np.repeat(np.arange(10), 60)
    for centre, recorded, floor in (
        (True, quality["conditional_accuracy"], 0.96),  # 0.977 measured on 5,000 digits
        (False, quality["raw"]["conditional_accuracy"], 0.90),  # 0.939
    ):
        images = np.concatenate(
            [generate(g, d, 60, seed=100 + d, centre=centre) for d in range(10)]
        )
        accuracy = float(np.mean(predict_proba(cnn, images).argmax(1) == wanted))
        assert accuracy >= floor and abs(accuracy - recorded) < 0.03


def test_cnn_and_gan_folders_are_told_apart(tmp_path, capsys):
    """The other training command's folder: as a model, the error names what it is (it once
    said to resume a run that did not exist); as an output folder, training is refused and
    leaves its files as they were (the two runs' files once mixed in one folder)."""
    from conftest import write_fake_idx
    from digitlab.cli import main

    data = str(write_fake_idx(tmp_path / "d", n_train=400, n_test=60))
    cnn, gan = tmp_path / "cnn", tmp_path / "gan"
    cnn_train = ["cnn", "train", "--data-dir", data, "--train-size", "300", "--epochs", "1"]
    gan_train = ["gan", "train", "--data-dir", data, "--max-steps", "2"]
    assert main([*cnn_train, "--threads", "1", "--quiet", "--out", str(cnn)]) == 0
    assert main([*gan_train, "--threads", "1", "--quiet", "--out", str(gan)]) == 0
    capsys.readouterr()
    assert main(["gan", "generate", "--model", str(cnn), "--out", str(tmp_path / "g.png")]) == 1
    err = capsys.readouterr().err
    assert "is a CNN training folder" in err and "unfinished" not in err
    assert main(["cnn", "eval", str(gan), "--data-dir", data]) == 1
    err = capsys.readouterr().err
    assert "is a GAN generator training folder" in err and "unfinished" not in err
    # A saved model's own folder given for the other kind names what it holds (it once said
    # only that the other kind's weights file was missing).
    assert (
        main(["gan", "generate", "--model", str(cnn / "model"), "--out", str(tmp_path / "g.png")])
        == 1
    )
    err = capsys.readouterr().err
    assert "holds a saved course_cnn model, not a conditional_gan_generator" in err
    assert main(["cnn", "eval", str(gan / "generator"), "--data-dir", data]) == 1
    err = capsys.readouterr().err
    assert "holds a saved conditional_gan_generator model, not a course_cnn" in err
    for other, argv, what in ((cnn, gan_train, "cnn"), (gan, cnn_train, "gan")):
        before = sorted(str(p.relative_to(other)) for p in other.rglob("*"))
        for resume in ([], ["--resume"]):
            assert main([*argv, "--threads", "1", "--out", str(other), *resume]) == 1
            captured = capsys.readouterr()
            assert f"holds the output of `digitlab {what} train`" in captured.err
            assert "starting a new run" not in captured.out
        assert sorted(str(p.relative_to(other)) for p in other.rglob("*")) == before
    # A saved model's own folder is no training folder either.
    for saved, argv in ((cnn / "model", gan_train), (gan / "generator", cnn_train)):
        before = sorted(p.name for p in saved.iterdir())
        assert main([*argv, "--threads", "1", "--out", str(saved)]) == 1
        assert "holds a saved model" in capsys.readouterr().err
        assert sorted(p.name for p in saved.iterdir()) == before


@pytest.mark.parametrize(
    "edit, said",
    [
        ({"leak": "NaN"}, "leak must be"),
        ({"latent_dim": -3}, "latent_dim must be"),
        ({"d_channels": [64]}, "d_channels must be"),
        ({"image_size": 30}, "image_size must be"),
    ],
)
def test_an_edited_generator_config_is_refused(tmp_path, edit, said):
    """Settings no generator of this design can have, in a saved generator's config.json:
    one DataError naming them (a NaN slope was once taken, a negative size surfaced as a
    tensor size mismatch)."""
    save_generator(Generator(), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    raw = json.dumps({**config, **edit}).replace('"NaN"', "NaN")
    (tmp_path / "config.json").write_text(raw)
    with pytest.raises(DataError, match=said):
        load_generator(tmp_path)


def test_interpolate_checks_both_places_and_keeps_a_png_it_did_not_write(tmp_path, capsys):
    """`--out mine.gif` overwrote the user's mine.png in silence; a folder named dirpng.png
    failed only after dirpng.gif was written. A strip it wrote itself is replaced."""
    from digitlab.cli import main

    argv = ["gan", "interpolate", "2", "6", "--steps", "3", "--out"]
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"the user's own picture")
    assert main([*argv, str(tmp_path / "mine.gif")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"digitlab: error: {mine} is already there, and digitlab did not write it as the "
        f"frames of {tmp_path / 'mine.gif'}: it is kept; move it away or name another file "
        "with --out"
    )
    assert mine.read_bytes() == b"the user's own picture"
    assert not (tmp_path / "mine.gif").exists()
    (tmp_path / "dirpng.png").mkdir()
    assert main([*argv, str(tmp_path / "dirpng.gif")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("digitlab: error: cannot write the frames of") and "folder" in err
    assert not (tmp_path / "dirpng.gif").exists()
    # Its own strip is replaced by a rerun, and the line says which file holds the frames.
    ok = tmp_path / "ok.gif"
    for _ in range(2):
        assert main([*argv, str(ok)]) == 0
        said = capsys.readouterr().out.strip()
        assert said == f"wrote {ok} and its frames {ok.with_suffix('.png')}"
    from digitlab.plots import mark_of

    assert mark_of(ok.with_suffix(".png")) == "frames of ok.gif"
    assert mark_of(ok) is None and mark_of(mine) is None


def test_default_names_replace_only_what_digitlab_wrote(tmp_path, monkeypatch, capsys):
    """A name the user did not give (`gan generate`'s generated-3.png, `gan interpolate`'s
    morph-2-6.gif and its frames) replaced a file of the user's of that name in silence."""
    from digitlab.cli import main

    monkeypatch.chdir(tmp_path)
    generate = ["gan", "generate", "--digit", "3", "--count", "2"]
    morph = ["gan", "interpolate", "2", "6", "--steps", "3"]
    for argv in (generate, morph):  # written, then replaced by the same command
        assert main(argv) == 0 and main(argv) == 0
    capsys.readouterr()
    for name, argv in (
        ("generated-3.png", generate),
        ("morph-2-6.png", morph),
        ("morph-2-6.gif", morph),
    ):
        (tmp_path / name).write_bytes(b"mine")
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("digitlab: error: ") and err.count("\n") == 0
        assert name in err and "--out" in err
        assert (tmp_path / name).read_bytes() == b"mine"
        for written in tmp_path.glob(name.split(".")[0] + ".*"):
            written.unlink()  # the user's file moved away (a GIF alone is not told ours)
        assert main(argv) == 0
        capsys.readouterr()
