"""`digitlab cluster`."""

from __future__ import annotations

import argparse
from pathlib import Path

from digitlab.cli import add_common, load, say
from digitlab.cli_knn import parse_size


def write_cluster_outputs(ds, result: dict, out: Path, seed: int) -> dict[str, Path]:
    """The PCA scatter pair and the centre images; returns the files written."""
    from digitlab import plots
    from digitlab.clustering import pca_2d

    cfg = result["config"]
    pca, points = pca_2d(ds, cfg["train_size"], seed)
    clusters = result["test_clusters"]
    majority = {int(k): v for k, v in result["majority_label"].items()}
    # Centres in the 2-D view: each cluster's mean image, projected like the test images.
    centres = pca.transform(result["centre_images"].reshape(len(result["centre_images"]), -1))
    return {
        "scatter": plots.save(
            plots.cluster_scatter(points, clusters, ds.y_test, centres, majority, ds.classes),
            out / "cluster_pca_scatter.png",
        ),
        "centres": plots.save(
            plots.cluster_centres(result["centre_images"], majority, ds.classes),
            out / "cluster_centres.png",
        ),
    }


def cmd_cluster(args: argparse.Namespace) -> int:
    from digitlab.clustering import ClusterConfig, run_clustering
    from digitlab.evaluation import save_metrics

    cfg = ClusterConfig(
        embedding=args.embedding,
        method=args.method,
        deskew=args.deskew,
        n_clusters=args.n_clusters,
        n_init=args.n_init,
        train_size=args.train_size,
        seed=args.seed,
        pca_components=args.pca_components,
        device=args.device,
        threads=args.threads,
    )
    ds = load(args)
    result = run_clustering(ds, cfg)
    out = args.out or Path("cluster-out")
    files = write_cluster_outputs(ds, result, out, args.seed)
    metrics = {k: v for k, v in result.items() if k not in ("test_clusters", "centre_images")}
    metrics["figures"] = {k: v.name for k, v in files.items()}
    save_metrics(out / "metrics.json", metrics)
    say(
        args,
        f"{cfg.method} with {cfg.n_clusters} clusters on {cfg.embedding} features of "
        f"{'deskewed ' if cfg.deskew else ''}"
        f"{result['n_train']} training images; scores on {result['n_test']} test images "
        f"({result['timing']['total_s']:.1f} s)",
    )
    for key, label in (
        ("consistency", "consistency (the course's score)"),
        ("purity", "purity"),
        ("accuracy", "accuracy (Hungarian matching)"),
        ("ari", "adjusted Rand index"),
        ("nmi", "normalised mutual information"),
        ("ami", "adjusted mutual information"),
        ("homogeneity", "homogeneity"),
        ("completeness", "completeness"),
        ("v_measure", "V-measure"),
        ("silhouette", "silhouette (sample)"),
    ):
        if key in result:
            say(args, f"  {label:34s} {result[key]:.4f}")
    mapping = ", ".join(f"{j}→{ds.classes[d]}" for j, d in sorted(result["majority_label"].items()))
    say(args, f"  cluster → most likely digit: {mapping}")
    if "inertia" in result:
        say(args, f"  inertia {result['inertia']:.6g} after {result['n_iter']} iterations")
    say(args, f"wrote {out / 'metrics.json'} and {len(files)} figures in {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cluster",
        help="k-means (or a Gaussian mixture) on raw, PCA or UMAP features",
        description="Cluster a seeded training subset without labels, assign the test images, "
        "and score the clusters against the true digits: the course's consistency, "
        "purity, Hungarian-matched accuracy, ARI, NMI/AMI, homogeneity, "
        "completeness, V-measure, silhouette. Writes metrics.json and figures.",
    )
    p.add_argument(
        "--embedding",
        choices=("raw", "pca", "umap"),
        default="raw",
        help="features to cluster: raw pixels (the course), PCA, or UMAP (needs digitlab[umap])",
    )
    p.add_argument(
        "--method",
        choices=("kmeans", "gmm"),
        default="kmeans",
        help="k-means (the course) or a Gaussian mixture",
    )
    p.add_argument(
        "--deskew",
        action="store_true",
        help="straighten every digit by its image moments before embedding (no labels used)",
    )
    p.add_argument("--n-clusters", type=int, default=10, help="number of clusters (default: 10)")
    p.add_argument("--n-init", type=int, default=10, help="restarts, best kept (default: 10)")
    p.add_argument(
        "--train-size",
        type=parse_size,
        default=20000,
        help="training images to cluster (default: 20000; 'all' = 60000)",
    )
    p.add_argument(
        "--pca-components",
        type=int,
        default=50,
        help="components for --embedding pca (default: 50)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    add_common(p, "output folder (default: cluster-out)")
    p.set_defaults(func=cmd_cluster)
