"""`digitlab run` (the whole course) and `digitlab report RUN_DIR`."""

from __future__ import annotations

import argparse
from pathlib import Path


def _names(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def cmd_run(args: argparse.Namespace) -> int:
    from digitlab.pipeline import (
        choose_stages,
        config_toml,
        load_config,
        run_course,
        validate_config,
    )

    overrides = list(args.overrides)
    if args.data_dir is not None:
        overrides.append(f'data.data_dir="{args.data_dir}"')
    if args.dataset is not None:
        overrides.append(f'data.dataset="{args.dataset}"')
    if args.seed is not None:
        overrides.append(f"data.seed={args.seed}")
    if args.device is not None:
        overrides.append(f'device="{args.device}"')
    cfg = load_config(args.preset, args.config, overrides)
    stages = choose_stages(_names(args.stages), _names(args.skip) or [])
    validate_config(cfg)
    if args.print_config:
        print(config_toml(cfg), end="")
        return 0
    out = args.out or Path("runs") / cfg.preset
    metrics = run_course(cfg, out, stages, quiet=args.quiet, force=args.force)
    if not args.quiet:
        lines = []
        st = metrics["stages"]
        if "knn" in st:
            lines.append(
                f"kNN k={st['knn']['config']['k']}: test accuracy {st['knn']['accuracy']:.4f}"
            )
        if "sweep" in st:
            lines.append(
                f"k chosen on validation: {st['sweep']['chosen_k']} (test accuracy "
                f"{st['sweep']['test_accuracy_at_chosen_k']:.4f})"
            )
        if "cnn" in st:
            lines.append(f"CNN: test accuracy {st['cnn']['accuracy']:.4f}")
        if "cluster" in st:
            lines.append(
                f"k-means: consistency {st['cluster']['consistency']:.4f}, matched "
                f"accuracy {st['cluster']['accuracy']:.4f}"
            )
        print("\n".join(lines))
        print(f"open {out / 'report.html'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from digitlab.report import write_report

    path = write_report(args.run_dir)
    if not args.quiet:
        print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from digitlab.pipeline import PRESETS, STAGES

    p = sub.add_parser(
        "run",
        help="the whole course, end to end, into a run folder with report.html",
        description="Run the course: data overview, kNN with full evaluation, the k sweep on a "
        "validation split, the CNN, k-means with PCA views. Writes config, "
        "metrics.json, figures/, models/, run.log and a self-contained report.html. "
        "Finished stages with unchanged settings are reused; an interrupted run "
        "resumes. Settings: a preset, then --config FILE (TOML), then key=value "
        "overrides such as knn.k=5 cnn.epochs=3.",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="settings to change, e.g. knn.k=5 cnn.epochs=3 cluster.embedding=pca",
    )
    p.add_argument(
        "--preset",
        default="course",
        choices=tuple(PRESETS),
        help="quick (about two minutes), course (the course's settings, default), "
        "full (all 60,000 training images)",
    )
    p.add_argument("--config", type=Path, default=None, help="a TOML file of settings")
    p.add_argument("--stages", default=None, help=f"only these stages ({','.join(STAGES)})")
    p.add_argument("--skip", default=None, help="skip these stages")
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved settings as TOML and exit"
    )
    p.add_argument("--force", action="store_true", help="rerun stages even when unchanged")
    p.add_argument("--dataset", default=None, help="mnist, fashion-mnist or kmnist")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder with the IDX files (default: $DIGITLAB_DATA, cache, download)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (default: 0)")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (default: auto)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/PRESET)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_run)

    r = sub.add_parser(
        "report",
        help="rebuild report.html from a run folder",
        description="Rebuild the self-contained report.html of a run folder.",
    )
    r.add_argument("run_dir", type=Path, help="a folder written by `digitlab run`")
    r.add_argument("--quiet", action="store_true", help="print nothing but errors")
    r.set_defaults(func=cmd_report)


def cmd_app(args: argparse.Namespace) -> int:
    from digitlab import app, app_handlers

    models = app_handlers.load_models(args.data_dir, args.model, args.cnn, args.run)
    for note in models.notes:
        print(f"note: {note}")
    print(f"digitlab app on http://{args.host}:{args.port} (Ctrl-C to stop)")
    app.serve(models, args.host, args.port)
    return 0


def register_app(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "app",
        help="the web app: draw a digit, generate and morph digits",
        description="Start the web app (needs digitlab[app]). It binds to "
        "127.0.0.1 by default and makes no external calls.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument("--data-dir", type=Path, default=None, help="MNIST folder for kNN/browsing")
    p.add_argument(
        "--model", type=Path, default=None, help="a saved generator (default: the shipped one)"
    )
    p.add_argument("--cnn", type=Path, default=None, help="a saved CNN (default: the shipped one)")
    p.add_argument("--run", type=Path, default=None, help="a run folder to show figures from")
    p.set_defaults(func=cmd_app)
