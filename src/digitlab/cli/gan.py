"""`digitlab gan train | generate | interpolate | evaluate`."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from digitlab.cli.commands import COMMANDS
from digitlab.cli.common import (
    add_compute,
    add_data_options,
    add_out,
    add_quiet,
    add_seed,
    check_unnamed,
    config,
    help_for,
    out_arg,
    out_dir,
    out_file,
    prepare,
    say,
    say_if_nothing_to_resume,
)
from digitlab.files import OutputError, shown_name
from digitlab.folders import claim
from digitlab.gan_train import CHECKPOINT, GANTrainConfig
from digitlab.loaders import load_cnn, load_gan_generator
from digitlab.plots import check_figure_path, check_gif, check_gif_path
from digitlab.tasks import gan as gan_task


def cmd_train(args: argparse.Namespace) -> int:
    """Train the GAN on all 70,000 digits (resumable); the generator is saved every epoch."""
    cfg = config(
        GANTrainConfig,
        args,
        channels_last=not args.no_channels_last,
        reuse_fakes=not args.fresh_noise_for_generator,
    )
    cfg.validate()
    out = out_dir(args, "gan-out")
    ds = prepare(args, out=out, command="gan train")  # settings, output place, then data
    say_if_nothing_to_resume(args, out / CHECKPOINT)
    with claim(out, "gan train"):  # a second writer of this folder is told who holds it
        info = gan_task.train(
            ds,
            cfg,
            out,
            resume=args.resume,
            quiet=args.quiet,
            log_quality=args.log_quality,
            keep_best=args.keep_best,
            say=partial(say, args),
        )
    samples = out / "samples"  # written at each epoch's end: none before the first ends
    grids = f", sample grids in {shown_name(samples)}" if samples.is_dir() else ""
    say(
        args,
        f"trained {info['steps']} steps ({info['steps'] / info['steps_per_epoch']:.2f} "
        f"epochs); generator saved to {shown_name(out / 'generator')}{grids}",
    )
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Draw generated digits of one class, or a grid of every class, to a PNG."""
    gan_task.check_generate(args.digit, args.count)  # before the generator loads
    default = "generated-grid.png" if args.digit is None else f"generated-{args.digit}.png"
    out = out_file(check_figure_path(args.out or Path(default)), "gan generate")
    if args.out is None:  # a name the user did not give replaces only our own picture
        check_unnamed(out, "gan generate", "a picture of `gan generate`")
    g = load_gan_generator(args.model)
    path = gan_task.generate_figure(g, args.digit, args.count, args.seed, out, not args.no_centre)
    say(args, f"wrote {shown_name(path)}")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    """Morph one digit into another: a GIF and its frames as a PNG strip."""
    check_gif(args.size, args.fps)
    gan_task.SamplesConfig(
        interpolate_from=args.start, interpolate_to=args.end, steps=args.steps
    ).validate()
    out = out_file(
        check_gif_path(args.out or Path(f"morph-{args.start}-{args.end}.gif")), "gan interpolate"
    )
    # Every place before anything is written (a folder named like the strip once failed
    # after the GIF was written).
    strip = check_unnamed(
        out.with_suffix(".png"), f"frames of {out.name}", f"the frames of {shown_name(out)}"
    )
    if args.out is None and (out.exists() or out.is_symlink()) and not gan_task.wrote_morph(out):
        raise OutputError(
            f"{shown_name(out)} is already there, and digitlab did not write it (its frames "
            f"{shown_name(strip)} do not name it): it is kept; move it away or name another GIF "
            "with --out"
        )
    g = load_gan_generator(args.model)
    files = gan_task.morph(
        g,
        args.start,
        args.end,
        args.steps,
        out,
        seed=args.seed,
        centre=not args.no_centre,
        size=args.size,
        fps=args.fps,
        strip=strip,
    )
    say(args, f"wrote {shown_name(files[0])} and its frames {shown_name(files[1])}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Print conditional accuracy and Fréchet distance, centred and raw."""
    gan_task.check_count("--per-digit", args.per_digit, gan_task.MAX_PER_DIGIT)
    if args.json is not None:
        out_file(args.json, "gan evaluate")  # before the models load and images are made
    g = load_gan_generator(args.model)
    classifier = load_cnn(args.classifier)
    ds = prepare(args)
    r = gan_task.evaluate(g, classifier, ds, args.per_digit, args.seed, args.json)
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
    if args.per_digit < 100:  # a covariance from fewer images than it has dimensions
        print(
            f"note: Fréchet distances from {r['n_generated']} images are biased upward and "
            "noisy; compare runs at the same --per-digit (500 by default)"
        )
    return 0


def _model_options(q: argparse.ArgumentParser) -> None:
    q.add_argument(
        "--model",
        type=Path,
        default=None,
        help="a saved generator: a `gan train` folder or its generator/ (default: the one "
        "shipped with digitlab)",
    )
    add_seed(q, "noise seed")


def _no_centre_option(q: argparse.ArgumentParser) -> None:
    q.add_argument(
        "--no-centre",
        action="store_true",
        help="keep the network's raw output (default: centre each digit by mass, as MNIST)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add `gan` and its actions."""
    p = sub.add_parser(
        "gan",
        help=COMMANDS["gan"].help,
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
    G = GANTrainConfig
    t.add_argument("--epochs", type=int, default=20, help=help_for(G, "epochs"))
    t.add_argument("--max-steps", type=int, default=None, help=help_for(G, "max_steps"))
    add_compute(t, G)
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
    t.add_argument("--bf16", action="store_true", help=help_for(G, "bf16", None))
    t.add_argument(
        "--keep-best",
        action="store_true",
        help="also keep the epoch whose generator the shipped CNN reads best, in "
        "OUT/generator-best (implies --log-quality)",
    )
    t.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    add_seed(t)
    add_out(t, "output folder (default: gan-out)")
    add_data_options(t)
    t.set_defaults(func=cmd_train)

    g = gsub.add_parser(
        "generate",
        help="draw digits of a class (or a grid of all)",
        description="Generate --count images of --digit, or a grid of every "
        "digit when --digit is left out.",
    )
    g.add_argument("--digit", type=int, default=None, help="0-9 (default: a grid of all)")
    g.add_argument(
        "--count",
        type=int,
        default=6,
        help=f"images (per digit for a grid; at most {gan_task.MAX_FIGURE} in all)",
    )
    g.add_argument(
        "--out",
        type=out_arg,
        default=None,
        help="picture to write, its format from its suffix: .png, .jpg, .pdf, .svg, ...",
    )
    _no_centre_option(g)
    _model_options(g)
    add_quiet(g)
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
    i.add_argument(
        "--out",
        type=out_arg,
        default=None,
        help="GIF file to write; its frames go to the same name with .png, which must be new "
        "or a strip digitlab wrote (another file there is refused, not replaced)",
    )
    _no_centre_option(i)
    _model_options(i)
    add_quiet(i)
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
    e.add_argument(
        "--per-digit",
        type=int,
        default=500,
        help=f"images per digit (default: 500; at most {gan_task.MAX_PER_DIGIT})",
    )
    e.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    add_data_options(e)
    _model_options(e)
    add_quiet(e)
    e.set_defaults(func=cmd_evaluate)
