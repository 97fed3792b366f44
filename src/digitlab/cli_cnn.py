"""`digitlab cnn train | eval | predict`."""

from __future__ import annotations

import argparse
from pathlib import Path

from digitlab.cli import add_common, add_data_options, load, say
from digitlab.cli_knn import parse_size


def train_and_save(
    ds, cfg, out: Path, resume: bool, quiet: bool, figures: Path | None = None
) -> dict:
    """Train, evaluate on the test set, save the model and metrics.json in `out`.

    Figures go to `figures` (default: `out`).
    """
    figures = figures or out
    from digitlab import plots
    from digitlab.cnn import predict_proba, save_model, summary
    from digitlab.data import random_subset
    from digitlab.evaluation import evaluate, save_metrics, write_evaluation
    from digitlab.train import train_cnn

    x, y = random_subset(ds.x_train, ds.y_train, cfg.train_size, cfg.seed)
    model, history, info = train_cnn(
        x, y, cfg, checkpoint_dir=out, resume=resume, progress=not quiet
    )
    proba = predict_proba(model, ds.x_test)
    pred = proba.argmax(1)
    report = evaluate(ds.y_test, pred, ds.classes, proba)
    from dataclasses import asdict

    metrics = {
        **report,
        "history": history.as_dict(),
        "train_config": asdict(cfg),
        "training": info,
        "dataset": ds.name,
        "n_train": len(x),
        "summary": summary(model),
    }
    save_model(
        model,
        out / "model",
        {
            k: metrics[k]
            for k in ("accuracy", "f1_macro", "dataset", "train_config", "history", "n_train")
        }
        | {"classes": list(ds.classes)},  # `cnn predict` names its answers with these
    )
    files = write_evaluation(figures, "cnn", report, ds.x_test, ds.y_test, pred, ds.classes)
    files["curves"] = plots.save(
        plots.training_curves(history.as_dict()), figures / "cnn_training_curves.png"
    )
    metrics["figures"] = {k: v.name for k, v in files.items()}
    save_metrics(out / "metrics.json", metrics)
    return metrics


def cmd_train(args: argparse.Namespace) -> int:
    from digitlab.metrics import format_report
    from digitlab.train import TrainConfig

    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        val_fraction=args.val_fraction,
        train_size=args.train_size,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        augment=args.augment,
        lr_schedule=args.lr_schedule,
        channels_last=not args.no_channels_last,
        bf16=args.bf16,
        ema=None if args.no_ema else args.ema,
    )
    ds = load(args)
    cfg.validate(len(ds.x_train))
    out = args.out or Path("cnn-out")
    metrics = train_and_save(ds, cfg, out, args.resume, args.quiet)
    h = metrics["history"]
    say(args, metrics["summary"])
    say(args, f"{'epoch':>5s} {'loss':>8s} {'acc':>8s} {'val_loss':>9s} {'val_acc':>8s} {'s':>6s}")
    for i in range(len(h["loss"])):
        say(
            args,
            f"{i + 1:5d} {h['loss'][i]:8.4f} {h['accuracy'][i]:8.4f} "
            f"{h['val_loss'][i]:9.4f} {h['val_accuracy'][i]:8.4f} "
            f"{h['epoch_seconds'][i]:6.1f}",
        )
    say(args, format_report(metrics))
    say(args, f"wrote the model to {out / 'model'}, metrics.json and figures to {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from digitlab.cnn import load_model, predict_proba
    from digitlab.evaluation import evaluate, save_metrics, write_evaluation
    from digitlab.metrics import format_report

    model = load_model(_model_dir(args.model_dir))
    ds = load(args)
    proba = predict_proba(model, ds.x_test)
    report = evaluate(ds.y_test, proba.argmax(1), ds.classes, proba)
    say(args, format_report(report))
    if args.out:
        write_evaluation(args.out, "cnn", report, ds.x_test, ds.y_test, proba.argmax(1), ds.classes)
        save_metrics(args.out / "metrics.json", report)
        say(args, f"wrote metrics.json and figures to {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import sys

    from digitlab import plots
    from digitlab.cnn import load_model
    from digitlab.image_predict import model_classes, predict_images, recipe_for

    folder = _model_dir(args.model_dir)
    model = load_model(folder)
    classes, dataset = model_classes(folder)
    failed = 0
    # One bad file is one line on stderr; the others are still read; exit 1 at the end.
    for answer in predict_images(
        model, args.images, classes=classes, recipe=recipe_for(dataset, classes)
    ):
        if answer.error is not None:
            print(answer.line(), file=sys.stderr)
            failed += 1
            continue
        print(answer.line(args.top))
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            best, p = answer.top(1)[0]
            plots.save(
                plots.digit(answer.prepared.image, f"as the model saw it: {best} ({p:.0%})"),
                args.out / f"{Path(answer.name).stem}_28x28.png",
            )
    return 1 if failed else 0


def _model_dir(path: Path) -> Path:
    # Accept the training output folder as well as its model/ subfolder.
    return path / "model" if (path / "model" / "config.json").is_file() else path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cnn",
        help="the course's CNN: train, evaluate, predict",
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
    t.add_argument("--epochs", type=int, default=10, help="default: 10")
    t.add_argument("--batch-size", type=int, default=128, help="default: 128")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    t.add_argument("--val-fraction", type=float, default=0.1, help="default: 0.1")
    t.add_argument(
        "--train-size",
        type=parse_size,
        default=20000,
        help="training images (default: 20000; 'all' = 60000)",
    )
    t.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    t.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: measured at start, 1 or all cores)",
    )
    t.add_argument("--augment", action="store_true", help="random shifts and rotations")
    t.add_argument(
        "--lr-schedule",
        default="constant",
        help="constant (the course) or cosine (decay to 0 over the run)",
    )
    t.add_argument(
        "--no-channels-last",
        action="store_true",
        help="keep the NCHW memory layout (channels-last is faster on CPU here)",
    )
    t.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16 autocast (faster only on CPUs with AVX512-BF16/AMX or GPUs)",
    )
    t.add_argument(
        "--ema",
        type=float,
        default=0.95,
        metavar="DECAY",
        help="save a moving average of the weights with this per-step decay (default: 0.95)",
    )
    t.add_argument(
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
    e.add_argument("model_dir", type=Path, help="folder written by `cnn train` (or its model/)")
    add_data_options(e)
    e.add_argument("--out", type=Path, default=None, help="also write metrics and figures here")
    e.add_argument("--quiet", action="store_true", help="print nothing but errors")
    e.set_defaults(func=cmd_eval)

    r = csub.add_parser(
        "predict",
        help="read digits from image files (top classes)",
        description="Turn each image into an MNIST-style 28x28 (crop, fit 20x20, "
        "centre by mass) and print the CNN's top classes.",
    )
    r.add_argument("model_dir", type=Path, help="folder written by `cnn train` (or its model/)")
    r.add_argument("images", type=Path, nargs="+", help="PNG/JPEG files, any size")
    r.add_argument("--top", type=int, default=3, help="classes to show (default: 3)")
    r.add_argument("--out", type=Path, default=None, help="save each 28x28 the model saw here")
    r.set_defaults(func=cmd_predict)
