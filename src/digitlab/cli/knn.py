"""`digitlab knn` and `digitlab knn sweep`."""

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
from digitlab.commit import outputs_together
from digitlab.files import shown_name
from digitlab.folders import claim
from digitlab.knn_experiment import KNNConfig, SweepConfig
from digitlab.metrics import format_report
from digitlab.tasks import knn as knn_task


def cmd_knn(args: argparse.Namespace) -> int:
    """Evaluate kNN at one k: metrics.json and figures in --out."""
    if args.knn_command == "sweep":
        return cmd_sweep(args)
    cfg = config(KNNConfig, args)
    out = out_dir(args, "knn-out")
    ds = prepare(args, cfg, out=out, command="knn")  # settings, output place, then data
    with claim(out, "knn"), outputs_together(out) as staged:
        result = knn_task.evaluate_knn(ds, cfg, staged)
    say(
        args,
        f"kNN k={cfg.k} on {result['n_train']} training images, "
        f"{result['n_test']} test images ({result['timing']['total_s']:.1f} s)",
    )
    say(args, format_report(result))
    say(
        args,
        f"wrote {shown_name(out / 'metrics.json')} and {len(result['figures'])} figures in "
        f"{shown_name(out)}",
    )
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Score every k on a validation split and choose one: sweep.json and its plot in --out."""
    cfg = config(SweepConfig, args, ks=args.k)
    out = out_dir(args, "knn-sweep-out")
    ds = prepare(args, cfg, out=out, command="knn sweep")
    with claim(out, "knn sweep"), outputs_together(out) as staged:
        result = knn_task.sweep(ds, cfg, staged)
    say(args, f"{'k':>3s} {'validation':>10s} {'test':>8s}")
    for k in result["ks"]:
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
    say(
        args,
        f"wrote {shown_name(out / 'sweep.json')} and "
        f"{shown_name(out / result['figures']['sweep'])}",
    )
    return 0


def _add_knn_options(p: argparse.ArgumentParser, cls: type) -> None:
    add_train_size(p, cls)
    p.add_argument(
        "--weights",
        choices=("uniform", "distance"),
        default="uniform",
        help=help_for(cls, "weights"),
    )
    p.add_argument("--deskew", action="store_true", help=help_for(cls, "deskew", None))
    p.add_argument("--pca", type=int, default=None, metavar="N", help=help_for(cls, "pca", None))
    add_compute(p, cls)
    p.add_argument("--max-memory-mb", type=float, default=512, help=help_for(cls, "max_memory_mb"))


def register(sub: argparse._SubParsersAction) -> None:
    """Add `knn` and `knn sweep`."""
    p = sub.add_parser(
        "knn",
        help=COMMANDS["knn"].help,
        description="Fit kNN on a seeded training subset, evaluate on the test set, write "
        "metrics.json and figures. `digitlab knn sweep` tunes k on a validation "
        "split.",
    )
    p.add_argument("--k", type=int, default=3, help=help_for(KNNConfig, "k"))
    add_common(p, "output folder (default: knn-out)")
    _add_knn_options(p, KNNConfig)
    p.add_argument(
        "--compare-sklearn", action="store_true", help=help_for(KNNConfig, "compare_sklearn", None)
    )
    p.set_defaults(func=cmd_knn, knn_command=None)
    ksub = p.add_subparsers(dest="knn_command", metavar="ACTION")
    s = ksub.add_parser(
        "sweep",
        help="accuracy for each k, k chosen on a validation split",
        description="Search neighbours once at the largest k, score every k on a stratified "
        "validation split of the training subset, choose k there, and report every "
        "k's test accuracy alongside (never used to choose).",
    )
    s.add_argument("--k", default="1-7", help=help_for(SweepConfig, "ks"))
    s.add_argument(
        "--val-fraction", type=float, default=0.1, help=help_for(SweepConfig, "val_fraction")
    )
    add_common(s, "output folder (default: knn-sweep-out)")
    _add_knn_options(s, SweepConfig)
    s.set_defaults(func=cmd_knn)
