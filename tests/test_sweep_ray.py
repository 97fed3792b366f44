"""`digitlab sweep` on a real Ray head on this machine: submitted by address, a lost worker
retried, an interrupted sweep resumed without rerunning finished trials; and the local default.

Real MNIST images (small seeded subsets, written once as a Keras-style npz so each trial reads
them in milliseconds). The head is stopped at the end whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

pytest.importorskip("ray.tune", reason="needs digitlab[sweep] (ray[tune])")

pytestmark = [pytest.mark.slow, pytest.mark.real_data]

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory, mnist):
    """3,000 training and 1,000 test images of the real MNIST files, as mnist.npz."""
    folder = tmp_path_factory.mktemp("small-mnist")
    rng = np.random.default_rng(0)
    tr = np.sort(rng.choice(len(mnist.x_train), 3000, replace=False))
    te = np.sort(rng.choice(len(mnist.x_test), 1000, replace=False))
    np.savez(
        folder / "mnist.npz",
        x_train=mnist.x_train[tr],
        y_train=mnist.y_train[tr],
        x_test=mnist.x_test[te],
        y_test=mnist.y_test[te],
    )
    return folder


def base_words(data: Path) -> list[str]:
    return [
        f'data.data_dir="{data}"',
        "knn.train_size=400",
        "sweep.train_size=400",
        "cnn.train_size=400",
        "cluster.train_size=400",
        "knn.compare_sklearn=false",
    ]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """`ray start --head` on 127.0.0.1 with 2 CPUs and no GPU; stopped (its process group) at
    the end."""
    temp = tmp_path_factory.mktemp("ray")
    port = _free_port()
    argv = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--num-cpus=2",
        "--num-gpus=0",  # the same cluster on a machine with a GPU
        "--node-ip-address=127.0.0.1",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp}",
    ]
    with open(temp / "head.log", "w") as log:
        # Its own process group, so that the head and everything it started stop together.
        head = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + 120
            while "--block" not in (temp / "head.log").read_text():
                if head.poll() is not None or time.time() > deadline:
                    text = (temp / "head.log").read_text()[-2000:]
                    pytest.fail(f"the Ray head did not start:\n{text}")
                time.sleep(0.5)
            yield f"127.0.0.1:{port}"
        finally:
            _stop_group(head)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group we started, then SIGKILL whatever of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def _trial_figures(folder: Path) -> tuple[float, float]:
    """A trial's objective and test figure read from its own run-folder files."""
    val = json.loads((folder / "stages" / "knn_validation.json").read_text())["metrics"]
    metrics = json.loads((folder / "metrics.json").read_text())
    return val["val_accuracy"], metrics["stages"]["knn"]["accuracy"]


def test_sweep_on_a_cluster_by_address(ray_head, small_mnist, tmp_path):
    from digitlab.sweep import run_sweep

    out = tmp_path / "sweep"
    said: list[str] = []
    result = run_sweep(
        ["knn.k=1,5"],
        seeds="0-1",
        metric="knn.val_accuracy",
        preset="quick",
        overrides=base_words(small_mnist),
        out=out,
        address=ray_head,
        resume=True,  # into a folder with no sweep: said, then a whole new sweep
        say=said.append,
    )
    assert said[0] == f"no sweep in {out.resolve()} to resume: starting a new one there"
    assert result.complete and len(result.records) == 4
    assert all(r["status"] == "done" for r in result.records)
    # Tune's own Ctrl-C handler is not left behind: after a sweep from Python, Ctrl-C (and
    # SIGTERM) interrupt as before.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    for r in result.records:
        folder = out / "trials" / r["name"]
        for name in ("config.json", "metrics.json", "report.html", "trial.json"):
            assert (folder / name).is_file(), (folder, name)
        cfg = json.loads((folder / "config.json").read_text())
        assert cfg["knn"]["k"] == r["settings"]["knn.k"] and cfg["seed"] == r["seed"]
    summary = json.loads((out / "sweep.json").read_text())
    for config in summary["configs"]:
        k = config["settings"]["knn.k"]
        figures = [_trial_figures(out / "trials" / f"knn.k={k}_seed={s}") for s in range(2)]
        val = np.array([f[0] for f in figures])
        test = np.array([f[1] for f in figures])
        o = config["objective"]
        assert o["n"] == 2 and o["mean"] == pytest.approx(val.mean())
        assert o["std"] == pytest.approx(val.std(ddof=1))
        assert (o["min"], o["max"]) == (pytest.approx(val.min()), pytest.approx(val.max()))
        half = sps.t.ppf(0.975, 1) * val.std(ddof=1) / np.sqrt(2)
        # Student's interval, clipped to what an accuracy can be.
        assert o["ci_low"] == pytest.approx(max(val.mean() - half, 0.0))
        assert o["ci_high"] == pytest.approx(min(val.mean() + half, 1.0))
        assert config["test"]["mean"] == pytest.approx(test.mean())
    means = {c["settings"]["knn.k"]: c["objective"]["mean"] for c in summary["configs"]}
    best = summary["configs"][summary["best"]]["settings"]["knn.k"]
    assert means[best] == max(means.values())  # chosen on validation
    page = (out / "sweep.html").read_text()
    assert all(f'href="trials/{r["name"]}/report.html"' in page for r in result.records)
    assert "https://" not in page and "data:image/png;base64," in page
    assert len((out / "trials.csv").read_text().splitlines()) == 5


def _wait(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_lost_worker_is_retried_and_an_interrupted_sweep_resumes(ray_head, small_mnist, tmp_path):
    out = tmp_path / "sweep"
    argv = [
        str(BIN / "digitlab"),
        "sweep",
        "knn.k=1,3,5,7",
        "--metric",
        "knn.val_accuracy",
        "--preset",
        "quick",
        *base_words(small_mnist),
        "--address",
        ray_head,
        "--cpus-per-trial",
        "2",  # one trial at a time
        "--out",
        str(out),
    ]
    driver = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Kill the worker process running the first trial as soon as it has started.
        first = _wait(lambda: sorted(out.glob("trials/*/attempts.jsonl")), 120, "a first trial")[0]
        os.kill(json.loads(first.read_text().splitlines()[0])["pid"], signal.SIGKILL)
        # Tune retries it in the same sweep (FailureConfig). As that retry starts, the driver
        # itself is killed: the hardest interruption, with some trials finished and some not.
        _wait(lambda: len(first.read_text().splitlines()) >= 2, 240, "the lost trial's retry")
        driver.kill()
        output, _ = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("trials/*/trial.json")}
    assert first.parent.name not in finished and len(finished) < 4, output
    attempts = {
        name: len((out / "trials" / name / "attempts.jsonl").read_text().splitlines())
        for name in finished
    }

    from digitlab.sweep import run_sweep

    result = run_sweep(
        ["knn.k=1,3,5,7"],
        metric="knn.val_accuracy",
        preset="quick",
        overrides=base_words(small_mnist),
        out=out,
        address=ray_head,
        cpus_per_trial=2,
        resume=True,
    )
    assert result.complete
    assert sorted(r["settings"]["knn.k"] for r in result.records) == [1, 3, 5, 7]
    assert all(r["status"] == "done" for r in result.records)
    for name, mtime in finished.items():  # finished trials were not rerun
        assert (out / "trials" / name / "trial.json").stat().st_mtime_ns == mtime
        lines = (out / "trials" / name / "attempts.jsonl").read_text().splitlines()
        assert len(lines) == attempts[name]
    retried = next(r for r in result.records if r["name"] == first.parent.name)
    assert retried["attempts"] >= 3  # lost worker, retry cut by the interruption, resume


def test_interrupt_says_how_to_resume(ray_head, small_mnist, tmp_path):
    out = tmp_path / "sweep"
    argv = [str(BIN / "digitlab"), "sweep", "knn.k=1,3", "--metric", "knn.val_accuracy",
            "--preset", "quick", *base_words(small_mnist), "--address", ray_head,
            "--cpus-per-trial", "2", "--out", str(out)]  # fmt: skip
    driver = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Ctrl-C as from a terminal: a suite run as a background job hands SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        _wait(lambda: list(out.glob("trials/*/attempts.jsonl")), 120, "a first trial")
        driver.send_signal(signal.SIGINT)  # Ctrl-C while the first trial runs
        output, _ = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, output
    assert "interrupted: " in output and "--resume" in output and "Traceback" not in output


def test_the_local_default_needs_no_address_and_asha_gets_every_epoch(small_mnist, tmp_path):
    from digitlab import sweep

    # The base as a mapping of typed values (the data folder as a Path), as Python users write it.
    base = dict(w.split("=", 1) for w in base_words(small_mnist)[1:])
    out = tmp_path / "local"
    table = sweep(
        ["cnn.lr=1e-5,3e-3"],
        metric="cnn.val_accuracy",
        preset="quick",
        overrides={**base, "data.data_dir": small_mnist, "cnn.epochs": 3},
        asha=True,
        out=out,
    )
    import pandas as pd

    assert isinstance(table, pd.DataFrame) and len(table) == 2
    assert set(table["status"]) <= {"done", "stopped"} and "done" in set(table["status"])
    import ray

    assert not ray.is_initialized()  # the Ray it started is shut down again
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["plan"]["base_overrides"]["data.data_dir"] == str(small_mnist)
    # Each finished trial reported every epoch's validation figure to Tune (ASHA's input),
    # the same figures its run folder's history holds.
    reported = [
        [json.loads(line) for line in p.read_text().splitlines()]
        for p in (out / "ray" / "tune").glob("*/result.json")
    ]
    assert len(reported) == 2
    for r in saved["trials"]:
        if r["status"] != "done":
            continue
        history = json.loads((out / "trials" / r["name"] / "metrics.json").read_text())
        val = history["stages"]["cnn"]["history"]["val_accuracy"]
        assert len(val) == 3 and r["objective"] == val[-1]
        epochs = next(
            [x["objective"] for x in rows if "epoch" in x]
            for rows in reported
            if rows[-1]["config"]["cnn.lr"] == r["settings"]["cnn.lr"]
        )
        assert epochs == val


def _nothing_written(out: Path) -> bool:
    """No plan, trial or Ray state in a refused sweep's folder (at most the claim's record)."""
    return not out.exists() or {p.name for p in out.iterdir()} <= {".digitlab-folder.json"}


def test_a_trial_no_node_can_hold_is_refused_on_a_cluster(ray_head, small_mnist, tmp_path):
    """Ray would keep such a trial pending forever: refused in one line once joined, naming
    what was asked and what the cluster has, before any plan or trial is written."""
    out = tmp_path / "sweep"
    argv = [str(BIN / "digitlab"), "sweep", "knn.k=1,3", "--metric", "knn.val_accuracy",
            "--preset", "quick", *base_words(small_mnist), "--address", ray_head,
            "--gpus-per-trial", "1", "--out", str(out)]  # fmt: skip
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    assert run.stderr == (
        "digitlab: error: a trial asks for 1 CPU and 1 GPU on one node (--cpus-per-trial 1, "
        f"--gpus-per-trial 1), but the Ray cluster at {ray_head} has 2 CPUs and no GPU: Ray "
        "would never start it; ask for less, or add a node that has it\n"
    )
    assert _nothing_written(out)


def test_a_trial_no_node_can_hold_is_refused_on_the_local_default(fake_dir, tmp_path, capsys):
    """The Ray a sweep starts on this machine has its cores and GPUs: more is refused too."""
    from digitlab.cli import main

    out = tmp_path / "sweep"
    argv = ["sweep", "knn.k=1,3", "--metric", "knn.val_accuracy", "--data-dir", str(fake_dir),
            *[f"{s}.train_size=100" for s in ("knn", "sweep", "cnn", "cluster")],
            "--cpus-per-trial", "1000", "--quiet", "--out", str(out)]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.search(
        r"a trial asks for 1000 CPUs on one node \(--cpus-per-trial 1000\), but Ray on this "
        r"machine has \d+ CPUs? and (no GPU|\d+ GPUs?): Ray would never start it",
        err,
    ), err
    assert "join a cluster that has it with --address" in err
    import ray

    assert _nothing_written(out) and not ray.is_initialized()
