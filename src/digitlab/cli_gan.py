"""`digitlab gan train | generate | interpolate | evaluate`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from digitlab.cli import add_data_options, load, say
from digitlab.errors import DataError
from digitlab.shipped import CNN as SHIPPED_CNN
from digitlab.shipped import GENERATOR as SHIPPED

__all__ = ["SHIPPED", "SHIPPED_CNN"]


def _generator(path: Path | None):
    from digitlab.gan import load_generator

    if path is None:
        if not (SHIPPED / "config.json").is_file():
            raise DataError(
                "this version of digitlab ships no trained generator yet; train one "
                "with `digitlab gan train --out DIR` and pass --model DIR/generator"
            )
        path = SHIPPED
    if (path / "generator" / "config.json").is_file():  # the training output folder
        path = path / "generator"
    return load_generator(path)


def cmd_train(args: argparse.Namespace) -> int:
    import numpy as np

    from digitlab.gan import save_generator
    from digitlab.gan_train import GANTrainConfig, train_gan

    cfg = GANTrainConfig(
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        channels_last=not args.no_channels_last,
        bf16=args.bf16,
        reuse_fakes=not args.fresh_noise_for_generator,
        max_steps=args.max_steps,
    )
    cfg.validate()
    ds = load(args)
    # The course trains on all 70,000 digits, training and test images together.
    images = np.concatenate([ds.x_train, ds.x_test])
    labels = np.concatenate([ds.y_train, ds.y_test])
    out = args.out or Path("gan-out")

    quality_log: list[dict] = []
    classifier = None
    best_dir = out / "generator-best"
    best = -1.0
    if args.keep_best and args.resume and (best_dir / "metadata.json").is_file():
        best = json.loads((best_dir / "metadata.json").read_text())["quality"][
            "conditional_accuracy"
        ]
    if args.log_quality or args.keep_best:
        from digitlab.cnn import load_model

        classifier = load_model(SHIPPED_CNN)
        previous = out / "generator" / "metadata.json"
        if args.resume and previous.is_file():
            quality_log = json.loads(previous.read_text()).get("quality_per_epoch", [])

    def keep_latest(epoch, generator, history):
        nonlocal best
        # The generator of every finished epoch is usable at once, even if training stops.
        meta = {
            "epochs": epoch + 1,
            "history": history.__dict__,
            "dataset": ds.name,
            "seed": args.seed,
        }
        if classifier is not None:
            from digitlab.gan_metrics import evaluate_generator

            q = evaluate_generator(generator, classifier, ds.x_test, per_digit=100)
            quality_log.append({"epoch": epoch + 1, **q})
            meta["quality_per_epoch"] = quality_log
            say(
                args,
                f"epoch {epoch + 1}: conditional accuracy {q['conditional_accuracy']:.3f}, "
                f"Fréchet distance {q['frechet']:.1f} (floor {q['frechet_real_vs_real']:.1f})",
            )
            if args.keep_best and q["conditional_accuracy"] > best:
                # GAN quality does not rise steadily; keep the best epoch as well as the last.
                best = q["conditional_accuracy"]
                save_generator(generator, best_dir, {**meta, "quality": q})
        save_generator(generator, out / "generator", meta)
        generator.train()

    g, history, info = train_gan(
        images,
        labels,
        cfg,
        out,
        resume=args.resume,
        progress=not args.quiet,
        on_epoch=keep_latest,
    )
    save_generator(
        g,
        out / "generator",
        {
            "steps": info["steps"],
            "epochs": info["steps"] / info["steps_per_epoch"],
            "history": history.__dict__,
            "dataset": ds.name,
            "seed": args.seed,
            **({"quality_per_epoch": quality_log} if quality_log else {}),
        },
    )
    say(
        args,
        f"trained {info['steps']} steps ({info['steps'] / info['steps_per_epoch']:.2f} "
        f"epochs); generator saved to {out / 'generator'}, sample grids in "
        f"{out / 'samples'}",
    )
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from digitlab import plots
    from digitlab.gan import generate, generate_grid

    g = _generator(args.model)
    if args.digit is None:
        images = generate_grid(g, per_class=args.count, seed=args.seed, centre=not args.no_centre)
        titles = None
        out = args.out or Path("generated-grid.png")
        ncols = args.count
    else:
        images = generate(g, args.digit, args.count, seed=args.seed, centre=not args.no_centre)
        titles = [str(args.digit)] * len(images)
        out = args.out or Path(f"generated-{args.digit}.png")
        ncols = min(10, args.count)
    plots.save(plots.digits_grid(images, titles, ncols=ncols), out)
    say(args, f"wrote {out}")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from digitlab import plots
    from digitlab.gan import interpolate, write_gif

    g = _generator(args.model)
    frames = interpolate(
        g, args.start, args.end, steps=args.steps, seed=args.seed, centre=not args.no_centre
    )
    out = args.out or Path(f"morph-{args.start}-{args.end}.gif")
    write_gif(frames, out, size=args.size, fps=args.fps)
    strip = out.with_suffix(".png")
    plots.save(plots.digits_grid(frames, None, ncols=len(frames)), strip)
    say(args, f"wrote {out} and {strip}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from digitlab.cli_cnn import _model_dir
    from digitlab.cnn import load_model
    from digitlab.gan_metrics import evaluate_generator

    g = _generator(args.model)
    classifier = load_model(_model_dir(args.classifier) if args.classifier else SHIPPED_CNN)
    ds = load(args)
    r = evaluate_generator(g, classifier, ds.x_test, args.per_digit, args.seed)
    for name, q in (("as generated (centred by mass)", r), ("raw network output", r["raw"])):
        print(
            f"{name}: conditional accuracy {q['conditional_accuracy']:.4f} ("
            + ", ".join(f"{d}: {p:.2f}" for d, p in q["per_digit"].items())
            + f"), Fréchet distance {q['frechet']:.2f}"
        )
        for d, row in enumerate(q["confusion"]):
            wrong = max((c for c in range(len(row)) if c != d), key=lambda c: row[c])
            if row[wrong] > 0.1 * sum(row):  # say what a weak digit is mistaken for
                print(f"  digit {d} is read as {wrong} in {row[wrong] / sum(row):.0%} of images")
    print(f"real vs real Fréchet distance (the floor): {r['frechet_real_vs_real']:.2f}")
    if args.json is not None:
        from digitlab.evaluation import save_metrics

        save_metrics(args.json, r)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gan",
        help="the conditional GAN: train, generate, interpolate, evaluate",
        description="Train the course's conditional GAN, draw digits of a chosen "
        "class, morph one digit into another, and measure quality.",
    )
    gsub = p.add_subparsers(dest="gan_command", required=True, metavar="ACTION")

    t = gsub.add_parser(
        "train",
        help="train on all 70,000 digits (resumable)",
        description="Train the conditional GAN (Adam 3e-4, batch 64, all 70,000 "
        "digits). A checkpoint is written every 200 steps and at "
        "each epoch end, with a fixed-noise grid of every digit.",
    )
    t.add_argument("--epochs", type=int, default=20, help="default: 20")
    t.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    t.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    t.add_argument(
        "--no-channels-last",
        action="store_true",
        help="keep NCHW (channels-last measured 1.6x faster on CPU here)",
    )
    t.add_argument(
        "--fresh-noise-for-generator",
        action="store_true",
        help="draw new noise for the generator step as keras.io does (a quarter more compute "
        "per step) instead of reusing the discriminator step's generated batch",
    )
    t.add_argument(
        "--log-quality",
        action="store_true",
        help="after each epoch, read 1,000 generated digits with the shipped CNN and log the "
        "conditional accuracy and Fréchet distance (kept in the generator's metadata)",
    )
    t.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16 autocast (faster on CPUs with AVX512-BF16 or AMX, and on GPUs)",
    )
    t.add_argument(
        "--keep-best",
        action="store_true",
        help="also keep the epoch whose generator the shipped CNN reads best, in "
        "OUT/generator-best (implies --log-quality)",
    )
    t.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    t.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    t.add_argument("--out", type=Path, default=None, help="output folder (default: gan-out)")
    t.add_argument("--quiet", action="store_true", help="print nothing but errors")
    add_data_options(t)
    t.set_defaults(func=cmd_train)

    def no_centre_option(q):
        q.add_argument(
            "--no-centre",
            action="store_true",
            help="keep the network's raw output (default: centre each digit by mass, as MNIST)",
        )

    def model_option(q):
        q.add_argument(
            "--model",
            type=Path,
            default=None,
            help="a saved generator (default: the one shipped with digitlab)",
        )
        q.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
        q.add_argument("--quiet", action="store_true", help="print nothing but errors")

    g = gsub.add_parser(
        "generate",
        help="draw digits of a class (or a grid of all)",
        description="Generate --count images of --digit, or a grid of every "
        "digit when --digit is left out.",
    )
    g.add_argument("--digit", type=int, default=None, help="0-9 (default: a grid of all)")
    g.add_argument("--count", type=int, default=6, help="images (per digit for a grid)")
    g.add_argument("--out", type=Path, default=None, help="PNG file to write")
    no_centre_option(g)
    model_option(g)
    g.set_defaults(func=cmd_generate)

    i = gsub.add_parser(
        "interpolate",
        help="morph one digit into another (GIF + PNG strip)",
        description="Hold the noise fixed and blend the one-hot labels from START to END.",
    )
    i.add_argument("start", type=int, help="first digit")
    i.add_argument("end", type=int, help="last digit")
    i.add_argument("--steps", type=int, default=9, help="frames (default: 9)")
    i.add_argument("--fps", type=float, default=6, help="GIF frame rate (default: 6)")
    i.add_argument("--size", type=int, default=112, help="GIF size in pixels (default: 112)")
    i.add_argument("--out", type=Path, default=None, help="GIF file to write")
    no_centre_option(i)
    model_option(i)
    i.set_defaults(func=cmd_interpolate)

    e = gsub.add_parser(
        "evaluate",
        help="conditional accuracy and Fréchet distance",
        description="Generate digits of every class, read them with a trained "
        "CNN, and compare CNN features of real and generated "
        "images.",
    )
    e.add_argument(
        "--classifier",
        type=Path,
        default=None,
        help="a CNN saved by `digitlab cnn train` (default: the shipped one, 99.55%% on the "
        "test set)",
    )
    e.add_argument("--per-digit", type=int, default=500, help="images per digit (default: 500)")
    e.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    add_data_options(e)
    model_option(e)
    e.set_defaults(func=cmd_evaluate)
