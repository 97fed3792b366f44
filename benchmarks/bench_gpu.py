"""The GPU path against its targets: kNN, a CNN epoch, GAN steps, the whole course end to end.

    python benchmarks/bench_gpu.py [--data-dir DIR] [--skip-run] [--no-reference]

Targets (one H200, issue 18): exact kNN of the 10,000 test digits against all 60,000 training
digits in under 0.1 s; a CNN epoch on 54,000 images (all 60,000 less 10% validation) in under
1.5 s with the data kept on the GPU; a GAN epoch of 1,094 steps (all 70,000 digits, batch 64)
in under 15 s; `digitlab run --preset full --device cuda` in under 60 s.
The reference is scikit-learn's brute-force kNN on the host CPU (identical predictions
expected). Without a CUDA device every part is skipped and the JSON line says so.
Data: --data-dir, else `.gpu_data/mnist` at the repository root, else the usual places.
Last line: one JSON object (`ours_s` = the kNN time, `ratio` = scikit-learn / ours).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import ROOT, cpu_line, emit, parser
from digitlab.data import load_dataset

TARGETS = {"knn_s": 0.1, "cnn_epoch_s": 1.5, "gan_epoch_s": 15.0, "run_full_s": 60.0}


def sync() -> None:
    torch.cuda.synchronize()


def bench_knn(ds, reference: bool) -> dict:
    from digitlab import neighbors
    from digitlab.neighbors import KNeighborsClassifier

    X, y = ds.x_train.reshape(len(ds.x_train), -1), ds.y_train
    Q = ds.x_test.reshape(len(ds.x_test), -1)
    model = KNeighborsClassifier(3, device="cuda").fit(X, y)
    model.predict(Q[:512])  # CUDA context, kernels, the training matrix on the device
    times = []
    for _ in range(3):
        sync()
        start = time.perf_counter()
        pred = model.predict(Q)  # returns host numpy: includes the copy back
        times.append(time.perf_counter() - start)
    out = {
        "knn_s": min(times),
        "knn_s_all": times,
        "knn_accuracy": float(np.mean(pred == ds.y_test)),
        "knn_kernel": next(iter(model._cache.values())).kernel,
        "knn_fallback_rows": neighbors.LAST_SEARCH["fallback_rows"],
    }
    start = time.perf_counter()
    many = model.predict_many_k(Q, range(1, 8))
    sync()
    out["sweep_1_7_s"] = time.perf_counter() - start
    if reference:
        from sklearn.neighbors import KNeighborsClassifier as Reference

        start = time.perf_counter()
        ref = Reference(3, algorithm="brute").fit(X, y).predict(Q)
        out["knn_reference_s"] = time.perf_counter() - start
        out["knn_identical"] = bool(np.array_equal(pred, ref))
        out["sweep_k3_identical"] = bool(np.array_equal(many[3], ref))
    return out


def bench_cnn(ds) -> dict:
    from digitlab.train import TrainConfig, train_cnn

    cfg = TrainConfig(epochs=4, device="cuda", train_size=None)
    _, h, info = train_cnn(ds.x_train, ds.y_train, cfg, progress=False)
    steady = h.epoch_seconds[1:]  # the first pays cuDNN's autotuning and allocator warm-up
    return {
        "cnn_epoch_s": float(np.median(steady)),
        "cnn_epoch_s_all": h.epoch_seconds,
        "cnn_n_fit": info["n_fit"],
        "cnn_val_accuracy": h.val_accuracy[-1],
    }


def bench_gan(ds) -> dict:
    from digitlab.gan_train import GANTrainConfig, train_gan

    x = np.concatenate([ds.x_train, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_test])
    with tempfile.TemporaryDirectory() as tmp:
        # A short warm-up run (cuDNN autotuning, allocator), then one whole epoch.
        train_gan(x, y, GANTrainConfig(max_steps=20, device="cuda"), tmp + "/w", progress=False)
        start = time.perf_counter()
        _, h, info = train_gan(
            x, y, GANTrainConfig(epochs=1, device="cuda"), tmp + "/e", progress=False
        )
        total = time.perf_counter() - start
    return {
        "gan_epoch_s": h.epoch_seconds[0],
        "gan_steps": info["steps"],
        "gan_steps_per_s": h.steps_per_second[0],
        "gan_epoch_with_checkpoints_and_grid_s": total,
        "gan_d_loss": h.d_loss[0],
        "gan_g_loss": h.g_loss[0],
    }


def bench_run(data_dir: str | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "digitlab", "run", "--preset", "full", "--device", "cuda"]
        cmd += ["--out", str(Path(tmp) / "run")]
        if data_dir:
            cmd += ["--data-dir", data_dir]
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        out = {"run_full_s": seconds, "run_full_rc": done.returncode}
        if done.returncode:
            out["run_full_error"] = (done.stderr or done.stdout)[-2000:]
            return out
        metrics = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
        # Each stage's own seconds, where the run records them.
        out["run_full_stage_s"] = {
            name: stage.get("seconds")
            for name, stage in metrics.items()
            if isinstance(stage, dict) and "seconds" in stage
        }
    return out


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--skip-run", action="store_true", help="skip `digitlab run --preset full`")
    p.add_argument("--no-reference", action="store_true", help="skip scikit-learn's kNN")
    p.add_argument(
        "--only", default="knn,cnn,gan,run", help="comma-separated parts (default: all four)"
    )
    args = p.parse_args()
    local = ROOT / ".gpu_data" / "mnist"
    data_dir = args.data_dir if args.data_dir else (str(local) if local.is_dir() else None)
    if local.is_dir() and not os.environ.get("DIGITLAB_DATA"):
        data_dir = str(local)
    print(cpu_line(), flush=True)
    if not torch.cuda.is_available():
        print("no CUDA device: every GPU benchmark skipped")
        emit(
            {
                "benchmark": "gpu",
                "ours_s": None,
                "reference_s": None,
                "ratio": None,
                "skipped": "no CUDA device",
            }
        )
        return
    props = torch.cuda.get_device_properties(0)
    print(
        f"# GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}; data {data_dir}",
        flush=True,
    )
    ds = load_dataset("mnist", data_dir)
    parts = set(args.only.split(","))
    result: dict = {"gpu": props.name}
    for name, fn in (
        ("knn", lambda: bench_knn(ds, not args.no_reference)),
        ("cnn", lambda: bench_cnn(ds)),
        ("gan", lambda: bench_gan(ds)),
        ("run", lambda: bench_run(data_dir)),
    ):
        if name not in parts or (name == "run" and args.skip_run):
            continue
        start = time.perf_counter()
        try:
            part = fn()
        except Exception as exc:  # report the failure, keep measuring the other parts
            part = {f"{name}_error": f"{type(exc).__name__}: {exc}"}
        result.update(part)
        shown = {k: v for k, v in part.items() if not isinstance(v, (list, dict))}
        print(f"{name} ({time.perf_counter() - start:.0f} s): {shown}", flush=True)
    print(f"{'target':20s} {'measured':>10s} {'target':>8s}  met?")
    for key, limit in TARGETS.items():
        got = result.get(key)
        met = "-" if got is None else ("yes" if got < limit else "NO")
        shown = "-" if got is None else f"{got:.3f}"
        print(f"{key:20s} {shown:>10s} {limit:8.1f}  {met}")
    ref = result.get("knn_reference_s")
    ours = result.get("knn_s")
    emit(
        {
            "benchmark": "gpu",
            "ours_s": ours,
            "reference_s": ref,
            "ratio": ref / ours if ref and ours else None,
            **result,
            "targets": TARGETS,
        }
    )


if __name__ == "__main__":
    main()
