"""Faults a demanding user meets (issue 16): unwritable outputs, busy and half-failed run
folders, checkpoints of other data or further than asked, stale temporary files, the dataset
named everywhere, epoch lines as they finish."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, write_fake_idx
from digitlab.cli import main
from digitlab.errors import ConfigError
from digitlab.files import (
    LOCK_NAME,
    FolderBusy,
    atomic_write_text,
    folder_lock,
    remove_stale_parts,
)
from digitlab.report import speed_words

CNN_TINY = ["--train-size", "200", "--batch-size", "32", "--threads", "1", "--quiet"]
RUN_TINY = [
    "--preset",
    "quick",
    "knn.train_size=200",
    "sweep.train_size=200",
    "sweep.ks='1-3'",
    "cluster.train_size=200",
    "cluster.n_init=2",
    "cnn.train_size=200",
    "cnn.batch_size=32",
    "cnn.threads=1",
    "--quiet",
]


def _commands(out: Path, data: Path, model: Path, image: Path) -> list[list[str]]:
    """Every command that writes, each sent to `out` (a place that cannot be written)."""
    d = ["--data-dir", str(data)]
    return [
        ["run", "--stages", "data,knn", *d, "--out", str(out)],
        ["knn", *d, "--train-size", "100", "--out", str(out)],
        ["knn", "sweep", *d, "--train-size", "100", "--out", str(out)],
        ["cnn", "train", *d, "--train-size", "100", "--epochs", "1", "--out", str(out)],
        ["cnn", "eval", str(model), *d, "--out", str(out)],
        ["cnn", "predict", str(model), str(image), "--out", str(out)],
        ["cluster", *d, "--train-size", "100", "--out", str(out)],
        ["data", "show", *d, "--index", "0", "--out", str(out / "one.png")],
        ["data", "gallery", *d, "--out", str(out / "g.png")],
        ["gan", "generate", "--out", str(out / "g.png")],
        ["gan", "interpolate", "3", "8", "--out", str(out / "m.gif")],
        ["gan", "train", *d, "--epochs", "1", "--out", str(out)],
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny CNN trained for 2 epochs on fake MNIST-format digits, and a picture."""
    from PIL import Image

    base = tmp_path_factory.mktemp("trained")
    data = write_fake_idx(base / "d", n_train=300, n_test=60)
    out = base / "cnn"
    args = ["cnn", "train", "--data-dir", str(data), "--epochs", "2", "--out", str(out)]
    assert main([*args, *CNN_TINY]) == 0
    image = base / "seven.png"
    Image.new("L", (28, 28), 255).save(image)
    return data, out, image


def test_proc_output_places_fail_at_once_with_one_line(trained, capsys):
    # Even root cannot create anything under /proc: every writing command says so, naming
    # the path, before it loads data or computes (the data folder here does not exist at all).
    data, model, image = trained
    missing_data = data.parent / "no-such-data"
    out = Path("/proc/digitlab-out")
    for argv in _commands(out, missing_data, model, image):
        if argv[:2] == ["cnn", "eval"] or argv[:2] == ["cnn", "predict"]:
            argv = [a if a != str(missing_data) else str(data) for a in argv]
        start = time.perf_counter()
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err, (argv, err)
        assert "/proc/digitlab-out" in err and "cannot write" in err, (argv, err)
        assert time.perf_counter() - start < 20, argv  # nothing was computed first
    assert main(["report", "/proc/self"]) == 1  # not a run folder: one line too
    assert "Traceback" not in capsys.readouterr().err
    # Settings are checked before the output place is made: a bad one leaves no empty folder.
    bad = (["knn", "--k", "0"], ["cnn", "train", "--epochs", "0"], ["cluster", "--n-clusters", "0"])
    for argv in bad:
        target = data.parent / f"never-{argv[0]}"
        assert main([*argv, "--data-dir", str(data), "--out", str(target)]) == 1
        assert not target.exists(), argv
    capsys.readouterr()


def _run_without_dac_override(argv: list[str], env: dict) -> subprocess.CompletedProcess:
    """`digitlab ARGV` as root without the capability that lets root ignore mode bits."""
    code = "import sys; from digitlab.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [
        "setpriv",
        "--bounding-set=-dac_override,-dac_read_search",
        "--inh-caps=-all",
        "--",
        sys.executable,
        "-c",
        code,
        *argv,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _can_drop_capabilities() -> bool:
    if os.geteuid() != 0:
        return True  # not root: mode bits already apply
    try:
        probe = subprocess.run(
            ["setpriv", "--bounding-set=-dac_override", "--", "true"], capture_output=True
        )
    except FileNotFoundError:
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not _can_drop_capabilities(), reason="cannot drop CAP_DAC_OVERRIDE here")
def test_read_only_folder_gives_one_line_naming_it(trained, tmp_path):
    data, model, image = trained
    ro = tmp_path / "read-only"
    ro.mkdir()
    run_dir = ro / "old-run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text('{"stages": {}}')
    (run_dir / "config.json").write_text('{"run_format": 1}')
    ro.chmod(0o555)
    run_dir.chmod(0o555)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    try:
        # A sample of the kinds (each start of Python costs seconds on this box): a folder
        # command, a file command, a command that computes for long, and the report.
        for argv in (
            ["knn", "--data-dir", str(data), "--train-size", "100", "--out", str(ro / "knn")],
            ["data", "gallery", "--data-dir", str(data), "--out", str(ro / "g.png")],
            ["cnn", "predict", str(model), str(image), "--out", str(ro)],
            ["report", str(run_dir)],
        ):
            done = _run_without_dac_override(argv, env)
            err = done.stderr.strip()
            assert done.returncode == 1, (argv, done.stdout, err)
            assert "Traceback" not in err and err.count("\n") == 0, err
            assert str(ro) in err and "Permission denied" in err, err
    finally:
        run_dir.chmod(0o755)
        ro.chmod(0o755)
    assert not (ro / "knn").exists() and not (ro / "g.png").exists()


def test_folder_lock_names_the_holder_and_takes_over_a_dead_ones(tmp_path, capsys):
    data = write_fake_idx(tmp_path / "d", n_train=300, n_test=60)
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(["sleep", "60"])
    try:
        lock = {"pid": holder.pid, "host": socket.gethostname(), "started": "2026-01-01T00:00Z"}
        (out / LOCK_NAME).write_text(json.dumps(lock))
        argv = ["run", *RUN_TINY, "--stages", "data", "--data-dir", str(data), "--out", str(out)]
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert f"in use by process {holder.pid} on {socket.gethostname()}" in err
        assert err.count("\n") == 0
        assert not (out / "metrics.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # The holder is dead now: its lock is stale and taken over; the run works and lets go.
    assert main(argv) == 0
    assert (out / "metrics.json").is_file() and not (out / LOCK_NAME).exists()

    # The same lock guards `cnn train` folders; and one process cannot take it twice.
    with folder_lock(tmp_path / "cnn"):
        busy = pytest.raises(FolderBusy, match=f"process {os.getpid()}")
        with busy, folder_lock(tmp_path / "cnn"):
            pass
        cnn = ["cnn", "train", "--data-dir", str(data), "--epochs", "1", "--out"]
        assert main([*cnn, str(tmp_path / "cnn"), *CNN_TINY]) == 1
        assert f"in use by process {os.getpid()}" in capsys.readouterr().err
    assert not (tmp_path / "cnn" / LOCK_NAME).exists()

    # Another machine's lock: held while refreshed, taken over once 10 minutes stale.
    lock = tmp_path / "far" / LOCK_NAME
    lock.parent.mkdir()
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "then"}))
    with pytest.raises(FolderBusy, match="process 1 on elsewhere"), folder_lock(lock.parent):
        pass
    os.utime(lock, (time.time() - 700, time.time() - 700))
    with folder_lock(lock.parent):
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_failed_rerun_keeps_config_with_its_results_and_logs_it(tmp_path, capsys):
    data = write_fake_idx(tmp_path / "d", n_train=300, n_test=60)
    out = tmp_path / "run"
    base = ["run", *RUN_TINY, "--stages", "data,knn", "--out", str(out)]
    assert main([*base, "knn.k=3", "--data-dir", str(data)]) == 0
    before = {n: (out / n).read_text() for n in ("config.json", "config.toml", "metrics.json")}
    report = (out / "report.html").read_text()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train-images-idx3-ubyte").write_bytes(b"not an IDX file")
    assert main([*base, "knn.k=5", "--data-dir", str(broken)]) == 1
    assert "Traceback" not in capsys.readouterr().err
    after = {n: (out / n).read_text() for n in before}
    assert after == before and (out / "report.html").read_text() == report
    assert json.loads(after["config.json"])["knn"]["k"] == 3
    assert "failed:" in (out / "run.log").read_text().splitlines()[-1]


def test_resume_refuses_other_data_and_fewer_epochs(trained, tmp_path, capsys):
    data, model, _ = trained
    fashion = write_fake_idx(tmp_path / "fashion", n_train=300, n_test=60)
    resume = ["cnn", "train", "--resume", "--out", str(model), *CNN_TINY]
    # The same files under another dataset's name: refused, naming both.
    as_fashion = ["--dataset", "fashion-mnist", "--data-dir", str(fashion)]
    assert main([*resume, "--epochs", "3", *as_fashion]) == 1
    err = capsys.readouterr().err
    assert "trained on mnist, not fashion-mnist" in err and "Traceback" not in err
    # Other MNIST files (other pixels): refused too.
    other = write_fake_idx(tmp_path / "other", n_train=310, n_test=60)
    assert main([*resume, "--epochs", "3", "--data-dir", str(other)]) == 1
    assert "trained on other mnist files" in capsys.readouterr().err
    # Fewer epochs than the checkpoint has: refused, the model keeps its 2-epoch label.
    assert main([*resume, "--epochs", "1", "--data-dir", str(data)]) == 1
    assert "already at 2 epochs, more than the 1 asked for" in capsys.readouterr().err
    meta = json.loads((model / "model" / "metadata.json").read_text())
    assert meta["train_config"]["epochs"] == 2 and len(meta["history"]["loss"]) == 2


def test_run_retrains_when_asked_for_fewer_epochs(tmp_path):
    data = write_fake_idx(tmp_path / "d", n_train=300, n_test=60)
    out = tmp_path / "run"
    base = ["run", *RUN_TINY, "--stages", "cnn", "--data-dir", str(data), "--out", str(out)]
    assert main([*base, "cnn.epochs=2"]) == 0
    assert main([*base, "cnn.epochs=1"]) == 0
    cnn = json.loads((out / "metrics.json").read_text())["stages"]["cnn"]
    assert cnn["train_config"]["epochs"] == 1 and len(cnn["history"]["loss"]) == 1
    assert "training afresh" in (out / "run.log").read_text()


def test_stale_part_files_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    target = tmp_path / "metrics.json"
    stale = tmp_path / f".metrics.json.{dead.pid}.abc123.part"
    live = tmp_path / f".metrics.json.{os.getpid()}.def456.part"
    old = tmp_path / ".metrics.json.k2j4h5g6.part"  # an older version's name: no pid
    young = tmp_path / ".metrics.json.q9w8e7r6.part"
    other = tmp_path / f".other.json.{dead.pid}.abc123.part"  # another file's: not ours to clean
    for p in (stale, live, old, young, other):
        p.write_text("half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    atomic_write_text(target, "{}")
    assert target.read_text() == "{}"
    assert not stale.exists() and not old.exists()
    assert live.exists() and young.exists() and other.exists()
    assert remove_stale_parts(tmp_path / "other.json") == [other]


def test_report_and_gan_stage_follow_the_dataset(tmp_path):
    data = write_fake_idx(tmp_path / "d", n_train=300, n_test=60)
    out = tmp_path / "run"
    argv = ["run", *RUN_TINY, "--stages", "data,gan", "--dataset", "fashion-mnist"]
    assert main([*argv, "--data-dir", str(data), "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "<title>digitlab report: Fashion-MNIST course" in page
    assert "Machine learning on Fashion-MNIST" in page and "Zalando" in page
    assert "MNIST course" not in page.replace("Fashion-MNIST course", "")
    assert "handwritten digits" not in page
    gan = json.loads((out / "metrics.json").read_text())["stages"]["gan"]
    assert "trained on mnist, not on this run's fashion-mnist" in gan["skipped"]
    assert "Skipped: the shipped generator was trained on mnist" in page


def test_cnn_eval_uses_the_models_dataset(tmp_path, capsys):
    data = write_fake_idx(tmp_path / "d", n_train=300, n_test=60)
    model = tmp_path / "cnn"
    train = ["cnn", "train", "--dataset", "kmnist", "--data-dir", str(data), "--epochs", "1"]
    assert main([*train, "--out", str(model), *CNN_TINY]) == 0
    assert main(["cnn", "eval", str(model), "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "tsu" in out and "accuracy" in out  # Kuzushiji-MNIST's class names: its dataset
    assert main(["cnn", "eval", str(model), "--dataset", "mnist", "--data-dir", str(data)]) == 1
    err = capsys.readouterr().err
    assert "trained on kmnist, not mnist" in err and err.count("\n") == 1


def test_cnn_train_prints_each_epoch_as_it_finishes(trained, tmp_path):
    data = trained[0]
    argv = ["cnn", "train", "--data-dir", str(data), "--epochs", "200", "--out", str(tmp_path)]
    code = "import sys; from digitlab.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    # stdout is a pipe (block-buffered unless flushed): two epoch lines must arrive while it
    # trains; then it is killed as an impatient user would, long before epoch 200.
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *argv, *CNN_TINY[:-1]],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    epochs = []
    try:
        for line in proc.stdout:
            if line.split()[:1] and line.split()[0].isdigit():
                epochs.append(line)
                if len(epochs) == 2:
                    break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert [int(line.split()[0]) for line in epochs] == [1, 2]


@pytest.mark.parametrize(
    "ours, theirs, words",
    [(1.0, 10.0, "10.0x slower"), (10.0, 1.0, "10.0x faster"), (2.0, 2.02, "as fast")],
)
def test_reference_speed_words(ours, theirs, words):
    assert speed_words(ours, theirs) == words


def test_damaged_json_in_a_run_folder_is_one_line_or_a_rerun(tmp_path, capsys):
    """Hand-edited or damaged JSON files: a stage's record only means the stage runs again;
    metrics.json, a report's inputs or a model's config that is no JSON object gives one
    line naming the file (a list or binary bytes once raised a traceback)."""
    data = write_fake_idx(tmp_path / "d", n_train=300, n_test=60)
    out = tmp_path / "run"
    base = ["run", *RUN_TINY, "--stages", "data,knn", "--data-dir", str(data), "--out", str(out)]
    assert main(base) == 0
    accuracy = json.loads((out / "stages" / "knn.json").read_text())["metrics"]["accuracy"]
    for damage in ("[1, 2]", "{not json", '{"key": "x"}'):
        (out / "stages" / "knn.json").write_text(damage)
        assert main(base) == 0
        last = (out / "run.log").read_text().split("digitlab run:")[-1]  # this run's lines
        assert "[knn] running" in last and "[knn] unchanged" not in last
        assert (
            json.loads((out / "stages" / "knn.json").read_text())["metrics"]["accuracy"] == accuracy
        )
    capsys.readouterr()
    for name in ("metrics.json", "config.json"):
        kept = (out / name).read_bytes()
        for damage in (b"[1, 2]", b"\xff\xfe garbage"):
            (out / name).write_bytes(damage)
            assert main(["report", str(out)]) == 1
            err = capsys.readouterr().err
            assert "Traceback" not in err and len(err.strip().splitlines()) == 1
            assert name in err and "rebuilds them" in err
        (out / name).write_bytes(kept)
    # A rerun rebuilds a damaged metrics.json from the stage records (it once stopped there).
    (out / "metrics.json").write_bytes(b"\xff\xfe garbage")
    assert main(base) == 0
    assert json.loads((out / "metrics.json").read_text())["stages"]["knn"]["accuracy"] == accuracy


def test_a_folder_holds_one_commands_output(tmp_path, capsys):
    """Each writing command claims its --out: another command's folder is refused before any
    work and left as it was (knn once replaced a run folder's metrics.json, and its report
    then lost every figure), the same command may write it again, and a folder in use is
    refused naming its holder (knn and cluster once wrote into a run's folder mid-run)."""
    data = str(write_fake_idx(tmp_path / "d", n_train=300, n_test=60))
    d = ["--data-dir", data, "--quiet"]
    run, knn, cnn = tmp_path / "run", tmp_path / "knn", tmp_path / "cnn"
    assert (
        main(["run", *RUN_TINY, "--stages", "data,knn", "--data-dir", data, "--out", str(run)]) == 0
    )
    assert main(["knn", *d, "--train-size", "100", "--out", str(knn)]) == 0
    assert main(["cnn", "train", *d, *CNN_TINY, "--epochs", "1", "--out", str(cnn)]) == 0
    capsys.readouterr()
    refused = [
        (["knn", *d, "--train-size", "100"], run, "run"),
        (["cluster", *d, "--train-size", "100"], run, "run"),
        (["cnn", "train", *d, *CNN_TINY, "--epochs", "1"], run, "run"),
        (["gan", "train", *d, "--max-steps", "1"], run, "run"),
        (["knn", "sweep", *d, "--train-size", "100"], knn, "knn"),
        (["cluster", *d, "--train-size", "100"], knn, "knn"),
        (["run", *RUN_TINY, "--stages", "data", "--data-dir", data], cnn, "cnn train"),
        (["knn", *d, "--train-size", "100"], cnn, "cnn train"),
        (["cnn", "eval", str(cnn), *d], cnn, "cnn train"),
        (["knn", *d, "--train-size", "100"], cnn / "model", None),
    ]
    for argv, folder, holder in refused:
        before = {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        assert main([*argv, "--out", str(folder)]) == 1, argv
        err = capsys.readouterr().err
        said = f"holds the output of `digitlab {holder}`" if holder else "holds a saved model"
        assert said in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} == before
    assert main(["knn", *d, "--train-size", "120", "--out", str(knn)]) == 0  # its own: again
    assert json.loads((knn / "metrics.json").read_text())["n_train"] == 120
    with folder_lock(knn, "--out"):  # another process's work in progress
        assert main(["knn", *d, "--train-size", "100", "--out", str(knn)]) == 1
        assert "is in use by process" in capsys.readouterr().err


def test_stages_not_run_keep_only_results_of_these_settings(tmp_path):
    """`run --stages knn --seed 1` in a folder of a seed-0 run: the data stage, made with
    seed 0, leaves the results (it once stayed beside seed 1's config); run again with seed 0
    it is reused from its record."""
    data = str(write_fake_idx(tmp_path / "d", n_train=300, n_test=60))
    out = tmp_path / "run"
    base = ["run", *RUN_TINY, "--data-dir", data, "--out", str(out)]
    assert main([*base, "--stages", "data,knn"]) == 0
    assert main([*base, "--stages", "knn", "--seed", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["stages"]) == {"knn"}
    assert "[data] left out of these results" in (out / "run.log").read_text()
    assert main([*base, "--stages", "knn"]) == 0  # seed 0 again: its data stage is back
    assert set(json.loads((out / "metrics.json").read_text())["stages"]) == {"knn", "data"}


def test_data_without_a_class_draws_its_figures(tmp_path, capsys):
    """Training data with no 9s (and only 3 of digit 8): the data stage and `data gallery`
    draw blank places where a class has too few (numpy's sampling error once stopped them);
    for data with every class the picks are those of one seeded choice per class, as before."""
    from conftest import make_digits
    from digitlab.idx import write_idx
    from digitlab.tasks.data import rows_per_class

    x, y = make_digits(400, 1)
    keep = (y != 9) & ((y != 8) | (np.cumsum(y == 8) <= 3))
    folder = tmp_path / "no9"
    write_fake_idx(folder, n_train=10, n_test=60)
    write_idx(folder / "train-images-idx3-ubyte", x[keep])
    write_idx(folder / "train-labels-idx1-ubyte", y[keep])
    out = tmp_path / "run"
    argv = ["run", *RUN_TINY, "--stages", "data", "--data-dir", str(folder), "--out", str(out)]
    assert main(argv) == 0
    gallery = ["data", "gallery", "--data-dir", str(folder), "--count", "5", "--quiet"]
    assert main([*gallery, "--out", str(tmp_path / "g.png")]) == 0
    assert main([*gallery, "--digit", "9", "--out", str(tmp_path / "g9.png")]) == 1
    assert "holds no image of '9'" in capsys.readouterr().err
    images, idx = rows_per_class(x[keep], y[keep], 10, 5, seed=0)
    rows = idx.reshape(10, 5)
    assert (rows[9] == -1).all() and (rows[8, :3] >= 0).all() and (rows[8, 3:] == -1).all()
    assert not images[idx == -1].any()
    rng = np.random.default_rng(0)  # complete data: one seeded choice per class, in order
    expected = [rng.choice(np.flatnonzero(y == c), 5, replace=False) for c in range(10)]
    np.testing.assert_array_equal(rows_per_class(x, y, 10, 5, 0)[1], np.concatenate(expected))


def test_a_run_checks_its_generator_before_any_stage(tmp_path, capsys):
    """gan.model naming no generator (missing, or a CNN's folder) is one line before any work:
    no folder is made (it once came after every other stage had run)."""
    data = str(write_fake_idx(tmp_path / "d", n_train=300, n_test=60))
    cnn = tmp_path / "cnn"
    assert (
        main(["cnn", "train", "--data-dir", data, *CNN_TINY, "--epochs", "1", "--out", str(cnn)])
        == 0
    )
    capsys.readouterr()
    for model in (tmp_path / "nowhere", cnn):
        out = tmp_path / f"run-{model.name}"
        argv = ["run", *RUN_TINY, "--data-dir", data, f"gan.model='{model}'", "--out", str(out)]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not out.exists()


def test_a_folder_inside_another_commands_output_is_refused(tmp_path, capsys):
    """A run's figures/, stages/ or models/cnn/ as another command's --out is refused before
    work (knn once replaced a run's confusion matrix, and `report` showed it beside the run's
    own figures); inside a sweep's folder only the sweep's own trials run."""
    from digitlab.folders import MARKER, refuse_others, working_for

    data = str(write_fake_idx(tmp_path / "d", n_train=300, n_test=60))
    run = tmp_path / "run"
    argv = ["run", *RUN_TINY, "--stages", "data,knn", "--data-dir", data, "--out", str(run)]
    assert main(argv) == 0
    capsys.readouterr()
    for inside, argv in (
        (run / "figures", ["knn", "--data-dir", data, "--train-size", "100"]),
        (run / "stages", ["cluster", "--data-dir", data, "--train-size", "100"]),
        (run / "models" / "cnn", ["cnn", "train", "--data-dir", data, *CNN_TINY, "--resume"]),
    ):
        before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
        assert main([*argv, "--out", str(inside)]) == 1
        err = capsys.readouterr().err
        assert f"lies inside {run}, which holds the output of `digitlab run`" in err
        assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / MARKER).write_text('{"command": "sweep"}')
    with working_for("sweep"):
        refuse_others(sweep / "trials" / "t0", "run")  # the sweep's own trial
    with pytest.raises(Exception, match="only its own trials run there"):
        refuse_others(sweep / "trials" / "t0", "run")  # a plain run there
    with pytest.raises(Exception, match="lies inside"):
        refuse_others(sweep / "trials" / "t0", "knn")


def test_a_folder_holding_other_files_is_refused_and_claims_nothing(tmp_path, capsys):
    """`--out .` in a working folder (or `--out /`) wrote our files among the user's and
    recorded the folder as the command's, and every later command's folder anywhere below it
    was then refused ("lies inside /"). A folder of other files is refused before any work;
    a new, empty or own folder is taken; files a command writes may go anywhere."""
    data = str(write_fake_idx(tmp_path / "d", n_train=300, n_test=60))
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    (work / "pictures").mkdir()
    knn = ["knn", "--data-dir", data, "--train-size", "100", "--quiet"]
    for argv in (knn, ["cluster", "--data-dir", data, "--train-size", "100", "--quiet"]):
        assert main([*argv, "--out", str(work)]) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert f"{work} already holds 2 other file(s) ('notes.txt', 'pictures')" in err
        assert sorted(p.name for p in work.iterdir()) == ["notes.txt", "pictures"]
    assert main([*knn, "--out", str(work / "pictures" / "knn")]) == 0  # below it: free
    assert main([*knn, "--out", str(work / "pictures" / "knn")]) == 0  # its own: again
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*knn, "--out", str(empty)]) == 0
    picture = work / "g.png"  # a file a command writes: into the user's folder
    assert main(["gan", "generate", "--digit", "3", "--count", "2", "--out", str(picture)]) == 0
    assert picture.is_file()


def test_a_stale_lock_is_taken_over_once(tmp_path):
    """Two processes judging one dead holder's lock stale: the second one's removal deleted the
    fresh lock the first had just taken, and both held the folder. Removal now happens only
    while the lock still holds the record judged stale."""
    from digitlab.files import _take_over

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = {"pid": dead.pid, "host": socket.gethostname(), "started": "then"}
    lock = tmp_path / LOCK_NAME
    lock.write_text(json.dumps(stale))
    with folder_lock(tmp_path):  # the first process takes it over and holds it
        mine = json.loads(lock.read_text())
        assert mine["pid"] == os.getpid()
        _take_over(lock, stale)  # the second process acts on what it read before
        assert lock.is_file() and json.loads(lock.read_text()) == mine
        with pytest.raises(FolderBusy, match=f"process {os.getpid()}"), folder_lock(tmp_path):
            pass
    assert not lock.exists() and not (tmp_path / (LOCK_NAME + ".takeover")).exists()
    # A guard left behind by a crash is cleared after a minute.
    lock.write_text(json.dumps(stale))
    guard = tmp_path / (LOCK_NAME + ".takeover")
    guard.touch()
    os.utime(guard, (time.time() - 120, time.time() - 120))
    with folder_lock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_report_of_hand_edited_figures_is_one_line_and_embeds_only_its_files(tmp_path, capsys):
    """Hand-edited metrics.json ({"cnn": null}, a string accuracy) gave tracebacks from the
    report; a figure that is a link to /etc/passwd was embedded in it."""
    data = write_fake_idx(tmp_path / "d", n_train=300, n_test=60)
    out = tmp_path / "run"
    base = ["run", *RUN_TINY, "--stages", "data,knn", "--data-dir", str(data), "--out", str(out)]
    assert main(base) == 0
    figure = next((out / "figures").glob("knn_*.png"))
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"root:x:0:0:not a picture")
    figure.unlink()
    figure.symlink_to(secret)
    assert main(["report", str(out)]) == 0
    assert "cm9vdDp4" not in (out / "report.html").read_text()  # base64 of "root:x"
    assert f"missing or damaged ({figure.name})" in capsys.readouterr().err  # and said
    kept = (out / "metrics.json").read_text()
    good = json.loads(kept)
    for damage in ({"knn": None}, {"knn": {**good["stages"]["knn"], "accuracy": "x"}}, {"knn": {}}):
        (out / "metrics.json").write_text(json.dumps({**good, "stages": damage}))
        assert main(["report", str(out)]) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("\n") == 1 and "metrics.json" in err


def test_report_says_a_missing_or_damaged_figure(tmp_path, capsys):
    """`report` dropped a deleted figure in silence and embedded a damaged one as a broken
    image, exit 0 both times: each is now shown as lost on the page and said on stderr."""
    from digitlab.report import lost_figures

    data = write_fake_idx(tmp_path / "d", n_train=300, n_test=60)
    out = tmp_path / "run"
    base = ["run", *RUN_TINY, "--stages", "data,knn", "--data-dir", str(data), "--out", str(out)]
    assert main([*base, "--quiet"]) == 0
    page = (out / "report.html").read_text()
    assert "Figure missing" not in page and "Figure damaged" not in page
    metrics = json.loads((out / "metrics.json").read_text())
    assert lost_figures(out, metrics) == []
    gone, broken = out / "figures" / "knn_confusion_matrix.png", out / "figures" / "data_digit.png"
    gone.unlink()
    broken.write_bytes(b"garbage!")
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "<b>Figure missing:</b>" in page and "knn_confusion_matrix.png" in page
    assert "<b>Figure damaged:</b>" in page and "data_digit.png" in page
    assert "Z2FyYmFnZSE" not in page  # base64 of the garbage: not embedded
    assert lost_figures(out, metrics) == ["data_digit.png", "knn_confusion_matrix.png"]
    err = capsys.readouterr().err
    assert "Traceback" not in err and "data_digit.png, knn_confusion_matrix.png" in err


def test_a_rename_into_place_names_the_place_not_our_temporary_file(tmp_path):
    """report.html replaced by a folder: the one line named `.report.html.PID.X.part`."""
    from digitlab.files import atomic_write_text, describe_os_error

    (tmp_path / "report.html").mkdir()
    with pytest.raises(OSError) as raised:
        atomic_write_text(tmp_path / "report.html", "<html>")
    said = describe_os_error(raised.value)
    assert said == f"Is a directory: {tmp_path / 'report.html'}" and ".part" not in said
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left
    rename = OSError(18, "Invalid cross-device link", "/a/b.txt", None, "/c/d.txt")
    assert describe_os_error(rename) == "Invalid cross-device link: /a/b.txt -> /c/d.txt"


def test_the_report_promises_the_same_numbers_only_on_fixed_thread_counts():
    """The page said a rerun "reproduces these numbers" while the CNN's thread count was
    chosen by timing (a rerun on another count gave 0.9209 for 0.9210)."""
    from digitlab.report import _rerun_words

    assert _rerun_words({"knn": {"threads": None}}, ["data", "knn"]).endswith(
        "reproduces these numbers (on CPU)."
    )  # the kNN's answers are exact on any count
    timed = _rerun_words({"cnn": {"threads": None}, "cluster": {"threads": 2}}, ["cnn", "cluster"])
    assert "CNN's thread count was chosen here by timing" in timed and "Set cnn.threads" in timed
    assert "reproduces" not in timed
    fixed = {"cnn": {"threads": 1}, "cluster": {"threads": 2}}
    assert _rerun_words(fixed, ["cnn", "cluster"]).endswith("reproduces these numbers (on CPU).")


def test_umap_without_its_extra_is_refused_before_any_work(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("umap") is not None:
        pytest.skip("umap is installed here")
    out = tmp_path / "um"
    assert (
        main(
            [
                "run",
                "--preset",
                "quick",
                "--stages",
                "cluster",
                "cluster.embedding=umap",
                "--out",
                str(out),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "digitlab[umap]" in err and err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("delay", [0.1, 0.2, 0.4])
def test_ctrl_c_during_the_imports_is_one_line(delay):
    """SIGINT in the first seconds (PyTorch and scikit-learn importing) printed a 47-line
    KeyboardInterrupt traceback; so did one in the package's own import (NumPy's, before
    the guard in `__main__` ran) or while the arguments were parsed (before `main` set its
    handlers): the test's one delay of 0.4 s landed there on a warm, quick machine."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "digitlab", "data", "info"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
        # As from a terminal: a shell's background job (a CI runner's) ignores SIGINT, and a
        # child would inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip() == "digitlab: interrupted"


def _interrupted_once(script: str, code: int = 130) -> None:
    """Run `script` as Ctrl-C would find it (SIGINT not ignored, as from a terminal) and check
    it stopped with the one line and `code`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.strip() == "digitlab: interrupted"


def _signal_inside_import(module: str, sig: str, argv: list[str], *, in_callback=False) -> str:
    """A script that runs `digitlab ARGV` and sends itself `sig` ("SIGINT", "SIGTERM") while
    `module` is being imported: from its finder, or (`in_callback`) from a weakref callback
    run there, as importlib's module locks run theirs. The same moment every time."""
    send = f"os.kill(os.getpid(), signal.{sig})\n"
    send += "sum(range(1000))  # bytecodes for the handler to run between\n"
    if in_callback:
        callback = "def callback(ref):\n" + textwrap.indent(send, "    ")
        send = "class Held: pass\nheld = Held()\n" + callback
        send += "keep = weakref.ref(held, callback)\ndel held\n"
    return (
        "import os, signal, sys, weakref\n"
        "class Landing:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {module!r}:\n"
        "            sys.meta_path.remove(self)\n"
        + textwrap.indent(send, " " * 12)
        + "        return None\n"
        "sys.meta_path.insert(0, Landing())\n"
        "from digitlab.__main__ import entry\n"
        f"sys.argv = {['digitlab', *argv]!r}\n"
        "sys.exit(entry())\n"
    )


def test_sigterm_during_start_up_is_one_line():
    """SIGTERM while a command's modules load (seconds: they import PyTorch) ended the
    process with no word (-15, nothing on stderr); only Ctrl-C was covered there. Here the
    signal comes while the parser imports the command's module."""
    _interrupted_once(_signal_inside_import("digitlab.cli.knn", "SIGTERM", ["knn", "--help"]), 143)


def test_ctrl_c_inside_an_import_callback_is_one_line():
    """CI, 2026-12-01: SIGINT landed inside importlib's module-lock weakref callback, where
    Python cannot raise it; it printed "Exception ignored in ... Traceback" before the one
    line. Here a finder puts the signal in exactly such a callback, every time."""
    argv = ["data", "info"]
    _interrupted_once(_signal_inside_import("digitlab.cli", "SIGINT", argv, in_callback=True))


def test_a_lock_that_cannot_be_written_is_not_left_behind(tmp_path, monkeypatch):
    """On a full disk the lock file was created but its record not written: an empty lock
    then refused the folder ("in use by another process") for a minute."""
    import digitlab.files as files

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.json, "dump", full)
    with pytest.raises(OSError), folder_lock(tmp_path):
        pass
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_runs_files_change_together_or_not_at_all(tmp_path, monkeypatch):
    """config.json, config.toml, metrics.json and report.html were four separate writes: an
    interrupt or a full disk between them left k=5's config beside k=3's results, and the
    message said they were all the last finished run's. Now all are written in full first,
    then renamed in together."""
    from digitlab import files

    names = ["config.json", "config.toml", "metrics.json", "report.html"]
    for name in names:
        (tmp_path / name).write_text("old")
    calls = {"n": 0}
    real = os.fsync

    def fails_third(fd):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        real(fd)

    monkeypatch.setattr(files.os, "fsync", fails_third)
    with pytest.raises(OSError):
        files.replace_together({tmp_path / n: "new" for n in names})
    assert [(tmp_path / n).read_text() for n in names] == ["old"] * 4
    assert not list(tmp_path.glob(".*.part"))
    monkeypatch.setattr(files.os, "fsync", real)
    files.replace_together({tmp_path / n: "new" for n in names})
    assert [(tmp_path / n).read_text() for n in names] == ["new"] * 4


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.*")}


def test_an_interrupted_rerun_leaves_the_finished_runs_figures_and_models(tmp_path, monkeypatch):
    """A rerun with other settings wrote its figures, its CNN and its stage records straight
    into the folder: killed before the end, it left k=5's figures and another CNN beside k=3's
    metrics and report. Now they wait under .staged/ and move in with the results; the next
    run with the same settings reuses them."""
    from digitlab import pipeline

    data = write_fake_idx(tmp_path / "d", n_train=300, n_test=60)
    out = tmp_path / "run"
    base = ["run", *RUN_TINY, "--stages", "data,knn,cnn,cluster", "--data-dir", str(data)]
    assert main([*base, "--out", str(out), "knn.k=3", "cnn.epochs=1"]) == 0
    before = {name: _files(out / name) for name in ("figures", "models", "stages")} | {
        "metrics": (out / "metrics.json").read_bytes()
    }
    assert before["figures"] and before["models"]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    # knn and the CNN finish with new settings; the run is interrupted in the next stage.
    monkeypatch.setattr(pipeline.cluster_task, "cluster", killed)
    new = [*base, "--out", str(out), "knn.k=5", "cnn.epochs=2", "cluster.n_init=3"]
    assert main(new) != 0
    after = {name: _files(out / name) for name in ("figures", "models", "stages")}
    assert after == {k: v for k, v in before.items() if k != "metrics"}
    assert (out / "metrics.json").read_bytes() == before["metrics"]
    assert (out / pipeline.STAGED / "knn" / pipeline.RECORD).is_file()
    monkeypatch.undo()

    # The same settings again: knn and the CNN are taken from where they waited, not rerun.
    assert main(new) == 0
    log = (out / "run.log").read_text()
    assert log.count("(not yet committed): reused") == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stages"]["knn"]["config"]["k"] == 5
    assert metrics["stages"]["cnn"]["train_config"]["epochs"] == 2
    meta = json.loads((out / "models" / "cnn" / "model" / "metadata.json").read_text())
    assert meta["train_config"]["epochs"] == 2
    curves = "cnn_training_curves.png"
    assert _files(out / "figures")[curves] != before["figures"][curves]
    record = json.loads((out / "stages" / "knn.json").read_text())
    assert record["metrics"]["config"]["k"] == 5
    # Nothing of the finished stages is left waiting; the old CNN is gone.
    assert not (out / pipeline.STAGED).exists()
    assert not list((out / "models").glob(".*"))


def test_a_truncated_cnn_checkpoint_in_a_run_is_trained_afresh(tmp_path):
    """A run's own CNN checkpoint cut short (a full disk, a copy) stopped every rerun ("delete
    it") while one of other settings was retrained: both are the run's to replace."""
    from digitlab import pipeline

    data = write_fake_idx(tmp_path / "d", n_train=300, n_test=60)
    out = tmp_path / "run"
    base = ["run", *RUN_TINY, "--stages", "cnn", "--data-dir", str(data), "--out", str(out)]
    assert main([*base, "cnn.epochs=1"]) == 0
    checkpoint = out / "models" / "cnn" / pipeline.CHECKPOINT
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    assert main([*base, "cnn.epochs=2"]) == 0
    assert "training afresh" in (out / "run.log").read_text()
    cnn = json.loads((out / "metrics.json").read_text())["stages"]["cnn"]
    assert len(cnn["history"]["loss"]) == 2 and cnn["training"]["resumed_from_epoch"] == 0


def test_a_hand_edited_stage_record_is_rerun_not_reused(tmp_path, capsys):
    """A stage record edited by hand (its key kept, its figures broken) was reused, and then
    every report of the folder failed until the record was deleted by hand."""
    data = write_fake_idx(tmp_path / "d", n_train=300, n_test=60)
    out = tmp_path / "run"
    base = ["run", *RUN_TINY, "--stages", "data,knn", "--data-dir", str(data), "--out", str(out)]
    assert main(base) == 0
    record = out / "stages" / "knn.json"
    saved = json.loads(record.read_text())
    saved["metrics"] = {"accuracy": "x"}
    record.write_text(json.dumps(saved))
    assert main(base) == 0
    assert "Traceback" not in capsys.readouterr().err
    log = (out / "run.log").read_text().split("digitlab run:")[-1]
    assert "[knn] running" in log and "[data] unchanged since it finished: reused" in log
    assert json.loads(record.read_text())["metrics"]["accuracy"] > 0.1
    assert main(["report", str(out)]) == 0


@pytest.mark.parametrize("command", ["knn", "cluster", "knn sweep"])
def test_an_interrupted_command_rerun_keeps_the_last_finished_files(tmp_path, monkeypatch, command):
    """`knn --out D` with k=5 killed after its figures and before metrics.json left k=5's
    figures beside k=3's metrics: a command's files now move into its folder together."""
    from digitlab import files

    data = str(write_fake_idx(tmp_path / "d", n_train=300, n_test=60))
    out = tmp_path / "out"
    argv = [*command.split(), "--data-dir", data, "--train-size", "200", "--out", str(out)]
    first, second = {
        "knn": (["--k", "3"], ["--k", "5"]),
        "cluster": (["--n-clusters", "10"], ["--n-clusters", "6"]),
        "knn sweep": (["--k", "1-3"], ["--k", "1-5"]),
    }[command]
    assert main([*argv, *first, "--quiet"]) == 0
    before = _files(out)
    real = files.save_metrics

    def killed_at_the_end(path, metrics):
        real(path, metrics)
        raise KeyboardInterrupt

    monkeypatch.setattr(files, "save_metrics", killed_at_the_end)
    for module in ("digitlab.tasks.knn", "digitlab.tasks.cluster"):
        monkeypatch.setattr(f"{module}.save_metrics", killed_at_the_end)
    assert main([*argv, *second, "--quiet"]) == 130
    assert _files(out) == before
    assert not (out / ".staged").exists()
    monkeypatch.undo()
    assert main([*argv, *second, "--quiet"]) == 0
    assert _files(out) != before and not (out / ".staged").exists()


def _one_run(folder: Path) -> None:
    """The folder's figures are the report's images and its settings are its results'."""
    import base64
    import re

    page = (folder / "report.html").read_text()
    shown = {base64.b64decode(m) for m in re.findall(r"base64,([A-Za-z0-9+/=]+)", page)}
    files = {p.read_bytes() for p in (folder / "figures").glob("*.*")}
    assert files == shown
    config = json.loads((folder / "config.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    for stage, figures in metrics["stages"].items():
        if stage in ("knn", "cluster"):
            shared = set(figures["config"]) & set(config[stage])
            assert {k: figures["config"][k] for k in shared} == {
                k: config[stage][k] for k in shared
            }
        record = json.loads((folder / "stages" / f"{stage}.json").read_text())
        assert record["metrics"] == figures


def test_a_signal_during_the_commit_waits_for_its_end(tmp_path, monkeypatch):
    """Ctrl-C was blocked in the main thread only: the lock's heartbeat thread took it and
    the interrupt struck mid-commit, leaving the new run's figures beside the old metrics."""
    import threading

    from digitlab import commit

    data = str(write_fake_idx(tmp_path / "d", n_train=300, n_test=60))
    out = tmp_path / "run"
    base = ["run", *RUN_TINY, "--stages", "data,knn", "--data-dir", data, "--out", str(out)]
    assert main([*base, "knn.k=3"]) == 0
    real, moves = commit._move, []

    def move_then_signal(src, dst):
        real(src, dst)
        moves.append(dst)
        if len(moves) == 2:  # from another thread, as the OS may deliver it
            sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT))
            sender.start()
            sender.join()
            time.sleep(0.05)

    monkeypatch.setattr(commit, "_move", move_then_signal)
    # Ctrl-C as in a terminal (a shell's background job, a CI runner's, ignores it).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert main([*base, "knn.k=5"]) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(moves) > 5  # every move was made, then the interrupt
    _one_run(out)
    assert json.loads((out / "config.json").read_text())["knn"]["k"] == 5
    assert "its results were written first" in (out / "run.log").read_text()


def _fail_move(monkeypatch, n: int) -> None:
    """The commit's n-th file move fails (an I/O error), as a kill or a full disk would stop it."""
    from digitlab import commit

    real, moves = commit._move, []

    def fails_at_the_nth(src, dst):
        moves.append(dst)
        if len(moves) == n:
            raise OSError(5, "Input/output error", str(dst))
        real(src, dst)

    monkeypatch.setattr(commit, "_move", fails_at_the_nth)


def test_a_commit_cut_short_is_finished_by_the_next_command(tmp_path, monkeypatch, capsys):
    """Killed (or failing) after some of its figures had moved, a run left them beside the
    old metrics, and the next run deleted them. Its journal now lets the next run or
    `digitlab report` finish it."""

    data = str(write_fake_idx(tmp_path / "d", n_train=300, n_test=60))
    out = tmp_path / "run"
    base = ["run", *RUN_TINY, "--stages", "data,knn", "--data-dir", data, "--out", str(out)]
    assert main([*base, "knn.k=3"]) == 0
    _fail_move(monkeypatch, 3)
    assert main([*base, "knn.k=5"]) == 1
    assert "finishes that first" in (out / "run.log").read_text()
    monkeypatch.undo()
    assert main(["report", str(out)]) == 0
    assert "finished putting in place" in capsys.readouterr().out
    _one_run(out)
    assert json.loads((out / "config.json").read_text())["knn"]["k"] == 5
    assert main([*base, "knn.k=5"]) == 0
    assert "unchanged since it finished: reused" in (out / "run.log").read_text()
    _one_run(out)


def test_models_on_another_device_are_copied_into_place(tmp_path, monkeypatch):
    from digitlab import commit

    data = str(write_fake_idx(tmp_path / "d", n_train=300, n_test=60))
    out = tmp_path / "run"
    real = os.replace

    def cross_device(src, dst):
        if Path(src).is_dir() and ".staged" in str(src):
            raise OSError(18, "Invalid cross-device link", str(src))
        real(src, dst)

    monkeypatch.setattr(commit.os, "replace", cross_device)
    base = ["run", *RUN_TINY, "--stages", "cnn", "--data-dir", data, "--out", str(out)]
    assert main([*base, "cnn.epochs=1"]) == 0
    assert (out / "models" / "cnn" / "model" / "model.safetensors").is_file()
    assert not list((out / "models").glob(".*"))


def test_stages_left_out_take_their_files_with_them_until_asked_for_again(tmp_path):
    """`--stages knn cnn.epochs=2` left the 1-epoch CNN, its figures and record in the folder
    beside a config saying 2 epochs (and the app showed them)."""
    data = str(write_fake_idx(tmp_path / "d", n_train=300, n_test=60))
    out = tmp_path / "run"
    base = ["run", *RUN_TINY, "--data-dir", data, "--out", str(out)]
    assert main([*base, "--stages", "knn,cnn", "cnn.epochs=1"]) == 0
    assert main([*base, "--stages", "knn", "cnn.epochs=2"]) == 0
    assert not (out / "models" / "cnn").exists() and not (out / "stages" / "cnn.json").exists()
    assert not list((out / "figures").glob("cnn_*"))
    _one_run(out)
    assert main([*base, "--stages", "knn,cnn", "cnn.epochs=1"]) == 0
    log = (out / "run.log").read_text().split("digitlab run:")[-1]
    assert "[cnn] finished earlier with these settings (not yet committed): reused" in log
    assert (out / "models" / "cnn" / "model" / "model.safetensors").is_file()
    _one_run(out)


def test_a_reused_stage_needs_its_files(tmp_path, capsys):
    """A deleted CNN model or figure was 'reused' and stayed missing; an unknown stage in a
    hand-edited metrics.json gave a KeyError traceback on every run."""
    data = str(write_fake_idx(tmp_path / "d", n_train=300, n_test=60))
    out = tmp_path / "run"
    base = ["run", *RUN_TINY, "--stages", "knn,cnn", "--data-dir", data, "--out", str(out)]
    assert main(base) == 0
    weights = out / "models" / "cnn" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    (out / "figures" / "knn_per_class.png").unlink()
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["stages"]["foo"] = {}
    (out / "metrics.json").write_text(json.dumps(metrics))
    assert main(base) == 0
    assert "Traceback" not in capsys.readouterr().err
    log = (out / "run.log").read_text().split("digitlab run:")[-1]
    assert "[knn] running" in log and "[cnn] running" in log and "no such stage" in log
    _one_run(out)
    assert main(["cnn", "eval", str(out / "models" / "cnn"), "--data-dir", data]) == 0


def test_report_waits_for_no_run_and_its_own_config_reuses_everything(tmp_path, capsys):
    data = str(write_fake_idx(tmp_path / "d", n_train=300, n_test=60))
    out = tmp_path / "run"
    base = ["run", *RUN_TINY, "--stages", "data,knn", "--data-dir", data, "--out", str(out)]
    assert main(base) == 0
    with folder_lock(out):
        assert main(["report", str(out)]) == 1
        assert "is in use by" in capsys.readouterr().err
    again = ["run", "--config", str(out / "config.toml"), "--stages", "data,knn", "--quiet"]
    assert main([*again, "--data-dir", data, "--out", str(out)]) == 0
    log = (out / "run.log").read_text().split("digitlab run:")[-1]
    assert log.count("unchanged since it finished: reused") == 2


def test_a_commands_commit_cut_short_is_finished_by_its_next_run(tmp_path, monkeypatch):
    """`knn --out D` killed after some of its files had moved left a mixed folder; the
    journal lets the next command on the folder finish the moves first."""
    from digitlab import commit, figures

    data = str(write_fake_idx(tmp_path / "d", n_train=300, n_test=60))
    out = tmp_path / "out"
    argv = ["knn", "--data-dir", data, "--train-size", "200", "--out", str(out), "--quiet"]
    assert main([*argv, "--k", "3"]) == 0
    _fail_move(monkeypatch, 2)
    assert main([*argv, "--k", "5"]) == 1
    assert (out / ".staged" / "commit.json").is_file()
    monkeypatch.undo()
    assert commit.finish(out)  # what the next command on the folder does first
    assert json.loads((out / "metrics.json").read_text())["config"]["k"] == 5
    assert all((out / name).is_file() for name in figures.KNN.values())
    assert main([*argv, "--k", "5"]) == 0
    assert json.loads((out / "metrics.json").read_text())["config"]["k"] == 5
    assert not (out / ".staged").exists()


def test_a_journal_is_the_folders_wherever_the_next_command_starts(tmp_path, monkeypatch):
    """The journal held paths relative to where the killed run started: `report` from
    another directory then 'finished' nothing (or moved another folder's files)."""

    data = str(write_fake_idx(tmp_path / "d", n_train=300, n_test=60))
    monkeypatch.chdir(tmp_path)
    base = ["run", *RUN_TINY, "--stages", "data,knn", "--data-dir", data, "--out", "r"]
    assert main([*base, "knn.k=3"]) == 0
    _fail_move(monkeypatch, 3)
    assert main([*base, "knn.k=5"]) == 1
    monkeypatch.undo()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    (tmp_path / "r").rename(tmp_path / "moved")
    assert main(["report", "../moved", "--quiet"]) == 0
    _one_run(tmp_path / "moved")
    assert json.loads((tmp_path / "moved" / "config.json").read_text())["knn"]["k"] == 5
    assert not (tmp_path / "moved" / ".staged").exists()  # tidied after


@pytest.mark.parametrize(
    "steps",
    [5, [["move"]], [["move", None, "x", ""]], [["move", "../other/figures", "stages", ""]]],
)
def test_a_damaged_journal_is_one_line(tmp_path, capsys, steps):
    data = str(write_fake_idx(tmp_path / "d", n_train=300, n_test=60))
    out = tmp_path / "r"
    base = ["run", *RUN_TINY, "--stages", "data", "--data-dir", data, "--out", str(out)]
    assert main(base) == 0
    (out / ".staged").mkdir(exist_ok=True)
    (out / ".staged" / "commit.json").write_text(json.dumps({"steps": steps}))
    assert main(["report", str(out)]) == 1
    err = capsys.readouterr().err
    assert "commit.json is damaged: delete it" in err and "Traceback" not in err


def test_a_signal_inside_a_finalizer_is_sent_again_not_lost():
    """SIGTERM's KeyboardInterrupt raised inside a weakref callback (a WeakKeyDictionary's
    clean-up) or a __del__ is only printed ("Exception ignored") and the run went on: there
    the handler sends the signal again a moment later instead."""
    import gc
    import weakref

    from digitlab.cli import _in_finalizer

    seen = {}

    class Dies:
        def __del__(self):
            seen["del"] = _in_finalizer(sys._getframe())

    Dies()
    gc.collect()

    class Key:
        pass

    key = Key()
    assert seen["del"] and not _in_finalizer(sys._getframe())
    # The dictionary's own clean-up runs from weakref.py: found there too.
    frames = []
    weakref.finalize(key, lambda: frames.append(_in_finalizer(sys._getframe(1))))
    del key
    gc.collect()
    assert frames == [True]


def test_a_signal_inside_an_import_waits_for_it(tmp_path):
    """A command loads matplotlib or PyTorch when it needs them. A KeyboardInterrupt raised
    inside such an import broke a C extension's initialisation (matplotlib's ft2font:
    "initialization failed", then SIGABRT at exit, under load). Ctrl-C there now waits
    until the import is done: here the signal comes from inside the finder of a module
    `knn` loads as it runs, and that import still completes."""
    data = write_fake_idx(tmp_path / "d", n_train=300, n_test=60)
    done = tmp_path / "imported"
    argv = ["knn", "--data-dir", str(data), "--train-size", "200", "--out", str(tmp_path / "o")]
    script = _signal_inside_import("digitlab.tasks.data", "SIGINT", argv)
    record = f"open({str(done)!r}, 'w').write(str('digitlab.tasks.data' in sys.modules))"
    _interrupted_once(f"import atexit, sys\natexit.register(lambda: {record})\n{script}")
    assert done.read_text() == "True"


def test_in_import_tells_an_import_from_the_rest(tmp_path, monkeypatch):
    from digitlab.cli import _in_import

    (tmp_path / "probe_module.py").write_text(
        "import sys\nfrom digitlab.cli import _in_import\nSEEN = _in_import(sys._getframe())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import probe_module

    assert probe_module.SEEN and not _in_import(sys._getframe())


def test_pca_larger_than_its_images_is_one_line(tmp_path, capsys):
    data = str(write_fake_idx(tmp_path / "d", n_train=300, n_test=60))
    for argv in (
        ["knn", "--data-dir", data, "--train-size", "200", "--pca", "600"],
        ["knn", "sweep", "--data-dir", data, "--train-size", "200", "--pca", "190"],
    ):
        assert main([*argv, "--out", str(tmp_path / "o")]) == 1
        err = capsys.readouterr().err
        assert "pca (" in err and "images it is fitted on" in err and "Traceback" not in err


def test_a_damaged_figure_reruns_its_stage(tmp_path):
    data = str(write_fake_idx(tmp_path / "d", n_train=300, n_test=60))
    out = tmp_path / "r"
    base = ["run", *RUN_TINY, "--stages", "data,knn", "--data-dir", data, "--out", str(out)]
    assert main(base) == 0
    figure = out / "figures" / "knn_per_class.png"
    figure.write_bytes(figure.read_bytes()[:100])
    assert main(base) == 0
    log = (out / "run.log").read_text().split("digitlab run:")[-1]
    assert "[knn] running" in log and "[data] unchanged since it finished: reused" in log
    _one_run(out)


def test_odd_sizes_and_single_files_are_one_line(tmp_path, capsys):
    """A tester's round of sizes and single-file outputs: each was a traceback, a silent
    overwrite of a saved model or a run's figure, or a memory bomb."""
    from digitlab.cluster_experiment import ClusterConfig
    from digitlab.pipeline import run_course
    from digitlab.run_config import load_config

    data = str(write_fake_idx(tmp_path / "d", n_train=300, n_test=60))
    run = tmp_path / "run"
    assert (
        main(["run", *RUN_TINY, "--stages", "data,knn", "--data-dir", data, "--out", str(run)]) == 0
    )
    shown = (run / "figures" / "knn_per_class.png").read_bytes()
    for argv in (
        ["gan", "generate", "--out", str(run / "figures" / "knn_per_class.png")],
        ["data", "show", "--data-dir", data, "--index", "0", "--out", str(run / "x.png")],
        ["knn", "sweep", "--data-dir", data, "--k", "1-1000000000", "--out", str(tmp_path / "s")],
        [
            "cluster",
            "--data-dir",
            data,
            "--train-size",
            "10",
            "--n-clusters",
            "10",
            "--pca-components",
            "5",
            "--n-init",
            "1000000000",
            "--out",
            str(tmp_path / "c"),
        ],
    ):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("digitlab: error:") and "Traceback" not in err, err
    assert (run / "figures" / "knn_per_class.png").read_bytes() == shown
    # Each sample its own cluster: no silhouette (scikit-learn refuses it), not a traceback.
    argv = ["cluster", "--data-dir", data, "--train-size", "10", "--n-clusters", "10"]
    assert (
        main(
            [
                *argv,
                "--pca-components",
                "5",
                "--n-init",
                "1",
                "--quiet",
                "--out",
                str(tmp_path / "c10"),
            ]
        )
        == 0
    )
    with pytest.raises(ConfigError, match="n_init must be at most 1,000"):
        ClusterConfig(n_init=10**9).validate(300)
    cfg = load_config("quick", overrides=[f'data.data_dir="{data}"'])
    for stages, message in (
        ([], "no stage left"),
        (["foo"], "unknown stage 'foo'"),
        ("knn", "a list of stage names"),
    ):
        with pytest.raises(ConfigError, match=message):
            run_course(cfg, tmp_path / "api", stages=stages)


def test_a_mixture_that_cannot_be_fitted_and_a_non_string_dataset_are_one_line(tmp_path, capsys):
    from digitlab.data import get_spec

    data = str(write_fake_idx(tmp_path / "d", n_train=300, n_test=60))
    argv = ["cluster", "--data-dir", data, "--train-size", "20", "--embedding", "pca"]
    argv += ["--method", "gmm", "--pca-components", "20", "--n-init", "1"]
    assert main([*argv, "--out", str(tmp_path / "g")]) == 1
    err = capsys.readouterr().err
    assert "the Gaussian mixture cannot be fitted here" in err and "Traceback" not in err
    for name in (5, None):
        with pytest.raises(ConfigError, match="unknown dataset"):
            get_spec(name)


def test_a_signal_lost_in_any_weakref_callback_is_sent_again(tmp_path):
    """A weakref callback defined outside weakref.py is not recognised by its frame; the
    KeyboardInterrupt it swallows reaches sys.unraisablehook, which sends the signal again."""
    script = tmp_path / "lost.py"
    script.write_text(
        textwrap.dedent(
            """
            import argparse, os, signal, sys, time, weakref
            import digitlab.cli as cli

            def command(args):
                class Thing:
                    pass
                def callback(ref):  # a plain weakref.ref callback: called from C
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.5)
                thing = Thing()
                ref = weakref.ref(thing, callback)
                del thing
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    time.sleep(0.01)
                print("went on", flush=True)
                return 0

            cli.parse = lambda parser, argv: argparse.Namespace(func=command)
            sys.exit(cli.main([]))
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 143, (done.stdout, done.stderr)  # 128 + SIGTERM
    assert "went on" not in done.stdout and "Exception ignored" not in done.stderr


def test_resume_never_trains_over_a_finished_model(tmp_path, capsys):
    """With its checkpoint deleted, `cnn train --resume` trained a new model over the
    finished one (the note said only that it started anew)."""
    data = str(write_fake_idx(tmp_path / "d", n_train=300, n_test=60))
    out = tmp_path / "cnn"
    args = ["cnn", "train", "--data-dir", data, "--epochs", "1", "--out", str(out), *CNN_TINY]
    assert main(args) == 0
    (out / "checkpoint.safetensors").unlink()
    weights = (out / "model" / "model.safetensors").read_bytes()
    assert main([*args, "--resume"]) == 1
    assert "holds a finished model but no checkpoint" in capsys.readouterr().err
    assert (out / "model" / "model.safetensors").read_bytes() == weights
    fresh = tmp_path / "fresh"
    assert (
        main(
            [
                "cnn",
                "train",
                "--data-dir",
                data,
                "--epochs",
                "1",
                "--out",
                str(fresh),
                "--resume",
                "--train-size",
                "200",
                "--batch-size",
                "32",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    assert "no checkpoint in" in capsys.readouterr().out
