"""The `digitlab` command line: one subcommand per task, a thin layer over the Python API.

`main(argv)` is callable from tests. Our own errors become one line on stderr and exit code 1;
usage errors exit 2 (argparse's convention).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from digitlab.errors import ConfigError, DigitlabError


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset", default="mnist", help="mnist, fashion-mnist or kmnist (default: mnist)"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder with the four IDX files or <dataset>.npz; default: $DIGITLAB_DATA, "
        "else the cache, else download",
    )


def add_common(p: argparse.ArgumentParser, out_help: str, seed: bool = True) -> None:
    """The options every command spells the same way."""
    add_data_options(p)
    if seed:
        p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--out", type=Path, default=None, help=out_help)
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")


def load(args: argparse.Namespace):
    from digitlab.data import load_dataset

    return load_dataset(args.dataset, args.data_dir, quiet=args.quiet)


def say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text)


# ----- data -------------------------------------------------------------------------------


def cmd_data_info(args: argparse.Namespace) -> int:
    ds = load(args)
    info = ds.summary()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    lines = [f"{ds.name} (from {ds.source})"]
    for split in ("train", "test"):
        s = info[split]
        lines.append(
            f"  {split:5s} images {tuple(s['images_shape'])} {s['images_dtype']}, "
            f"labels {tuple(s['labels_shape'])} {s['labels_dtype']}, "
            f"pixels {s['pixel_min']}..{s['pixel_max']} (mean {s['pixel_mean']})"
        )
    lines.append("  class   " + " ".join(f"{c[:7]:>7s}" for c in ds.classes))
    for split in ("train", "test"):
        lines.append(f"  {split:5s}   " + " ".join(f"{n:7d}" for n in info[split]["class_counts"]))
    say(args, "\n".join(lines))
    return 0


def cmd_data_show(args: argparse.Namespace) -> int:
    from digitlab import plots

    ds = load(args)
    x, y = (ds.x_test, ds.y_test) if args.split == "test" else (ds.x_train, ds.y_train)
    if not 0 <= args.index < len(x):
        raise ConfigError(
            f"--index must be in 0..{len(x) - 1} for the {args.split} split, got {args.index}"
        )
    label = ds.classes[int(y[args.index])]
    out = args.out or Path(f"{ds.name}-{args.split}-{args.index}.png")
    plots.save(plots.digit(x[args.index], f"{args.split}[{args.index}]: label {label}"), out)
    say(args, f"wrote {out} ({args.split} image {args.index}, label {label})")
    return 0


def cmd_data_gallery(args: argparse.Namespace) -> int:
    import numpy as np

    from digitlab import plots

    ds = load(args)
    x, y = (ds.x_test, ds.y_test) if args.split == "test" else (ds.x_train, ds.y_train)
    if args.count < 1:
        raise ConfigError(f"--count must be at least 1, got {args.count}")
    if args.digit is None:  # one row per class
        rng = np.random.default_rng(args.seed)
        idx = np.concatenate(
            [
                rng.choice(np.flatnonzero(y == c), size=args.count, replace=False)
                for c in range(len(ds.classes))
            ]
        )
        name = f"{ds.name}-gallery.png"
        ncols = args.count
    else:
        if not 0 <= args.digit < len(ds.classes):
            raise ConfigError(f"--digit must be in 0..{len(ds.classes) - 1}, got {args.digit}")
        members = np.flatnonzero(y == args.digit)
        if args.random:
            members = np.sort(np.random.default_rng(args.seed).permutation(members))
        idx = members[: args.count]
        name = f"{ds.name}-{args.digit}-gallery.png"
        ncols = min(args.count, 10)
    titles = [f"#{i}: {ds.classes[int(y[i])]}" for i in idx]
    out = args.out or Path(name)
    plots.save(plots.digits_grid(x[idx], titles, ncols=ncols), out)
    say(args, f"wrote {out} ({len(idx)} {args.split} images)")
    return 0


# ----- parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from digitlab import __version__

    parser = argparse.ArgumentParser(
        prog="digitlab",
        description="The MNIST machine-learning course as software: data, kNN, CNN, "
        "clustering, GAN.",
    )
    parser.add_argument("--version", action="version", version=f"digitlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser(
        "data",
        help="inspect and view the dataset",
        description="Inspect the dataset and draw its digits.",
    )
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    p = dsub.add_parser(
        "info",
        help="shapes, dtypes, pixel range and per-class counts",
        description="Print shapes, dtypes, pixel range and per-class counts of both splits.",
    )
    add_data_options(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_data_info)

    p = dsub.add_parser(
        "show",
        help="draw one digit to a PNG",
        description="Draw one image, titled with its label, to a PNG file.",
    )
    add_common(p, "PNG file to write (default: <dataset>-<split>-<index>.png)", seed=False)
    p.add_argument("--index", type=int, required=True, help="image index within the split")
    p.add_argument(
        "--split", choices=("train", "test"), default="train", help="which split (default: train)"
    )
    p.set_defaults(func=cmd_data_show)

    p = dsub.add_parser(
        "gallery",
        help="draw several digits of a class (or of every class)",
        description="Draw --count images of --digit (the first ones, or seeded "
        "random ones with --random), or --count of every class.",
    )
    add_common(p, "PNG file to write (default: <dataset>-<digit>-gallery.png)")
    p.add_argument("--digit", type=int, default=None, help="class to show (default: all)")
    p.add_argument("--count", type=int, default=8, help="images per class (default: 8)")
    p.add_argument("--random", action="store_true", help="seeded random images, not the first")
    p.add_argument(
        "--split", choices=("train", "test"), default="train", help="which split (default: train)"
    )
    p.set_defaults(func=cmd_data_gallery)

    from digitlab import cli_cluster, cli_cnn, cli_gan, cli_knn, cli_run, cli_sweep

    cli_run.register(sub)
    cli_run.register_app(sub)
    cli_knn.register(sub)
    cli_cnn.register(sub)
    cli_cluster.register(sub)
    cli_gan.register(sub)
    cli_sweep.register(sub)
    return parser


def _terminated(signum, frame):
    # `kill`, a scheduler or a container stop sends SIGTERM: stop as Ctrl-C does, through the
    # same clean-up (checkpoints are written atomically, so the last one stays valid).
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return int(args.func(args) or 0)
    except DigitlabError as exc:
        print(f"digitlab: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("digitlab: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
