"""The sweep engine: 8 small kNN trials one after another in one process, then through
`digitlab sweep` on Ray with 1 worker and with 2 workers.

    python benchmarks/bench_sweep.py [--data-dir DIR] [--trials 8] [--train-size 5000]

Every trial is the same real work in all three ways: a run folder with the knn stage (k = 1..8,
seed 0, a seeded training subset, all 10,000 test images, figures and report) plus the
validation accuracy the sweep optimises. Ray is started once beforehand (its start-up is
printed apart); the sweeps reuse it. Per-trial Ray overhead = (1-worker sweep - sequential) /
trials. The last line is JSON: ours_s = the 2-worker sweep, reference_s = sequential,
ratio = reference_s / ours_s (the speed-up from running on Ray with two workers).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import emit, parser
from digitlab.data import load_dataset


def cpu_line() -> str:
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
        flags = next((ln for ln in out.splitlines() if ln.startswith("Flags:")), "")
        wanted = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
                  if f" {f}" in flags]  # fmt: skip
    except OSError:
        wanted = []
    return (
        f"# {model or platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"flags {' '.join(wanted) or '?'}, torch {torch.__version__} "
        f"({torch.backends.cpu.get_cpu_capability()})"
    )


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--trials", type=int, default=8, help="kNN trials, k = 1..N (default: 8)")
    p.add_argument("--train-size", type=int, default=5000, help="training subset (default: 5000)")
    args = p.parse_args()
    print(cpu_line())
    try:
        load = os.getloadavg()[0]
        print(f"# load average {load:.1f} on {os.cpu_count()} CPUs (a shared machine: noise)")
    except OSError:
        pass
    import ray

    from digitlab.sweep import adapter, run_sweep

    ds = load_dataset("mnist", args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    np.savez(work / "mnist.npz", x_train=ds.x_train, y_train=ds.y_train,
             x_test=ds.x_test, y_test=ds.y_test)  # fmt: skip
    n = args.train_size
    base = {
        "data.data_dir": work,
        "knn.train_size": n,
        "sweep.train_size": n,
        "cnn.train_size": n,
        "cluster.train_size": n,
        "knn.compare_sklearn": False,
    }
    ks = list(range(1, args.trials + 1))
    space = [f"knn.k={','.join(map(str, ks))}"]
    metric = "knn.val_accuracy"

    # 1. One after another in this process, one thread (a trial's share of one core).
    torch.set_num_threads(1)
    cfg = adapter.resolve_base("quick", None, base)
    start = time.perf_counter()
    sequential = {}
    for k in ks:
        flat = adapter.run_trial(
            cfg, {"knn.k": k, "seed": 0}, work / "sequential" / f"k{k}", ["knn"], metric, 1
        )
        sequential[k] = flat[metric]
    t_seq = time.perf_counter() - start

    # Ray once, with as many CPUs as this machine has; the sweeps reuse it.
    start = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    t_ray = time.perf_counter() - start
    times, values = {}, {}
    try:
        for workers in (1, 2):
            start = time.perf_counter()
            result = run_sweep(
                space,
                metric=metric,
                preset="quick",
                overrides=base,
                stages=["knn"],
                out=work / f"ray-{workers}",
                cpus_per_trial=1,
                max_concurrent=workers,
            )
            times[workers] = time.perf_counter() - start
            values[workers] = {r["settings"]["knn.k"]: r["objective"] for r in result.records}
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    same = all(values[w] == sequential for w in (1, 2))
    overhead = (times[1] - t_seq) / len(ks)
    speedup = times[1] / times[2]
    print(f"{'way':28s} {'seconds':>8s} {'per trial':>10s}")
    print(f"{'sequential, one process':28s} {t_seq:8.2f} {t_seq / len(ks):10.2f}")
    print(f"{'sweep, 1 worker':28s} {times[1]:8.2f} {times[1] / len(ks):10.2f}")
    print(f"{'sweep, 2 workers':28s} {times[2]:8.2f} {times[2] / len(ks):10.2f}")
    print(f"Ray start (once, not in the rows above): {t_ray:.2f} s")
    print(f"Ray overhead per trial (1 worker - sequential): {overhead:+.2f} s")
    print(f"speed-up from the second worker: {speedup:.2f}x (target 1.7x on 2 cores)")
    print(f"sequential / 2-worker sweep: {t_seq / times[2]:.2f}x; same validation figures: {same}")
    emit(
        {
            "benchmark": "sweep",
            "ours_s": times[2],
            "reference_s": t_seq,
            "ratio": t_seq / times[2],
            "one_worker_s": times[1],
            "speedup_2_workers": speedup,
            "ray_overhead_per_trial_s": overhead,
            "ray_start_s": t_ray,
            "trials": len(ks),
            "train_size": n,
            "same_validation_figures": same,
        }
    )


if __name__ == "__main__":
    main()
