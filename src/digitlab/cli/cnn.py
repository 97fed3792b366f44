"""`digitlab cnn train | eval | predict`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from digitlab.cli.commands import COMMANDS
from digitlab.cli.common import (
    add_common,
    add_compute,
    add_quiet,
    add_train_size,
    check_range,
    config,
    folder_arg,
    help_for,
    number_or_word,
    out_arg,
    out_dir,
    path_arg,
    prepare,
    say,
    say_if_nothing_to_resume,
)
from digitlab.commit import outputs_together
from digitlab.data import get_spec
from digitlab.errors import ConfigError
from digitlab.files import shown_name
from digitlab.folders import claim
from digitlab.image_predict import model_classes
from digitlab.loaders import cnn_folder, load_cnn
from digitlab.metrics import format_report
from digitlab.run_kinds import CNN_RUN
from digitlab.settings import HELP
from digitlab.tasks import cnn as cnn_task
from digitlab.train import CHECKPOINT, History, TrainConfig


def cmd_train(args: argparse.Namespace) -> int:
    """Train, evaluate and save the CNN; print its summary, epochs and test report."""
    cfg = config(
        TrainConfig,
        args,
        channels_last=not args.no_channels_last,
        ema=None if args.no_ema else args.ema,
    )
    out = out_dir(args, "cnn-out")
    ds = prepare(args, cfg, out=out, command="cnn train")  # settings, output place, data
    say_if_nothing_to_resume(args, out / CHECKPOINT)
    shown = 0

    def show_epochs(epoch: int, history: History) -> None:
        # Each epoch's line as it finishes, flushed: `> log` keeps what was done if killed.
        # The header with the first line, so a refused --resume prints only its error.
        nonlocal shown
        if shown == 0:
            names = ("epoch", "loss", "acc", "val_loss", "val_acc", "s")
            say(
                args, " ".join(f"{n:>{w}s}" for n, w in zip(names, (5, 8, 8, 9, 8, 6), strict=True))
            )
        h = history.as_dict()
        for i in range(shown, len(h["loss"])):
            say(
                args,
                f"{i + 1:5d} {h['loss'][i]:8.4f} {h['accuracy'][i]:8.4f} "
                f"{h['val_loss'][i]:9.4f} {h['val_accuracy'][i]:8.4f} "
                f"{h['epoch_seconds'][i]:6.1f}",
            )
        shown = len(h["loss"])

    with claim(out, "cnn train"):  # a second writer of this folder is told who holds it
        metrics = cnn_task.train_and_save(
            ds, cfg, out, args.resume, args.quiet, on_epoch=show_epochs
        )
    if shown == 0:  # every epoch was done before (a resumed, finished run): show the table
        show_epochs(-1, History(**metrics["history"]))
    say(args, metrics["summary"])
    say(args, format_report(metrics))
    say(
        args,
        f"wrote the model to {shown_name(out / 'model')}, metrics.json and figures to "
        f"{shown_name(out)}",
    )
    return 0


# --ema: a decay, or "none" for the last step's weights (as --help and `digitlab run
# cnn.ema=none` say).
ema_arg = number_or_word(float, "none", "a decay in (0, 1) or none")


def cmd_eval(args: argparse.Namespace) -> int:
    """Score a saved CNN on the test set (and write its figures with --out)."""
    model = load_cnn(args.model_dir)
    trained_on = model_classes(cnn_folder(args.model_dir), model.cfg.n_classes)[1]
    if args.dataset is None:
        args.dataset = trained_on or "mnist"  # the dataset the model was trained on
    elif trained_on is not None and get_spec(args.dataset).name != trained_on:
        raise ConfigError(
            f"the model in {args.model_dir} was trained on {trained_on}, not {args.dataset}: "
            f"its scores there would mean nothing; leave out --dataset (or pass "
            f"--dataset {trained_on})"
        )
    ds = prepare(args, out=args.out, command="cnn eval")  # dataset, output place, then data
    if args.out:
        with claim(args.out, "cnn eval"), outputs_together(args.out) as staged:
            report = cnn_task.evaluate_saved(model, ds, staged)
    else:
        report = cnn_task.evaluate_saved(model, ds)
    say(args, format_report(report))
    if args.out:
        say(args, f"wrote metrics.json and figures to {shown_name(args.out)}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Print the CNN's top classes for each image file; one line per unreadable file.

    With --out, the folder holds this invocation's outputs only: each 28x28 the model saw and
    predictions.csv (`tasks.cnn.RECORD_COLUMNS`), replacing an earlier invocation's together."""
    check_range("--top", args.top, 1, 10)
    args.model_dir, args.images = _model_then_images([args.first, *args.images])
    if args.model_dir is None:  # on stderr: stdout stays one answer per picture
        print(
            "digitlab: reading with the shipped CNN (give a `cnn train` folder first to use yours)",
            file=sys.stderr,
        )
    # The model first: a wrong one is refused before --out is claimed (it once left the
    # folder's marker behind). Nothing is read until the answers are taken.
    answers = cnn_task.read_images(args.model_dir, args.images)
    if args.out is None:
        return 1 if _answer(args, answers, None) else 0
    # Written aside and moved in as one commit, the earlier invocation's pictures removed in
    # it: p2 once held x_28x28.png of one run beside 9_font_28x28.png of the next, with no
    # record of which picture gave which.
    together = outputs_together(
        args.out, lambda p: p.name == cnn_task.RECORD or p.name.endswith(cnn_task.SEEN)
    )
    with claim(args.out, "cnn predict"), together as staged:
        failed = _answer(args, answers, staged)
    return 1 if failed else 0


def _answer(args: argparse.Namespace, answers, out: Path | None) -> int:
    """Print each answer (one bad file is one line on stderr; the others are still read);
    with `out`, each 28x28 the model saw and the record go there. Returns the failures."""
    failed = 0
    seen = []
    for answer, name in cnn_task.save_seen(answers, out) if out else ((a, "") for a in answers):
        seen.append((answer, name))
        if answer.error is not None:
            print(answer.line(), file=sys.stderr)
            failed += 1
            continue
        print(answer.line(args.top), flush=True)
        for warning in answer.prepared.warnings:  # worth knowing beside the answer
            print(f"{shown_name(answer.name)}: note: {warning}", file=sys.stderr)
    if out is not None:
        cnn_task.write_record(out, seen)
    return failed


def _model_then_images(paths: list[Path]) -> tuple[Path | None, list[Path]]:
    """(model folder or None for the shipped CNN, image files).

    The first path names the model when it is a folder (a link to one included). A missing
    first path with no suffix, followed by pictures, could be a mistyped model folder as well
    as a picture: it is refused, since reading on with the shipped CNN would answer for a
    model the user did not mean. Anything else is a picture: alone, or with a suffix, or a
    broken link, a missing first path is one "cannot read" line like any other picture's
    and the rest are still read ("photo 1" alone was called a model folder with "no
    pictures after it"). Raises ConfigError for a model folder with no pictures after it,
    and for the ambiguous missing path."""
    first = paths[0]
    if first.is_dir():
        if len(paths) == 1:
            raise ConfigError(_lone_folder(first))
        return first, paths[1:]
    if len(paths) > 1 and not first.suffix and not os.path.lexists(first):
        raise ConfigError(
            f"{first} does not exist: it is neither a saved model folder (`cnn train --out`) "
            "nor a picture; give a model folder first, or the pictures alone"
        )
    return None, paths


def _lone_folder(folder: Path) -> str:
    """What a folder given alone to `cnn predict` is taken for. A folder of pictures was
    called "the model folder", which it was not."""
    name = shown_name(folder)
    if any((folder / place / "config.json").is_file() for place in (".", CNN_RUN.model)):
        return f"no pictures given after the model folder {name}"
    return (
        f"{name} is a folder, not a saved model (no config.json from `cnn train --out`) nor a "
        f"picture: to read the pictures in it, name them (digitlab cnn predict {name}/*.png)"
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add `cnn` and its actions."""
    p = sub.add_parser(
        "cnn",
        help=COMMANDS["cnn"].help,
        description="Train the course's CNN, evaluate a saved one, or read "
        "digits from image files.",
    )
    csub = p.add_subparsers(dest="cnn_command", required=True, metavar="ACTION")

    t = csub.add_parser(
        "train",
        help="train (checkpoint every epoch; --resume continues)",
        description="Train the course CNN (Adam, batch 128, 10 epochs, 10% "
        "validation, seeded 20,000-image subset by default), then "
        "evaluate it on the test set. Writes model/ (safetensors + "
        "config), metrics.json, curves and evaluation figures.",
    )
    T = TrainConfig
    t.add_argument("--epochs", type=int, default=10, help=help_for(T, "epochs"))
    t.add_argument("--batch-size", type=int, default=128, help=help_for(T, "batch_size"))
    t.add_argument("--lr", type=float, default=1e-3, help=help_for(T, "lr"))
    t.add_argument("--val-fraction", type=float, default=0.1, help=help_for(T, "val_fraction"))
    add_train_size(t, T)
    add_compute(
        t, T, "CPU threads (default: $DIGITLAB_THREADS, else timed on the steps: 1 vs all cores)"
    )
    t.add_argument("--augment", action="store_true", help=help_for(T, "augment", None))
    t.add_argument("--lr-schedule", default="constant", help=help_for(T, "lr_schedule"))
    t.add_argument(
        "--no-channels-last",
        action="store_true",
        help="keep the NCHW memory layout (channels-last is faster on CPU here)",
    )
    t.add_argument("--bf16", action="store_true", help=help_for(T, "bf16", None))
    averaging = t.add_mutually_exclusive_group()
    averaging.add_argument(
        "--ema", type=ema_arg, default=0.95, metavar="DECAY", help=help_for(T, "ema")
    )
    averaging.add_argument(
        "--no-ema",
        action="store_true",
        help="save the last step's weights, as Keras does (no averaging)",
    )
    t.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    add_common(t, "output folder (default: cnn-out)")
    t.set_defaults(func=cmd_train)

    e = csub.add_parser(
        "eval",
        help="evaluate a saved model on the test set",
        description="Load a saved CNN and print its test metrics.",
    )
    e.add_argument(
        "model_dir", type=folder_arg, help="folder written by `cnn train` (or its model/)"
    )
    e.add_argument(
        "--dataset",
        default=None,
        help=f"{HELP['dataset']} (default: the one the model was trained on)",
    )
    e.add_argument("--data-dir", type=folder_arg, default=None, help=HELP["data_dir"])
    e.add_argument("--out", type=out_arg, default=None, help="also write metrics and figures here")
    add_quiet(e)
    e.set_defaults(func=cmd_eval)

    r = csub.add_parser(
        "predict",
        help="read digits from image files (top classes)",
        description="Turn each image into an MNIST-style 28x28 (crop, fit 20x20, "
        "centre by mass) and print the CNN's top classes.",
    )
    r.add_argument(
        "first",
        type=path_arg("model folder or picture"),
        metavar="MODEL_DIR|IMAGE",
        help="a folder written by `cnn train` (or its model/); without one, the shipped CNN "
        "reads the pictures",
    )
    r.add_argument(
        "images",
        type=path_arg("picture"),
        nargs="*",
        metavar="IMAGE",
        help="PNG/JPEG files, any size",
    )
    r.add_argument("--top", type=int, default=3, help="classes to show (default: 3)")
    r.add_argument(
        "--out",
        type=out_arg,
        default=None,
        help="folder for each 28x28 the model saw and predictions.csv (which picture gave "
        "which file, its top class or its error); replaced by each run",
    )
    r.set_defaults(func=cmd_predict)
