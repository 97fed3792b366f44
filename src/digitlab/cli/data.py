"""`digitlab data info | show | gallery`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from digitlab.cli.commands import COMMANDS
from digitlab.cli.common import (
    add_common,
    add_data_options,
    add_quiet,
    check_unnamed,
    data_config,
    number_or_word,
    out_file,
    say,
)
from digitlab.data import get_spec
from digitlab.files import one_line, shown_name
from digitlab.plots import check_figure_path
from digitlab.tasks import data as data_task


def cmd_info(args: argparse.Namespace) -> int:
    """Print shapes, dtypes, pixel range and per-class counts (or the same as JSON)."""
    ds = data_task.load(data_config(args), quiet=args.quiet)
    info = ds.summary()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    lines = [f"{ds.name} (from {one_line(str(ds.source))})"]
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


def cmd_show(args: argparse.Namespace) -> int:
    """Draw one image, titled with its label."""
    data = data_config(args)
    name = get_spec(data.dataset).name
    # A name that is no picture format is refused before anything is made or loaded, in the
    # words of `gan generate` (Pillow's traceback came after the drawing; `--out g` was a
    # PNG named g).
    default = Path(f"{name}-{args.split}-{args.index}.png")
    out = out_file(check_figure_path(args.out or default), "data show")
    if args.out is None:  # a user's file of that name is theirs: only our own is replaced
        check_unnamed(out, "data show", "a picture of `data show`")
    ds = data_task.load(data, quiet=args.quiet)
    path, label = data_task.show(ds, args.split, args.index, out)
    say(args, f"wrote {shown_name(path)} ({args.split} image {args.index}, label {label})")
    return 0


def cmd_gallery(args: argparse.Namespace) -> int:
    """Draw several images of one class, or of every class."""
    data = data_config(args)
    n_classes = len(get_spec(data.dataset).classes)
    data_task.check_gallery(n_classes, args.digit, args.count)  # before the data loads
    name = get_spec(data.dataset).name
    default = f"{name}-gallery.png" if args.digit is None else f"{name}-{args.digit}-gallery.png"
    out = out_file(check_figure_path(args.out or Path(default)), "data gallery")
    if args.out is None:
        check_unnamed(out, "data gallery", "a picture of `data gallery`")
    ds = data_task.load(data, quiet=args.quiet)
    path, n = data_task.gallery(ds, args.split, args.digit, args.count, args.random, args.seed, out)
    say(args, f"wrote {shown_name(path)} ({n} {args.split} images)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `data` and its actions."""
    data = sub.add_parser(
        "data",
        help=COMMANDS["data"].help,
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
    add_quiet(p)
    p.set_defaults(func=cmd_info)

    p = dsub.add_parser(
        "show",
        help="draw one digit to a PNG",
        description="Draw one image, titled with its label, to a PNG file.",
    )
    add_common(
        p,
        "picture to write, its format from its suffix: .png, .jpg, .pdf, .svg, ... "
        "(default: <dataset>-<split>-<index>.png)",
        seed=False,
    )
    p.add_argument("--index", type=int, required=True, help="image index within the split")
    p.add_argument(
        "--split", choices=("train", "test"), default="train", help="which split (default: train)"
    )
    p.set_defaults(func=cmd_show)

    p = dsub.add_parser(
        "gallery",
        help="draw several digits of a class (or of every class)",
        description="Draw --count images of --digit (the first ones, or seeded "
        "random ones with --random), or --count of every class.",
    )
    add_common(
        p,
        "picture to write, its format from its suffix: .png, .jpg, .pdf, .svg, ... "
        "(default: <dataset>-<digit>-gallery.png)",
    )
    p.add_argument(
        "--digit", type=_class_or_all, default=None, help="class to show, or all (default: all)"
    )
    p.add_argument("--count", type=int, default=8, help="images per class (default: 8)")
    p.add_argument("--random", action="store_true", help="seeded random images, not the first")
    p.add_argument(
        "--split", choices=("train", "test"), default="train", help="which split (default: train)"
    )
    p.set_defaults(func=cmd_gallery)


# A class number, or "all" (None: every class), as the help's default says.
_class_or_all = number_or_word(int, "all", "a class number or all")
