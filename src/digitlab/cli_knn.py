"""`digitlab knn` and `digitlab knn sweep`."""

from __future__ import annotations

import argparse
from pathlib import Path

from digitlab.cli import add_common, load, say


def _add_knn_options(p: argparse.ArgumentParser, k_default: str | int) -> None:
    p.add_argument(
        "--train-size",
        type=parse_size,
        default=20000,
        help="training images, a seeded random subset (default: 20000; 'all' = 60000)",
    )
    p.add_argument(
        "--weights",
        choices=("uniform", "distance"),
        default="uniform",
        help="neighbour votes: uniform (the course) or weighted by 1/distance",
    )
    p.add_argument("--deskew", action="store_true", help="straighten digits by image moments")
    p.add_argument(
        "--pca",
        type=int,
        default=None,
        metavar="N",
        help="project onto N principal components first (fit on training images)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for the search (default: PyTorch's, all cores)",
    )
    p.add_argument(
        "--max-memory-mb",
        type=float,
        default=512,
        help="bound on the distance block held at once (default: 512)",
    )


def parse_size(text: str) -> int | None:
    if text.lower() in ("all", "full"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'all', got {text!r}") from None


def _config(args: argparse.Namespace, k: int):
    from digitlab.experiments import KNNConfig

    return KNNConfig(
        k=k,
        train_size=args.train_size,
        seed=args.seed,
        weights=args.weights,
        deskew=args.deskew,
        pca=args.pca,
        device=args.device,
        threads=args.threads,
        max_memory_mb=args.max_memory_mb,
    )


def cmd_knn(args: argparse.Namespace) -> int:
    from digitlab.evaluation import save_metrics, write_evaluation
    from digitlab.experiments import run_knn
    from digitlab.metrics import format_report

    if args.knn_command == "sweep":
        return cmd_sweep(args)
    ds = load(args)
    result = run_knn(ds, _config(args, args.k))
    out = args.out or Path("knn-out")
    pred = result.pop("predictions")
    result.pop("proba")
    files = write_evaluation(out, "knn", result, ds.x_test, ds.y_test, pred, ds.classes)
    result["figures"] = {k: v.name for k, v in files.items()}
    save_metrics(out / "metrics.json", result)
    say(
        args,
        f"kNN k={args.k} on {result['n_train']} training images, "
        f"{result['n_test']} test images ({result['timing']['total_s']:.1f} s)",
    )
    say(args, format_report(result))
    say(args, f"wrote {out / 'metrics.json'} and {len(files)} figures in {out}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from digitlab import plots
    from digitlab.evaluation import save_metrics
    from digitlab.experiments import parse_k_range, run_knn_sweep

    ks = parse_k_range(args.k)
    ds = load(args)
    result = run_knn_sweep(ds, _config(args, max(ks)), ks, args.val_fraction)
    out = args.out or Path("knn-sweep-out")
    fig = plots.save(
        plots.k_sweep(ks, result["val_accuracy"], result["test_accuracy"], result["chosen_k"]),
        out / "knn_sweep.png",
    )
    result["figures"] = {"sweep": fig.name}
    save_metrics(out / "sweep.json", result)
    say(args, f"{'k':>3s} {'validation':>10s} {'test':>8s}")
    for k in ks:
        mark = "  <- chosen" if k == result["chosen_k"] else ""
        say(
            args,
            f"{k:3d} {result['val_accuracy'][k]:10.4f} {result['test_accuracy'][k]:8.4f}{mark}",
        )
    say(
        args,
        f"chosen k = {result['chosen_k']} by validation accuracy on {result['n_val']} "
        f"held-out training images (test accuracy is reported, never used to choose)",
    )
    say(args, f"wrote {out / 'sweep.json'} and {fig}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "knn",
        help="k-nearest-neighbour classification (and `knn sweep` to tune k)",
        description="Fit kNN on a seeded training subset, evaluate on the test set, write "
        "metrics.json and figures. `digitlab knn sweep` tunes k on a validation "
        "split.",
    )
    p.add_argument("--k", type=int, default=3, help="neighbours that vote (default: 3)")
    add_common(p, "output folder (default: knn-out)")
    _add_knn_options(p, 3)
    p.set_defaults(func=cmd_knn, knn_command=None)
    ksub = p.add_subparsers(dest="knn_command", metavar="ACTION")
    s = ksub.add_parser(
        "sweep",
        help="accuracy for each k, k chosen on a validation split",
        description="Search neighbours once at the largest k, score every k on a stratified "
        "validation split of the training subset, choose k there, and report every "
        "k's test accuracy alongside (never used to choose).",
    )
    s.add_argument("--k", default="1-7", help="k values: 1-7, 1,3,5 or 1-9:2 (default: 1-7)")
    s.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of the training subset held out for validation (default: 0.1)",
    )
    add_common(s, "output folder (default: knn-sweep-out)")
    _add_knn_options(s, "1-7")
    s.set_defaults(func=cmd_knn)
