"""Every command: odd paths keep every character; numeric settings are checked before any data
loads, the same way everywhere; `run` takes overrides anywhere and sets any task setting."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import make_digits, write_fake_idx
from digitlab.cli import main
from digitlab.device import requested_threads
from digitlab.errors import ConfigError
from digitlab.gan import Generator
from digitlab.loaders import save_generator
from digitlab.run_config import load_config

# A Windows-style path with a quote and backslashes (a plain folder name on POSIX), spaces,
# and non-ASCII letters: the kinds that broke when paths went through TOML text.
ODD = ['C:\\data\\mnist "v2"', "with spaces", "données ü 数据"]


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    root = tmp_path_factory.mktemp("paths")
    data = write_fake_idx(root / ODD[0] / ODD[2], n_train=300, n_test=60)
    gen = root / ODD[1] / 'gen \\ "g"'
    save_generator(Generator(), gen / "generator", {"epochs": 0})
    return root, data, gen


def _ok(argv, capsys):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 0, err


def test_odd_paths_on_every_command(odd, tmp_path, capsys):
    _, data, gen = odd
    out = tmp_path / ODD[0] / ODD[1] / ODD[2]
    _ok(["data", "info", "--data-dir", data], capsys)
    _ok(["data", "show", "--index", 3, "--data-dir", data, "--out", out / "one.png"], capsys)
    _ok(["data", "gallery", "--count", 2, "--data-dir", data, "--out", out / "g.png"], capsys)
    _ok(["knn", "--train-size", 200, "--data-dir", data, "--out", out / "knn"], capsys)
    assert json.loads((out / "knn" / "metrics.json").read_text())["n_train"] == 200
    _ok(["knn", "sweep", "--k", "1-2", "--train-size", 200, "--data-dir", data,
         "--out", out / "sweep"], capsys)  # fmt: skip
    _ok(["cluster", "--train-size", 200, "--n-init", 1, "--data-dir", data,
         "--out", out / "cl"], capsys)  # fmt: skip
    assert (out / "cl" / "cluster_centres.png").is_file()
    cnn = out / "cnn"
    _ok(["cnn", "train", "--epochs", 1, "--train-size", 200, "--threads", 1, "--data-dir", data,
         "--out", cnn, "--quiet"], capsys)  # fmt: skip
    _ok(["cnn", "eval", cnn, "--data-dir", data, "--out", out / "eval"], capsys)
    x, _ = make_digits(1)
    image = out / 'é "7".png'
    Image.fromarray(255 - x[0]).resize((84, 84)).save(image)
    _ok(["cnn", "predict", cnn, image, "--out", out / "seen"], capsys)
    assert (out / "seen" / 'é "7"_28x28.png').is_file()
    _ok(["gan", "generate", "--model", gen, "--digit", 3, "--count", 2,
         "--out", out / "gen.png"], capsys)  # fmt: skip
    _ok(["gan", "interpolate", 2, 6, "--steps", 3, "--model", gen, "--out", out / "m.gif"], capsys)
    assert (out / "m.gif").is_file() and (out / "m.png").is_file()
    _ok(["gan", "evaluate", "--model", gen, "--classifier", cnn, "--per-digit", 5,
         "--data-dir", data, "--json", out / "q.json"], capsys)  # fmt: skip
    run = out / "run"
    _ok(["run", "--preset", "quick", "--stages", "data,knn", "--data-dir", data, "--out", run,
         "knn.train_size=200", "knn.compare_sklearn=false", "sweep.train_size=200",
         "cnn.train_size=200", "cluster.train_size=200", "--quiet"], capsys)  # fmt: skip
    assert json.loads((run / "config.json").read_text())["data"]["data_dir"] == str(data)
    assert (run / "report.html").is_file()


@pytest.mark.parametrize("quote", ["", '"', "'"])
def test_run_override_keeps_a_windows_path(odd, quote):
    _, data, _ = odd
    cfg = load_config("quick", overrides=[f"data.data_dir={quote}{data}{quote}"])
    assert cfg.data.data_dir == str(data)
    # --print-config writes it back as TOML that reads back to the same path.
    from digitlab.run_config import config_toml, read_toml

    text = config_toml(cfg)
    toml = odd[0] / "c.toml"
    toml.write_text(text, encoding="utf-8")
    assert read_toml(toml)["data.data_dir"] == str(data)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["knn", "--k", "1001", "--train-size", "1000"], "k (1001) is more than the 1000"),
        (["knn", "--max-memory-mb", "0"], "--max-memory-mb must be a number > 0"),
        (["knn", "--threads", "0"], "threads must be a whole number of at least 1"),
        (["knn", "sweep", "--threads", "0"], "threads must be"),
        (["knn", "sweep", "--k", "1-20000", "--train-size", "1000"], "largest k (20000)"),
        (["cnn", "train", "--threads", "0"], "threads must be"),
        (["cnn", "train", "--batch-size", "70000", "--train-size", "all"], "--batch-size must be"),
        (["cluster", "--threads", "0"], "threads must be"),
        (["cluster", "--pca-components", "5000", "--embedding", "pca"], "--pca-components must be"),
        (["gan", "train", "--threads", "0"], "threads must be"),
        (["gan", "train", "--epochs", "0"], "epochs must be"),
        (["gan", "generate", "--count", "0"], "count must be"),
        (["gan", "generate", "--count", "-5"], "count must be"),
        (["gan", "generate", "--digit", "3", "--count", "100000"], "count must be at most"),
        (["gan", "generate", "--count", "5000"], "count must be at most"),
        (["gan", "interpolate", "2", "6", "--steps", "100000"], "steps must be"),
        (["gan", "evaluate", "--per-digit", "10000000"], "--per-digit must be at most"),
        (["data", "gallery", "--count", "100000"], "--count must be at most"),
    ],
)
def test_bad_numbers_fail_in_one_line_before_data_loads(tmp_path, capsys, argv, message):
    # The data folder does not exist: a command that looked at the data first would say so.
    out = tmp_path / "out"
    code = main([*argv, "--data-dir", str(tmp_path / "no data")] if argv[0] != "gan" or
                argv[1] in ("train", "evaluate") else argv)  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and message in err and err.count("\n") == 1, err
    assert "does not exist" not in err and not out.exists()


def test_run_checks_every_setting_before_making_the_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "knn.k=20001", "--out", str(out), "--data-dir", str(tmp_path)]) == 1
    assert "[knn] k (20001) is more than the 20000" in capsys.readouterr().err
    assert not out.exists()
    assert main(["run", "sweep.ks=1-19000", "--out", str(out)]) == 1
    assert "[sweep] largest k" in capsys.readouterr().err and not out.exists()
    assert main(["run", "knn.seed=3", "--out", str(out)]) == 1
    assert "the seed is the run's" in capsys.readouterr().err


def test_threads_env_is_read_and_checked_everywhere(monkeypatch, tmp_path, capsys):
    from digitlab.device import available_cpus

    monkeypatch.setenv("DIGITLAB_THREADS", "1")
    assert requested_threads() == 1 and requested_threads(2) == min(2, available_cpus())
    # More than the CPUs this process may use: capped (oversubscribed OpenMP ran 10x slower).
    monkeypatch.setenv("DIGITLAB_THREADS", "999")
    assert requested_threads() == available_cpus() == requested_threads(1000)
    monkeypatch.setenv("DIGITLAB_THREADS", "0")
    with pytest.raises(ConfigError, match="DIGITLAB_THREADS must be"):
        requested_threads()
    for argv in (["knn"], ["cnn", "train"], ["cluster"], ["run", "--out", str(tmp_path / "r")]):
        assert main([*argv, "--data-dir", str(tmp_path / "none")]) == 1
        assert "DIGITLAB_THREADS must be a whole number of at least 1" in capsys.readouterr().err


def test_threads_env_reaches_the_cnn(monkeypatch):
    from digitlab.train import TrainConfig, train_cnn

    x, y = make_digits(200)
    monkeypatch.setenv("DIGITLAB_THREADS", "1")
    cfg = TrainConfig(epochs=1, batch_size=64, train_size=None)
    assert train_cnn(x, y, cfg, progress=False)[2]["threads"] == 1


def test_run_overrides_anywhere_and_every_task_setting(capsys):
    argv = ["run", "--print-config", "knn.k=5", "--seed", "1", "cnn.epochs=3",
            "knn.threads=1", "--preset", "quick", "knn.max_memory_mb=64",
            "cluster.pca_components=20", "cnn.device=cpu", "sweep.weights=distance"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    for line in ("seed = 1", "k = 5", "epochs = 3", "threads = 1", "max_memory_mb = 64",
                 "pca_components = 20", 'device = "cpu"', 'weights = "distance"'):  # fmt: skip
        assert f"\n{line}" in text, line
    # Each setting says what it means (the same table --help and the errors use).
    assert "k = 5  # neighbours that vote" in text
    assert main(["run", "--print-config", "knn.k=x"]) == 1
    assert "knn.k must be int (neighbours that vote)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--print-config", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_old_config_files_keep_their_seed(tmp_path):
    toml = tmp_path / "old.toml"
    toml.write_text('device = "cpu"\n[data]\nseed = 7\n[knn]\nk = 1\n')
    cfg = load_config("course", toml)
    assert cfg.seed == 7 and cfg.stage("knn").seed == 7 and cfg.stage("cnn").device == "cpu"


def test_python_m_digitlab(fake_dir):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "digitlab", "data", "info", "--data-dir", str(fake_dir), "--json"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and json.loads(proc.stdout)["train"]["class_counts"] == [20] * 10
    assert np.sum(json.loads(proc.stdout)["test"]["class_counts"]) == 50


def test_run_says_a_failed_stage_error_once(tmp_path, capsys):
    """The error is printed once (the CLI's line); the run's own note says what was kept,
    and run.log keeps the error with its time."""
    # Data that fails as it loads, inside the run (a bad gan.model is refused before it).
    data = write_fake_idx(tmp_path / "d", n_train=6000, n_test=40)
    (data / "train-labels-idx1-ubyte").write_bytes(b"not an IDX file")
    out = tmp_path / "run"
    argv = ["run", "--preset", "quick", "--data-dir", str(data), "--out", str(out)]
    assert main([*argv, "--stages", "data"]) == 1
    captured = capsys.readouterr()
    error = captured.err.split("digitlab: error: ", 1)[1].strip()
    assert (captured.out + captured.err).count(error) == 1
    # No run finished in this folder before: the note says so (it claimed the last finished
    # run's files were kept when there never was one).
    assert "stopped; no results were written yet" in captured.out
    log = (out / "run.log").read_text()
    assert "failed: " in log and error in log


@pytest.mark.parametrize("port", ["99999", "-1", "0", "http"])
def test_app_port_out_of_range_is_one_usage_line(capsys, port):
    """--port 99999 said "digitlab app on http://127.0.0.1:99999", then socket.bind's
    OverflowError traceback."""
    with pytest.raises(SystemExit) as stop:
        main(["app", "--port", port])
    captured = capsys.readouterr()
    assert stop.value.code == 2 and captured.out == "", captured.out
    assert captured.err.count("\n") == 1
    assert f"argument --port: must be a whole number in 1..65535, got '{port}'" in captured.err


def test_app_busy_port_and_bad_host_are_one_line_before_anything_loads(tmp_path, capsys):
    """Both once ended in Gradio's "Cannot find empty port in range: 7871-7871. You can
    specify ... GRADIO_SERVER_PORT ..." (after "ERROR: [Errno -2] Name or service not known"
    for the host), once the models had loaded."""
    import socket

    none = str(tmp_path / "none")
    with socket.socket() as held:  # a real server's socket on the port: bound and listening
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        for host in ("127.0.0.1", "0.0.0.0"):  # the wildcard address includes the busy one
            assert main(["app", "--host", host, "--port", str(port), "--data-dir", none]) == 1
            captured = capsys.readouterr()
            assert captured.err == (
                f"digitlab: error: port {port} on {host} is in use; choose another --port\n"
            )
            assert captured.out == ""  # no notes: the models were not loaded first
    for host in ("999.1.1.1", ""):
        assert main(["app", "--host", host, "--port", str(port), "--data-dir", none]) == 1
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1, captured
        assert captured.err.startswith("digitlab: error: ")
        assert "check --host" in captured.err or "--host is empty" in captured.err
    # The resolver's own words (e.g. "name or service not known") follow the host.
    assert main(["app", "--host", "999.1.1.1", "--port", str(port)]) == 1
    assert capsys.readouterr().err.startswith("digitlab: error: cannot bind to 999.1.1.1: ")


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_app_removes_its_scratch_folder_when_stopped(tmp_path, sig):
    """Every start and stop of `digitlab app` left an empty /tmp/digitlab-app-XXXXXXXX."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    pytest.importorskip("gradio")
    scratch_root = tmp_path / "tmp"  # TMPDIR: this app's scratch folders only, none of others
    scratch_root.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "digitlab", "app", "--port", str(port),
         "--data-dir", str(tmp_path / "no data"), "--run", str(tmp_path / "no run")],
        env={**os.environ, "TMPDIR": str(scratch_root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Ctrl-C as a terminal sends it: a suite started in the background (`cmd &`) hands its
        # children SIGINT ignored, and the app rightly keeps a background job's ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"the app exited: {proc.stdout.read()}")
                if time.time() > deadline:
                    pytest.fail("the app did not start within 120 s")
                time.sleep(0.3)
        # Serving: its scratch folder exists (so the check below is not vacuous).
        assert len(list(scratch_root.glob("digitlab-app-*"))) == 1
        proc.send_signal(getattr(signal, sig))
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Stopped by a signal: 128 + its number, as every command (Gradio's loop catching the
    # Ctrl-C made it 0 or 130 by the moment the signal came; SIGTERM was 130 too).
    code = 128 + getattr(signal, sig)
    assert proc.returncode == code and "Traceback" not in out, out
    assert "digitlab: interrupted" in out
    assert list(scratch_root.glob("digitlab-app-*")) == []
    # --run naming no folder is said, not accepted silently.
    assert f"note: run figures unavailable: {tmp_path / 'no run'} is not a folder" in out
