"""The sweep's parts that need no Ray cluster: the search space, the statistics (against numpy
and scipy), the choice on validation, the files, and bad input as one clear line."""

import json
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import stats as sps

from digitlab.cli import main
from digitlab.errors import ConfigError
from digitlab.sweep import adapter, plan_sweep, split_words
from digitlab.sweep.engine import check_address, trial_name
from digitlab.sweep.outputs import write_outputs
from digitlab.sweep.results import aggregate
from digitlab.sweep.space import parse_seeds, parse_space
from digitlab.sweep.stats import paired, summarize

SMALL = [
    "knn.train_size=300",
    "sweep.train_size=300",
    "cnn.train_size=300",
    "cluster.train_size=300",
    "knn.compare_sklearn=false",
]


def space(words, seeds="0"):
    return parse_space(words, seeds, adapter.setting_type, adapter.coerce_value)


def test_grid_ranges_and_seeds_are_typed():
    s = space(["knn.k=1,3,5,7", "cnn.ema=none,0.95", "cnn.lr=1e-4..1e-2:log:3"], "0-2")
    assert s.grid == {"knn.k": [1, 3, 5, 7], "cnn.ema": [None, 0.95]}
    assert s.seeds == [0, 1, 2]
    np.testing.assert_allclose(s.ranges["cnn.lr"].grid(), np.geomspace(1e-4, 1e-2, 3))
    assert s.n_grid() == 4 * 2 * 3
    points = list(s.grid_points())
    assert len(points) == 24 and len({json.dumps(p) for p in points}) == 24
    assert space(["knn.k=1..4"]).ranges["knn.k"].grid() == [1, 2, 3, 4]  # integers: every one
    assert space(["sweep.ks=1-3,1-5"]).grid == {"sweep.ks": ["1-3", "1-5"]}  # text stays text
    assert parse_seeds("0,3,7") == [0, 3, 7] and parse_seeds("5") == [5]
    assert split_words(
        ["knn.k=1,3", "knn.train_size=500", "cnn.lr=1e-4..1e-2", "sweep.ks='1,3'"]
    ) == (
        ["knn.k=1,3", "cnn.lr=1e-4..1e-2"],
        ["knn.train_size=500", "sweep.ks='1,3'"],
    )


@pytest.mark.parametrize(
    "words, seeds, message",
    [
        (["knn.kk=1,3"], "0", "unknown setting 'knn.kk'; knn settings: k, train_size"),
        (["knnn.k=1,3"], "0", "unknown section 'knnn'"),
        (["knn.k="], "0", "the grid of knn.k is empty"),
        (["knn.k=1,,3"], "0", "the grid of knn.k is empty or has an empty value"),
        (["knn.k=one,two"], "0", "knn.k must be int"),
        (["knn.seed=1,2"], "0", "the seed is the run's, not a stage's"),
        (["cnn.ema=0.9,fast"], "0", "cnn.ema must be a number or 'none'"),
        (["cnn.lr=1e-2..1e-4"], "0", "the range of cnn.lr is empty"),
        (["cnn.lr=-1..1:log"], "0", "a log range needs positive bounds"),
        (["knn.weights=a..b"], "0", "knn.weights is not numeric"),
        (["knn.k=1,3"], "3-1", "cannot read seeds '3-1'"),
        (["data.seed=1,2"], "0", "sweep seeds with --seeds"),
        (["seed=1,2"], "0", "sweep seeds with --seeds"),
        (["threads=1,2"], "0", "unknown setting 'threads'; top-level settings: seed, device"),
    ],
)
def test_bad_space(words, seeds, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        space(words, seeds)


def test_a_range_needs_points_for_a_grid():
    with pytest.raises(ConfigError, match=re.escape("a range needs a number of points")):
        plan_sweep(["cnn.lr=1e-4..1e-2:log"], metric="cnn.val_accuracy", overrides=SMALL)


def test_summary_and_paired_statistics_match_numpy_and_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(0.97, 0.004, 12)
    b = a - rng.normal(0.002, 0.002, 12)
    s = summarize(a)
    half = sps.t.ppf(0.975, 11) * a.std(ddof=1) / np.sqrt(12)
    assert s["n"] == 12 and s["mean"] == pytest.approx(a.mean())
    assert s["std"] == pytest.approx(a.std(ddof=1))
    assert (s["min"], s["max"]) == (a.min(), a.max())
    assert s["ci_low"] == pytest.approx(a.mean() - half) and s["ci_high"] == pytest.approx(
        a.mean() + half
    )
    p = paired(a, b, "max")
    d = a - b
    assert p["mean_diff"] == pytest.approx(d.mean())
    assert p["wins"] == int((d > 0).sum()) and p["wins"] + p["ties"] + p["losses"] == 12
    assert p["wilcoxon_p"] == pytest.approx(sps.wilcoxon(a, b).pvalue)
    assert p["ttest_p"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert paired(a, b, "min")["wins"] == int((d < 0).sum())  # lower is better
    one = summarize([0.5])
    assert one["std"] is None and one["ci_low"] is None and one["mean"] == 0.5
    same = paired([0.9, 0.8], [0.9, 0.8])
    assert same["ties"] == 2 and same["wilcoxon_p"] is None


def _records(values):
    out = []
    for (k, seed), (val, test) in values.items():
        out.append(
            {
                "name": trial_name({"knn.k": k}, seed),
                "status": "done",
                "settings": {"knn.k": k},
                "seed": seed,
                "metric": "knn.val_accuracy",
                "objective": val,
                "test_metric": "knn.accuracy",
                "test": test,
                "metrics": {"knn.val_accuracy": val, "knn.accuracy": test},
                "seconds": 1.0,
                "attempts": 1,
            }
        )
    return out


def _as_written(summary: dict, grid: dict, seeds: list[int]) -> dict:
    """A k grid sweep's summary with the fields sweep.json adds (metric, search, space...)."""
    return {
        **summary,
        "metric": "knn.val_accuracy",
        "mode": "max",
        "test_metric": "knn.accuracy",
        "search": "grid",
        "keys": list(grid),
        "seeds": seeds,
        "space": {"grid": grid, "ranges": {}, "seeds": seeds},
    }


def test_the_choice_is_made_on_validation_never_on_test(tmp_path):
    # k=3 is better on validation, k=1 on the test set: k=3 must be chosen.
    values = {
        (1, 0): (0.90, 0.99),
        (1, 1): (0.91, 0.99),
        (1, 2): (0.89, 0.99),
        (3, 0): (0.93, 0.95),
        (3, 1): (0.92, 0.95),
        (3, 2): (0.94, 0.96),
    }
    records = _records(values)
    summary = aggregate(records, ["knn.k"], "max")
    best = summary["configs"][summary["best"]]
    assert best["settings"] == {"knn.k": 3}
    assert best["objective"]["mean"] == pytest.approx(np.mean([0.93, 0.92, 0.94]))
    (cmp,) = summary["comparisons"]
    assert cmp["objective"]["wins"] == 3 and cmp["seeds"] == [0, 1, 2]
    assert cmp["objective"]["mean_diff"] == pytest.approx(np.mean([0.03, 0.01, 0.05]))
    assert cmp["test"]["wins"] == 0  # the test figure disagrees, and is only shown
    assert aggregate(records, ["knn.k"], "min")["configs"][0]["settings"] == {"knn.k": 1}
    full = _as_written(summary, {"knn.k": [1, 3]}, [0, 1, 2])
    paths = write_outputs(tmp_path, full, records)
    page = paths["html"].read_text()
    assert "http://" not in page and "https://" not in page
    assert page.count('href="trials/knn.k=') == 6 and "data:image/png;base64," in page
    rows = paths["csv"].read_text().splitlines()
    assert rows[0].startswith("trial,status,seed,knn.k,knn.val_accuracy,knn.accuracy")
    assert len(rows) == 7
    assert json.loads(paths["json"].read_text())["best"] == summary["best"]
    assert (tmp_path / "figures" / "metric_vs_knn.k.png").is_file()


def test_trial_names_are_stable_and_distinct():
    assert trial_name({"knn.k": 3}, 0) == "knn.k=3_seed=0"
    assert trial_name({"cnn.ema": None}, 1) == "cnn.ema=none_seed=1"
    a, b = trial_name({"cnn.lr": 1.23456789e-3}, 0), trial_name({"cnn.lr": 1.23456781e-3}, 0)
    assert a != b and a.startswith("cnn.lr=0.00123457_seed=0-")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_address_fails_fast():
    port = _free_port()
    with pytest.raises(ConfigError, match=f"cannot reach a Ray cluster at 127.0.0.1:{port}"):
        check_address(f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="--address must be auto, ray://HOST:PORT"):
        check_address("my-cluster")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["knn.kk=1,3", "--metric", "knn.val_accuracy"], "unknown setting 'knn.kk'"),
        (["knn.k=", "--metric", "knn.val_accuracy"], "the grid of knn.k is empty"),
        (["knn.k=1,3", "--metric", "knn.f1"], "no stage produces the metric 'knn.f1'"),
        (["knn.k=1,3", "--metric", "knn.accuracy"], "knn.accuracy is a test-set figure"),
        (
            ["knn.k=1,3", "--metric", "knn.val_accuracy", "--mode", "best"],
            "--mode must be min or max",
        ),
        (
            ["knn.k=1,3", "--metric", "cnn.val_accuracy", "--stages", "knn"],
            "the metric cnn.val_accuracy comes from the cnn stage, which --stages knn leaves out",
        ),
        (
            ["knn.k=1,3", "--metric", "knn.val_accuracy", "--address", "127.0.0.1:{port}"],
            "cannot reach",
        ),
        (
            [
                "knn.k=1,3",
                "--metric",
                "cnn.val_accuracy",
                "--search",
                "optuna",
                "--trials",
                "3",
                "--seeds",
                "0-2",
            ],
            "--search optuna tunes on one seed",
        ),
        (["knn.k=1,3", "--metric", "knn.val_accuracy", "--search", "random"], "needs --trials N"),
        # ASHA was accepted with a metric reported once per trial, where it did nothing.
        (
            ["knn.k=1,3", "--metric", "knn.val_accuracy", "--asha"],
            "--asha stops trials early on the CNN's per-epoch reports",
        ),
        # More trials than MAX_TRIALS: counted before the configurations are made (3,000,001
        # seeds once took minutes to plan before the sweep started).
        (
            ["knn.k=1,3", "--metric", "knn.val_accuracy", "--seeds", "0-3000000"],
            "--seeds 0-3000000 names 3,000,001 seeds, and every configuration runs on each; "
            "a sweep runs at most 10,000 trials: narrow --seeds",
        ),
        (
            ["knn.k=1,3", "--metric", "knn.val_accuracy", "--seeds", "0-5999"],
            "the sweep would run 12,000 trials (2 configurations x 6,000 seeds); a sweep runs "
            "at most 10,000: narrow the grid or --seeds, or sample it with --search random",
        ),
        (
            ["cnn.batch_size=1..100000", "cnn.lr=1e-4..1e-2:log:3", "--metric", "cnn.val_loss"],
            "the sweep would run 300,000 trials (300,000 configurations x 1 seed)",
        ),
        (
            [
                "cnn.lr=1e-4..1e-2:log",
                "--metric",
                "cnn.val_accuracy",
                "--search",
                "random",
                "--trials",
                "20000",
            ],
            "the sweep would run 20,000 trials (--trials 20,000 x 1 seed); a sweep runs at "
            "most 10,000: lower --trials or narrow --seeds",
        ),
    ],
)
def test_bad_input_is_one_clear_line(argv, message, tmp_path, capsys):
    argv = [a.replace("{port}", str(_free_port())) for a in argv]
    code = main(["sweep", *argv, *SMALL, "--out", str(tmp_path / "s"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "s" / "trials").exists()  # nothing ran


def test_without_ray_the_extra_is_named(monkeypatch, tmp_path, capsys):
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    code = main(
        ["sweep", "knn.k=1,3", "--metric", "knn.val_accuracy", *SMALL, "--out", str(tmp_path / "s")]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "pip install 'digitlab[sweep]'" in err


def test_the_module_is_the_function():
    from digitlab import sweep

    assert callable(sweep) and sweep.run_sweep is not None


def test_digitlab_sweep_is_there_without_importing_ray():
    code = (
        "import sys, digitlab; f = digitlab.sweep; assert callable(f); "
        "from digitlab import sweep; assert sweep is f; "
        "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # neither Ray nor even torch on `import digitlab`


def test_without_ray_a_real_process_names_the_extra(tmp_path):
    # A fresh interpreter in which `import ray` fails as it does when Ray is not installed.
    code = (
        "import sys; sys.modules['ray'] = None; from digitlab.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    argv = ["knn.k=1,3", "--metric", "knn.val_accuracy", *SMALL, "--out", str(tmp_path / "s")]
    out = subprocess.run([sys.executable, "-c", code, "sweep", *argv], capture_output=True,
                         text=True)  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "pip install 'digitlab[sweep]'" in out.stderr


def test_sweep_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "--help"])
    text = capsys.readouterr().out
    assert exit_.value.code == 0
    for word in ("--metric", "--seeds", "--address", "--resume", "digitlab[sweep]"):
        assert word in text
    assert "knn.val_accuracy" in text and "cnn.val_accuracy" in text


def test_settings_are_the_run_configurations():
    # Typed by the same code as `digitlab run`: a value list, none, a text setting, a path.
    assert adapter.coerce_value("cnn.ema", "none") is None
    assert adapter.coerce_value("cnn.ema", "0.95") == 0.95
    assert adapter.coerce_value("sweep.ks", "1-3") == "1-3"
    assert adapter.coerce_value("seed", "7") == 7
    assert adapter.setting_type("cnn.lr") is float and adapter.setting_type("knn.k") is int
    weird = "/tmp/a b/it's \\d"
    plan, base = plan_sweep(
        ["knn.k=1,3"], metric="knn.val_accuracy", overrides={"data.data_dir": weird, "seed": 4}
    )
    assert base.data.data_dir == weird and base.seed == 4
    assert plan.stages == ["knn"] and plan.space.grid == {"knn.k": [1, 3]}
    cfg = adapter.apply_settings(base, {"knn.k": 3, "seed": 2})
    assert (cfg.knn.k, cfg.seed, cfg.stage("knn").seed) == (3, 2, 2) and base.seed == 4
    with pytest.raises(ConfigError, match=r"\[knn\] k \(0\)|k must be"):
        adapter.apply_settings(base, {"knn.k": 0})


@pytest.mark.real_data
def test_knn_validation_matches_the_k_sweep_and_sklearn(mnist):
    from sklearn.neighbors import KNeighborsClassifier

    from digitlab.data import random_subset, stratified_split
    from digitlab.knn_experiment import KNNConfig, run_knn_sweep
    from digitlab.tasks.knn import validate

    cfg = KNNConfig(k=5, train_size=1500, seed=3)
    ours = validate(mnist, cfg, 0.2)
    assert ours["val_accuracy"] == run_knn_sweep(mnist, cfg, [5], 0.2)["val_accuracy"][5]
    x, y = random_subset(mnist.x_train, mnist.y_train, 1500, 3)
    fit, val = stratified_split(y, 0.2, 3)
    ref = KNeighborsClassifier(5, algorithm="brute").fit(x[fit].reshape(len(fit), -1), y[fit])
    expected = np.mean(ref.predict(x[val].reshape(len(val), -1)) == y[val])
    assert ours["val_accuracy"] == pytest.approx(expected)
    assert (ours["n_fit"], ours["n_val"]) == (len(fit), len(val)) == (1200, 300)


@pytest.mark.slow
@pytest.mark.real_data
def test_a_trial_is_a_run_folder_with_epoch_reports(mnist_dir, tmp_path):
    # The pipeline's own per-epoch callback (no patching): each epoch's validation figures,
    # the same as the history the run folder records.
    base = adapter.resolve_base(
        "quick", overrides={"data.data_dir": mnist_dir, "cnn.train_size": 600, "cnn.epochs": 2}
    )
    seen = []
    flat = adapter.run_trial(
        base,
        {"cnn.batch_size": 64, "seed": 2},
        tmp_path / "t",
        ["cnn"],
        "cnn.val_accuracy",
        threads=1,
        on_epoch=lambda stage, epoch, figures: seen.append((stage, epoch, figures)),
    )
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    history = metrics["stages"]["cnn"]["history"]
    assert [(s, e) for s, e, _ in seen] == [("cnn", 0), ("cnn", 1)]
    assert [f["cnn.val_accuracy"] for _, _, f in seen] == history["val_accuracy"]
    assert [f["cnn.val_loss"] for _, _, f in seen] == history["val_loss"]
    assert flat["cnn.val_accuracy"] == history["val_accuracy"][-1]
    assert flat["cnn.accuracy"] == metrics["stages"]["cnn"]["accuracy"]
    assert config["seed"] == 2 and config["cnn"]["batch_size"] == 64
    assert config["cnn"]["threads"] == 1  # the trial's CPU share
    assert (tmp_path / "t" / "report.html").is_file()


def test_sizes_are_checked_against_the_data_before_ray_starts(fake_dir, tmp_path, capsys):
    pytest.importorskip("ray.tune")
    # 200 training images: a 5,000-image subset fails in one line, before any trial runs.
    argv = ["sweep", "knn.k=1,3", "--metric", "knn.val_accuracy", "--data-dir", str(fake_dir),
            "knn.train_size=5000", "--out", str(tmp_path / "s")]  # fmt: skip
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "train_size must be in 1..200" in err and not (tmp_path / "s").exists()
    import ray

    assert not ray.is_initialized()


def test_another_commands_folder_is_refused_before_ray_starts(fake_dir, tmp_path, capsys):
    """A sweep's --out holds the sweep alone: another command's folder is one line, left as
    it was, and no trial runs (a sweep once wrote its plan and trials beside a knn's output)."""
    pytest.importorskip("ray.tune")
    knn = tmp_path / "knn"
    assert main(["knn", "--data-dir", str(fake_dir), "--train-size", "100", "--quiet",
                 "--out", str(knn)]) == 0  # fmt: skip
    before = sorted(p.name for p in knn.iterdir())
    argv = ["sweep", "knn.k=1,3", "--metric", "knn.val_accuracy", "--data-dir", str(fake_dir),
            *[w.replace("300", "100") for w in SMALL], "--out", str(knn)]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds the output of `digitlab knn`" in err
    assert sorted(p.name for p in knn.iterdir()) == before
    import ray

    assert not ray.is_initialized()


def test_the_trial_cap_is_checked_before_planning():
    """The count is worked out, not listed: a cap check that made the configurations first
    would take minutes (and memory) on these before refusing them."""
    from digitlab.sweep.space import MAX_TRIALS

    start = time.perf_counter()
    for seeds, words in (("0-10**15", ["knn.k=1,3"]), ("0", ["cnn.batch_size=1..10000000000"])):
        with pytest.raises(ConfigError, match=f"at most {MAX_TRIALS:,}"):
            plan_sweep(words, seeds=seeds.replace("10**15", str(10**15)),
                       metric="knn.val_accuracy", overrides=SMALL)  # fmt: skip
    with pytest.raises(ConfigError, match="the seed list names 10,001 seeds"):
        plan_sweep(["knn.k=1,3"], seeds=range(10_001), metric="knn.val_accuracy", overrides=SMALL)
    assert time.perf_counter() - start < 5
    # At the cap itself, planning is still quick: each seed is checked once, not once per
    # configuration (100 configurations x 100 seeds were 10,000 full checks).
    start = time.perf_counter()
    plan, _ = plan_sweep(["knn.k=1..100"], seeds="0-99", metric="knn.val_accuracy",
                         overrides=["knn.train_size=3000"])  # fmt: skip
    assert plan.n_planned() == MAX_TRIALS and time.perf_counter() - start < 5


@pytest.mark.parametrize(
    "words, metric, message",
    [
        # The kNN objective splits the knn stage's subset by sweep.val_fraction.
        (
            ["knn.train_size=300", "sweep.train_size=none", "sweep.val_fraction=0.001"],
            "knn.val_accuracy",
            "sweep.val_fraction 0.001 holds out 0 of 300 training images, but the validation "
            "split needs at least one of each of the 10 classes: raise sweep.val_fraction (to "
            "at least 0.0317) or knn.train_size (the objective knn.val_accuracy splits the knn "
            "stage's images)",
        ),
        # The k sweep splits its own subset.
        (
            ["sweep.train_size=300", "sweep.val_fraction=0.02"],
            "sweep.val_accuracy",
            "[sweep] val_fraction 0.02 holds out 6 of 300 training images, but the validation "
            "split needs at least one of each of the 10 classes: raise val_fraction (to at "
            "least 0.0317) or train_size",
        ),
        (
            ["sweep.train_size=300", "sweep.ks=1", "sweep.val_fraction=0.99"],
            "sweep.val_accuracy",
            "[sweep] val_fraction 0.99 leaves 3 of 300 training images to fit on",
        ),
    ],
)
def test_a_split_that_cannot_be_made_is_refused_before_the_data_loads(
    words, metric, message, tmp_path, capsys
):
    # The data folder does not exist: reading it would fail with another message.
    argv = ["sweep", "knn.k=1,3", "--metric", metric, *SMALL, *words,
            "--data-dir", str(tmp_path / "no-data"), "--out", str(tmp_path / "s")]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()
    # `digitlab run` checks the k sweep's split with the same code, before its data too.
    if metric == "sweep.val_accuracy":
        from digitlab.run_config import load_config, validate_config

        with pytest.raises(ConfigError, match=re.escape(message)):
            validate_config(load_config("course", None, words))


def test_a_trial_no_node_can_hold_is_named():
    """Ray places one trial's CPUs and GPUs on one node: the cluster's total does not count
    (shapes as ray.nodes() lists them; a real cluster's refusal is in test_sweep_ray)."""
    from digitlab.sweep.engine import resource_problem

    nodes = [{"CPU": 8.0, "memory": 1e9}, {"CPU": 8.0}, {"CPU": 2.0, "GPU": 1.0}]
    assert resource_problem({"CPU": 2, "GPU": 1}, nodes) is None
    assert resource_problem({"CPU": 8, "GPU": 0}, nodes) is None
    assert resource_problem({"CPU": 0.5, "GPU": 0.25}, nodes) is None  # shares of one GPU
    # 18 CPUs and a GPU in all, but no node has 4 CPUs beside its GPU, nor 16 CPUs.
    message = resource_problem({"CPU": 4, "GPU": 1}, nodes, where="the Ray cluster at h:1")
    assert message == (
        "a trial asks for 4 CPUs and 1 GPU on one node (--cpus-per-trial 4, --gpus-per-trial "
        "1), but the Ray cluster at h:1 has 3 nodes: 8 CPUs and no GPU (x2), 2 CPUs and 1 GPU: "
        "Ray would never start it; ask for less, or add a node that has it"
    )
    assert "16 CPUs on one node (--cpus-per-trial 16)" in resource_problem({"CPU": 16}, nodes)
    one = resource_problem({"CPU": 1, "GPU": 1}, [{"CPU": 2.0}], where="Ray on this machine")
    assert "Ray on this machine has 2 CPUs and no GPU:" in one
    # An autoscaling cluster may add a node that holds it: the trial waits for it, as it should.
    gpu_node = {"CPU": 16.0, "GPU": 4.0}
    assert resource_problem({"CPU": 4, "GPU": 1}, nodes, [gpu_node]) is None
    assert "its autoscaler adds nodes of 16 CPUs and 4 GPUs" in resource_problem(
        {"CPU": 4, "GPU": 8}, nodes, [gpu_node]
    )


def test_a_plain_run_cannot_write_into_a_sweeps_folder(fake_dir, tmp_path, capsys):
    """A sweep's trials are its own: `digitlab run --out` on a trial (or anywhere in the sweep's
    folder) is refused in one line and leaves the trial as it was; the sweep still makes its
    trials there (a plain run once replaced a trial's results, and the statistics with them)."""
    from digitlab.folders import claim

    small = [w.replace("300", "100") for w in SMALL]
    base = adapter.resolve_base("quick", None, [f"data.data_dir={fake_dir}", *small])
    sweep_dir = tmp_path / "sweep"
    with claim(sweep_dir, "sweep"):  # as run_sweep marks it
        pass
    trial = sweep_dir / "trials" / trial_name({"knn.k": 3}, 0)
    adapter.run_trial(base, {"knn.k": 3, "seed": 0}, trial, ["knn"], "knn.val_accuracy", 1)
    before = {p: p.read_bytes() for p in trial.rglob("*") if p.is_file()}
    errors = {}
    for out in (trial, sweep_dir / "trials" / "mine", sweep_dir):
        argv = ["run", "--stages", "knn", "--data-dir", str(fake_dir), *small, "knn.k=5",
                "--quiet", "--out", str(out)]  # fmt: skip
        assert main(argv) == 1, out
        errors[out] = capsys.readouterr().err
        assert errors[out].count("\n") == 1 and "Traceback" not in errors[out], errors[out]
        assert "holds the output of `digitlab sweep`" in errors[out], errors[out]
    assert errors[trial] == (
        f"digitlab: error: {trial} lies inside {sweep_dir}, which holds the output of "
        "`digitlab sweep`: only its own trials run there; choose an --out outside it\n"
    )
    assert {p: p.read_bytes() for p in trial.rglob("*") if p.is_file()} == before
    assert not (sweep_dir / "trials" / "mine").exists()


def test_an_accuracy_interval_stays_within_0_and_1():
    """Two seeds at 0.88 and 1.0: Student's interval of the mean reaches 1.0071."""
    from digitlab.sweep.results import aggregate
    from digitlab.sweep.stats import summarize

    assert summarize([0.88, 1.0])["ci_high"] > 1
    clipped = summarize([0.88, 1.0], bounds=(0.0, 1.0))
    assert clipped["ci_high"] == 1.0 and 0 <= clipped["ci_low"] < 0.88
    records = [
        {
            "status": "done",
            "settings": {"knn.k": 3},
            "seed": s,
            "name": f"t{s}",
            "objective": v,
            "test": v,
        }
        for s, v in enumerate([0.88, 1.0])
    ]
    summary = aggregate(records, ["knn.k"], "max", (0.0, 1.0))
    for figure in ("objective", "test"):
        assert summary["configs"][0][figure]["ci_high"] == 1.0


def test_a_sweep_holds_only_the_stages_it_runs_to_the_data(tmp_path):
    """Like a run, a sweep of the knn stage on a small local folder was refused for the
    quick preset's cnn.train_size (5,000 on 300 images)."""
    from conftest import write_fake_idx
    from digitlab.errors import ConfigError
    from digitlab.sweep import adapter

    data = write_fake_idx(tmp_path / "d", n_train=300, n_test=60)
    base = adapter.resolve_base(
        "quick", overrides={"data.data_dir": str(data), "knn.train_size": "all"}
    )
    adapter.check_with_data(base, [{"knn.k": 3}], "knn.val_accuracy", ["knn"])
    with pytest.raises(ConfigError, match=r"\[sweep\] train_size must be in 1..300|\[cnn\]"):
        adapter.check_with_data(base, [{"knn.k": 3}], "knn.val_accuracy")


def test_a_clipped_interval_says_so_in_the_line_the_json_and_the_page(tmp_path):
    """0.88 and 1.0 over two seeds: the t interval reaches 1.0071 and was cut at 1.0 without a
    word: the printed line, sweep.json and sweep.html all showed 1.0000 as if computed."""
    from digitlab.sweep.outputs import sweep_html
    from digitlab.sweep.stats import chosen_line, interval_text

    raw = summarize([0.88, 1.0])
    assert raw["ci_clipped"] is False and raw["ci_unclipped"] == [raw["ci_low"], raw["ci_high"]]
    cut = summarize([0.88, 1.0], bounds=(0.0, 1.0))
    assert cut["ci_clipped"] is True and cut["ci_high"] == 1.0
    assert cut["ci_unclipped"] == [pytest.approx(raw["ci_low"]), pytest.approx(raw["ci_high"])]
    assert summarize([0.9, 0.91], bounds=(0.0, 1.0))["ci_clipped"] is False
    assert summarize([0.9])["ci_clipped"] is False and summarize([])["ci_unclipped"] is None
    low = f"{max(raw['ci_low'], 0.0):.4f}"
    assert interval_text(cut) == f"{low}-1.0000, clipped to the metric's range"
    assert "clipped" not in interval_text(summarize([0.9, 0.91]))
    assert interval_text(summarize([0.9])) is None
    old = {k: v for k, v in cut.items() if k not in ("ci_clipped", "ci_unclipped")}
    assert interval_text(old) == f"{low}-1.0000"  # an older sweep.json: shown as it was

    records = _records({(3, 0): (0.88, 0.97), (3, 1): (1.0, 0.98)})
    summary = aggregate(records, ["knn.k"], "max", (0.0, 1.0))
    full = _as_written(summary, {"knn.k": [3]}, [0, 1])
    best = summary["configs"][summary["best"]]
    assert chosen_line(full, best) == (
        f"chosen on validation: knn.k=3: knn.val_accuracy 0.9400 (95% CI {low}-1.0000, "
        "clipped to the metric's range); knn.accuracy 0.9750 (test, not used to choose)"
    )
    page = sweep_html(full, records, [])
    assert f"(95% CI {low} – 1.0000, clipped to the metric&#39;s range)" in page
    assert f"<td>{low} – 1.0000, clipped</td>" in page
    paths = write_outputs(tmp_path, full, records)
    stored = json.loads(paths["json"].read_text())["configs"][0]["objective"]
    assert stored["ci_clipped"] is True and stored["ci_unclipped"][1] > 1
