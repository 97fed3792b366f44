"""The clustering step: cluster, score, and draw the PCA scatter and the cluster centres."""

from __future__ import annotations

from pathlib import Path

from digitlab import figures, plots
from digitlab.cluster_experiment import ClusterConfig, pca_2d, run_clustering
from digitlab.data import Dataset
from digitlab.files import save_metrics
from digitlab.tasks.figures import names

# Per-image arrays of a clustering result: drawn, never written to JSON.
ARRAYS = ("test_clusters", "centre_images")


def cluster(
    ds: Dataset, cfg: ClusterConfig, out_dir: str | Path, metrics_file: str | None = "metrics.json"
) -> dict:
    """Cluster the seeded subset, score it against the labels, draw the figures in `out_dir`.

    Returns `clustering.run_clustering`'s results without the per-image arrays, plus "figures";
    also written to `out_dir/metrics_file` unless that is None.
    """
    result = run_clustering(ds, cfg)
    files = write_cluster_figures(ds, result, out_dir, cfg.seed)
    metrics = {k: v for k, v in result.items() if k not in ARRAYS}
    metrics["figures"] = names(files)
    if metrics_file is not None:
        save_metrics(Path(out_dir) / metrics_file, metrics)
    return metrics


def write_cluster_figures(ds: Dataset, result: dict, out_dir: str | Path, seed: int) -> dict:
    """The PCA scatter of the test images with the centres, and the centre images; returns
    figure key -> path. `result` is what `run_clustering` returned (arrays included)."""
    out_dir = Path(out_dir)
    pca, points = pca_2d(ds, result["config"]["train_size"], seed)
    clusters = result["test_clusters"]
    majority = {int(k): v for k, v in result["majority_label"].items()}
    # Centres in the 2-D view: each cluster's mean image, projected like the test images.
    centres = pca.transform(result["centre_images"].reshape(len(result["centre_images"]), -1))
    return {
        "scatter": plots.save(
            plots.cluster_scatter(points, clusters, ds.y_test, centres, majority, ds.classes),
            out_dir / figures.CLUSTER["scatter"],
        ),
        "centres": plots.save(
            plots.cluster_centres(result["centre_images"], majority, ds.classes),
            out_dir / figures.CLUSTER["centres"],
        ),
    }
