"""`digitlab sweep`: many runs of the course on Ray, with statistics over seeds."""

from __future__ import annotations

import argparse
from pathlib import Path

from digitlab.cli.commands import COMMANDS
from digitlab.cli.common import folder_arg, interrupted_code, out_arg
from digitlab.errors import DigitlabError
from digitlab.files import check_writable, shown_name
from digitlab.run_config import PRESETS, STAGES, parse_overrides
from digitlab.sweep import run_sweep, split_words
from digitlab.sweep.adapter import METRICS
from digitlab.sweep.space import MAX_TRIALS
from digitlab.sweep.stats import chosen_line


def _names(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def cmd_sweep(args: argparse.Namespace) -> int:

    # Swept words go to the search space; single values set the base run, and the flags win
    # over them (as in `digitlab run`), their values typed as given (a path keeps every
    # character).
    check_writable(args.out)  # before Ray starts or any trial runs
    space, words = split_words(args.words)
    overrides: dict[str, object] = parse_overrides(words)
    for key, value in (
        ("data.data_dir", args.data_dir),
        ("data.dataset", args.dataset),
        ("device", args.device),
    ):
        if value is not None:
            overrides[key] = value
    result = run_sweep(
        space,
        metric=args.metric,
        mode=args.mode,
        seeds=args.seeds,
        preset=args.preset,
        config=args.config,
        overrides=overrides,
        stages=_names(args.stages),
        search=args.search,
        trials=args.trials,
        search_seed=args.search_seed,
        asha=args.asha,
        max_failures=args.max_failures,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent,
        out=args.out,
        address=args.address,
        resume=args.resume,
        quiet=args.quiet,
    )
    s = result.summary
    # Trials ASHA stopped early are a result, not a failure.
    failed = [r for r in result.records if r["status"] == "failed"]
    if not args.quiet:
        best = result.best
        if best is not None:
            print(chosen_line(s, best))
        print(f"open {shown_name(result.paths['html'])}")
    if not result.complete:
        import sys

        done = sum(r["status"] == "done" for r in result.records)
        print(
            f"digitlab: interrupted: {done} of {s['n_planned']} trials finished; run the same "
            "command with --resume to finish the others",
            file=sys.stderr,
        )
        return interrupted_code()
    if failed:
        raise DigitlabError(
            f"{len(failed)} of {len(result.records)} trials did not finish "
            f"({failed[0]['name']}: {failed[0].get('error') or failed[0]['status']}); "
            f"see {result.paths['html']}"
        )
    return 0


class _Intermixed(argparse.ArgumentParser):
    """Settings words may come before, between or after the options (argparse's intermixed
    parsing; a plain parser stops reading positionals at the first option)."""

    _mixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._mixing:
            return super().parse_known_args(args, namespace)
        self._mixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._mixing = False


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser(
        "sweep",
        help=COMMANDS["sweep"].help,
        description="Run a search space over a base run on Ray Tune: every trial is a normal "
        "run folder in OUT/trials/, chosen on a validation metric with its test figure beside "
        "it. Words KEY=V1,V2 (a grid) or KEY=LO..HI[:log][:N] (a range) are swept; KEY=VALUE "
        "sets the base run. Needs digitlab[sweep].",
        epilog="examples: digitlab sweep knn.k=1,3,5,7 --seeds 0-2 --metric knn.val_accuracy "
        "knn.train_size=5000 | digitlab sweep cnn.ema=none,0.95 --seeds 0-11 --metric "
        "cnn.val_accuracy | digitlab sweep cnn.lr=1e-4..1e-2:log --search optuna --trials 20 "
        "--metric cnn.val_accuracy --asha --address auto",
    )
    p.__class__ = _Intermixed
    p.add_argument(
        "words",
        nargs="*",
        metavar="KEY=VALUES",
        help="swept: knn.k=1,3,5,7  cnn.ema=none,0.95  cnn.lr=1e-4..1e-2:log[:5]; "
        "base settings: knn.train_size=5000",
    )
    p.add_argument(
        "--metric",
        required=True,
        help=f"the validation objective: {', '.join(METRICS)}",
    )
    p.add_argument("--mode", default=None, help="max or min (default: the metric's own)")
    p.add_argument(
        "--seeds",
        default="0",
        help="values of the run's seed every configuration runs on, e.g. 0-11 or 0,3,7 "
        f"(default: 0); a sweep runs at most {MAX_TRIALS:,} trials (configurations x seeds)",
    )
    p.add_argument("--preset", default="course", choices=tuple(PRESETS), help="the base preset")
    p.add_argument("--config", type=Path, default=None, help="a TOML file of base settings")
    p.add_argument(
        "--stages",
        default=None,
        help=f"stages every trial runs ({','.join(STAGES)}; default: those the metric and "
        "the swept settings need)",
    )
    p.add_argument(
        "--search",
        default="grid",
        help="grid (every configuration), random or optuna (TPE); default: grid",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=None,
        help=f"random/optuna: settings to sample (random: each on every seed; at most "
        f"{MAX_TRIALS:,} trials in all)",
    )
    p.add_argument("--search-seed", type=int, default=0, help="seed of the random/TPE sampler")
    p.add_argument(
        "--asha",
        action="store_true",
        help="ASHA early stopping (CNN trials report each epoch's validation metric)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="an existing Ray cluster: auto, ray://HOST:PORT or HOST:PORT (default: start Ray "
        "on this machine)",
    )
    p.add_argument(
        "--cpus-per-trial",
        type=_fraction,
        default=1.0,
        help="CPUs each trial holds (fractions allowed; torch threads follow; default: 1)",
    )
    p.add_argument(
        "--gpus-per-trial",
        type=_fraction,
        default=0.0,
        help="GPUs each trial holds, e.g. 0.25: four trials share a GPU (default: 0); "
        "refused when no node of the cluster has this many GPUs beside --cpus-per-trial",
    )
    p.add_argument("--max-concurrent", type=int, default=None, help="cap on trials at once")
    p.add_argument(
        "--max-failures",
        type=int,
        default=2,
        help="retries of a trial whose worker dies (default: 2)",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep in --out")
    p.add_argument("--dataset", default=None, help="mnist, fashion-mnist or kmnist")
    p.add_argument("--data-dir", type=folder_arg, default=None, help="folder with the IDX files")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (default: auto)")
    p.add_argument(
        "--out", type=out_arg, default=Path("runs/sweep"), help="sweep folder (default: runs/sweep)"
    )
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_sweep)
