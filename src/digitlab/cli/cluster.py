"""`digitlab cluster`."""

from __future__ import annotations

import argparse

from digitlab.cli.commands import COMMANDS
from digitlab.cli.common import (
    add_common,
    add_compute,
    add_train_size,
    config,
    help_for,
    out_dir,
    prepare,
    say,
)
from digitlab.cluster_experiment import EMBEDDINGS, METHODS, ClusterConfig
from digitlab.commit import outputs_together
from digitlab.files import shown_name
from digitlab.folders import claim
from digitlab.tasks import cluster as cluster_task

# The scores printed, in order, with their names.
SCORES = (
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
)


def cmd_cluster(args: argparse.Namespace) -> int:
    """Cluster, score and draw; print the scores and the cluster -> digit mapping."""
    cfg = config(ClusterConfig, args)
    out = out_dir(args, "cluster-out")
    ds = prepare(args, cfg, out=out, command="cluster")  # settings, output place, then data
    with claim(out, "cluster"), outputs_together(out) as staged:
        result = cluster_task.cluster(ds, cfg, staged)
    say(
        args,
        f"{cfg.method} with {cfg.n_clusters} clusters on {cfg.embedding} features of "
        f"{'deskewed ' if cfg.deskew else ''}"
        f"{result['n_train']} training images; scores on {result['n_test']} test images "
        f"({result['timing']['total_s']:.1f} s)",
    )
    for key, label in SCORES:
        if key in result:
            say(args, f"  {label:34s} {result[key]:.4f}")
    mapping = ", ".join(f"{j}→{ds.classes[d]}" for j, d in sorted(result["majority_label"].items()))
    say(args, f"  cluster → most likely digit: {mapping}")
    if "inertia" in result:
        say(args, f"  inertia {result['inertia']:.6g} after {result['n_iter']} iterations")
    say(
        args,
        f"wrote {shown_name(out / 'metrics.json')} and {len(result['figures'])} figures in "
        f"{shown_name(out)}",
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `cluster`."""
    C = ClusterConfig
    p = sub.add_parser(
        "cluster",
        help=COMMANDS["cluster"].help,
        description="Cluster a seeded training subset without labels, assign the test images, "
        "and score the clusters against the true digits: the course's consistency, "
        "purity, Hungarian-matched accuracy, ARI, NMI/AMI, homogeneity, "
        "completeness, V-measure, silhouette. Writes metrics.json and figures.",
    )
    p.add_argument(
        "--embedding",
        choices=EMBEDDINGS,
        default="raw",
        help=help_for(C, "embedding") + "; umap needs digitlab[umap]",
    )
    p.add_argument("--method", choices=METHODS, default="kmeans", help=help_for(C, "method"))
    p.add_argument("--deskew", action="store_true", help=help_for(C, "deskew", None))
    p.add_argument("--n-clusters", type=int, default=10, help=help_for(C, "n_clusters"))
    p.add_argument("--n-init", type=int, default=10, help=help_for(C, "n_init"))
    add_train_size(p, C)
    p.add_argument("--pca-components", type=int, default=50, help=help_for(C, "pca_components"))
    add_compute(p, C)
    add_common(p, "output folder (default: cluster-out)")
    p.set_defaults(func=cmd_cluster)
