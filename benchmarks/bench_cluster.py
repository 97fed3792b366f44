"""k-means: ours vs scikit-learn's KMeans(n_clusters=10, n_init=10), the course's settings.

    python benchmarks/bench_cluster.py [--data-dir DIR] [--threads N] [--seeds 3] [--umap]

Fit on the seeded 20,000-image training subset plus prediction of the 10,000 test images, for
several seeds (times summed, inertias averaged). Last line: one JSON object.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from _common import cpu_line, emit, parser
from digitlab.data import load_dataset, random_subset
from digitlab.kmeans import KMeans
from digitlab.metrics import clustering_report


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--seeds", type=int, default=3, help="random_state values 0..N-1 (default 3)")
    p.add_argument("--umap", action="store_true", help="also time the UMAP + GMM pipeline")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(cpu_line(), flush=True)
    ds = load_dataset("mnist", args.data_dir)
    xtr, _ = random_subset(ds.x_train, ds.y_train, 20000, seed=0)
    X, Q = xtr.reshape(len(xtr), -1), ds.x_test.reshape(len(ds.x_test), -1)
    from sklearn.cluster import KMeans as Reference

    rows = []
    for seed in range(args.seeds):
        row = {"seed": seed}
        for name, make in (
            ("ours", lambda s: KMeans(10, n_init=10, random_state=s)),
            ("reference", lambda s: Reference(10, n_init=10, random_state=s)),
        ):
            start = time.perf_counter()
            model = make(seed).fit(X)
            pred = model.predict(Q)
            row[f"{name}_s"] = time.perf_counter() - start
            row[f"{name}_inertia"] = float(model.inertia_)
            row[f"{name}_consistency"] = clustering_report(ds.y_test, pred)["consistency"]
        rows.append(row)
    print(
        f"{'seed':>4s} {'ours s':>8s} {'sklearn s':>10s} {'ratio':>6s} {'ours inertia':>16s} "
        f"{'sklearn inertia':>16s}"
    )
    for r in rows:
        print(
            f"{r['seed']:4d} {r['ours_s']:8.2f} {r['reference_s']:10.2f} "
            f"{r['reference_s'] / r['ours_s']:6.2f} {r['ours_inertia']:16.6g} "
            f"{r['reference_inertia']:16.6g}"
        )
    ours_s = sum(r["ours_s"] for r in rows)
    ref_s = sum(r["reference_s"] for r in rows)
    inertia_ours = float(np.mean([r["ours_inertia"] for r in rows]))
    inertia_ref = float(np.mean([r["reference_inertia"] for r in rows]))
    print(
        f"total: ours {ours_s:.2f} s, sklearn {ref_s:.2f} s, ratio {ref_s / ours_s:.2f}; mean "
        f"inertia ours {inertia_ours:.6g} vs sklearn {inertia_ref:.6g} "
        f"({(inertia_ours / inertia_ref - 1) * 100:+.4f}%)"
    )
    result = {
        "benchmark": "cluster",
        "ours_s": ours_s,
        "reference_s": ref_s,
        "ratio": ref_s / ours_s,
        "inertia_ours": inertia_ours,
        "inertia_reference": inertia_ref,
        "consistency_ours": float(np.mean([r["ours_consistency"] for r in rows])),
        "consistency_reference": float(np.mean([r["reference_consistency"] for r in rows])),
        "seeds": args.seeds,
        "threads": torch.get_num_threads(),
    }
    if args.umap:
        from digitlab.cluster_experiment import ClusterConfig, run_clustering

        for deskew in (False, True):
            name = "umap_gmm" + ("_deskew" if deskew else "")
            start = time.perf_counter()
            r = run_clustering(ds, ClusterConfig(embedding="umap", method="gmm", deskew=deskew))
            result[f"{name}_s"] = time.perf_counter() - start
            result[f"{name}_accuracy"] = r["accuracy"]
            result[f"{name}_ari"] = r["ari"]
            print(
                f"UMAP + GMM{' on deskewed digits' if deskew else ''}: "
                f"{result[f'{name}_s']:.1f} s, accuracy {r['accuracy']:.4f}, ARI {r['ari']:.4f}"
            )
    emit(result)


if __name__ == "__main__":
    main()
