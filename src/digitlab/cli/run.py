"""`digitlab run`: the whole course into a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from digitlab.cli.commands import COMMANDS
from digitlab.cli.common import add_quiet, folder_arg, out_arg, seed_arg
from digitlab.files import shown_name
from digitlab.pipeline import run_course
from digitlab.run_config import (
    PRESETS,
    STAGES,
    choose_stages,
    config_toml,
    load_config,
    parse_overrides,
    validate_config,
)
from digitlab.settings import HELP


def _names(text: str | None) -> list[str] | None:
    """The comma-separated names of an option; None when it was not given ("" names none)."""
    return None if text is None else [s.strip() for s in text.split(",") if s.strip()]


def cmd_run(args: argparse.Namespace) -> int:
    """Resolve the settings, check them all, run the stages, print the headline figures."""
    overrides: dict[str, object] = parse_overrides(args.overrides)
    # The command's own flags are typed values, set as they are (a path keeps every character).
    for key, value in (
        ("data.data_dir", args.data_dir),
        ("data.dataset", args.dataset),
        ("seed", args.seed),
        ("device", args.device),
    ):
        if value is not None:
            overrides[key] = value
    cfg = load_config(args.preset, args.config, overrides)
    stages = choose_stages(_names(args.stages), _names(args.skip) or [])
    validate_config(cfg)
    if args.print_config:
        print(config_toml(cfg), end="")
        return 0
    out = args.out or Path("runs") / (cfg.preset or "course")
    metrics = run_course(cfg, out, stages, quiet=args.quiet, force=args.force)
    if not args.quiet:
        print("\n".join(_headlines(metrics["stages"])))
        print(f"open {shown_name(out / 'report.html')}")
    return 0


def _headlines(st: dict) -> list[str]:
    # What a stage did other than asked (the course's own show_index beyond a small local
    # folder, its gallery_digit absent from the data) is said here, not only in its record.
    lines = [
        f"note: [{name}] {note}"
        for name, m in st.items()
        if isinstance(m, dict)
        for note in m.get("notes") or []
    ]
    if "knn" in st:
        lines.append(f"kNN k={st['knn']['config']['k']}: test accuracy {st['knn']['accuracy']:.4f}")
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
    return lines


def register(sub: argparse._SubParsersAction) -> None:
    """Add `run`."""
    p = sub.add_parser(
        "run",
        help=COMMANDS["run"].help,
        description="Run the course: data overview, kNN with full evaluation, the k sweep on a "
        "validation split, the CNN, k-means with PCA views. Writes config, "
        "metrics.json, figures/, models/, run.log and a self-contained report.html. "
        "Finished stages with unchanged settings are reused; an interrupted run "
        "resumes. Settings: a preset, then --config FILE (TOML), then key=value "
        "overrides (anywhere on the line) such as knn.k=5 cnn.epochs=3; "
        "--print-config lists every setting with what it means.",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="settings to change, e.g. knn.k=5 cnn.epochs=3 cluster.embedding=pca "
        "knn.threads=1 cnn.device=cpu",
    )
    p.add_argument(
        "--preset",
        default=None,  # not "course": a run from --config alone is said to be from that file
        choices=tuple(PRESETS),
        help="quick (about a minute), course (the course's settings, default), "
        "full (all 60,000 training images)",
    )
    p.add_argument("--config", type=Path, default=None, help="a TOML file of settings")
    p.add_argument("--stages", default=None, help=f"only these stages ({','.join(STAGES)})")
    p.add_argument("--skip", default=None, help="skip these stages")
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved settings as TOML and exit"
    )
    p.add_argument("--force", action="store_true", help="rerun stages even when unchanged")
    p.add_argument("--dataset", default=None, help=HELP["dataset"])
    p.add_argument("--data-dir", type=folder_arg, default=None, help=HELP["data_dir"])
    p.add_argument("--seed", type=seed_arg, default=None, help=f"{HELP['seed']} (default: 0)")
    p.add_argument("--device", default=None, help=f"every stage's device: {HELP['device']}")
    p.add_argument("--out", type=out_arg, default=None, help="run folder (default: runs/PRESET)")
    add_quiet(p)
    p.set_defaults(func=cmd_run)
