"""What every command shares: the common options, their help, the checks before data loads.

The options are spelled the same everywhere (`--data-dir --dataset --seed --device --threads
--train-size --out --quiet`), their help comes from `settings.HELP`, and every command checks
all of its settings against the dataset's size (known before it loads) through `prepare`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digitlab.errors import ConfigError
from digitlab.files import OutputError, check_writable, check_writable_file, shown_name
from digitlab.folders import refuse_others
from digitlab.run_kinds import RUN_KINDS, runs_in
from digitlab.settings import HELP, describe, set_fields, settable_fields
from digitlab.validation import check_seed

if TYPE_CHECKING:
    from digitlab.data import Dataset
    from digitlab.tasks.data import DataConfig


def parse_size(text: str) -> int | None:
    """A --train-size value: a whole number, or 'all' for every training image (None)."""
    if text.lower() in ("all", "full"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number or 'all', got {text!r}"
        ) from None


def number_or_word(convert: Callable[[str], Any], word: str, expected: str) -> Callable:
    """An argparse type: `word` (any case, spaces around it ignored) is None, anything else
    goes through `convert`; what it cannot read is "`expected`, got '...'"."""

    def parse(text: str):
        if text.strip().lower() == word:
            return None
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{expected}, got {text!r}") from None

    return parse


def help_for(cls: type, name: str, default: Any = argparse.SUPPRESS) -> str:
    """`--help` text of field `name` of config `cls`: its meaning and its default."""
    if default is argparse.SUPPRESS:
        default = getattr(cls(), name)
    shown = "all" if (name == "train_size" and default is None) else default
    text = describe(cls, name)
    return f"{text} (default: {shown})" if shown is not None else text


def path_arg(names: str) -> Callable[[str], Path]:
    """An argparse type for a path to read: `Path(text)`, refusing an empty string with "an
    empty path names no `names`; give a path". Path("") is the current folder, so an unset
    shell variable (`--data-dir "$DATA"`) once quietly searched "." and blamed it."""

    def parse(text: str) -> Path:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"an empty path names no {names}; give a path")
        return Path(text)

    return parse


# --data-dir of every command, and any other folder a command reads.
folder_arg = path_arg("folder")


def add_data_options(p: argparse.ArgumentParser) -> None:
    """--dataset and --data-dir."""
    p.add_argument("--dataset", default="mnist", help=f"{HELP['dataset']} (default: mnist)")
    p.add_argument("--data-dir", type=folder_arg, default=None, help=HELP["data_dir"])


def add_common(p: argparse.ArgumentParser, out_help: str, seed: bool = True) -> None:
    """--dataset, --data-dir, --seed (unless `seed` is False), --out and --quiet."""
    add_data_options(p)
    if seed:
        add_seed(p)
    add_out(p, out_help)


def add_seed(p: argparse.ArgumentParser, text: str = "random seed") -> None:
    """--seed (default 0), checked as it is parsed: nothing runs or is written for a bad one."""
    p.add_argument("--seed", type=seed_arg, default=0, help=f"{text} (default: 0)")


def seed_arg(text: str) -> int:
    """argparse type: a seed NumPy's and PyTorch's generators both take (0..2**63 - 1)."""
    try:
        return check_seed(int(text))
    except (ValueError, ConfigError) as exc:
        message = str(exc) if isinstance(exc, ConfigError) else f"not a whole number: {text!r}"
        raise argparse.ArgumentTypeError(message) from None


def out_arg(text: str) -> Path:
    """argparse type for --out: a path, not an empty string (Path("") is the current folder,
    where `--out ""` from an unset shell variable once wrote a run)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path names no place to write; give a path")
    return Path(text)


def add_out(p: argparse.ArgumentParser, out_help: str) -> None:
    """--out and --quiet."""
    p.add_argument("--out", type=out_arg, default=None, help=out_help)
    add_quiet(p)


def add_quiet(p: argparse.ArgumentParser) -> None:
    """--quiet."""
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")


def add_compute(p: argparse.ArgumentParser, cls: type, threads_help: str | None = None) -> None:
    """--device and --threads of config `cls`."""
    p.add_argument("--device", default="auto", help=help_for(cls, "device"))
    p.add_argument(
        "--threads", type=int, default=None, help=threads_help or help_for(cls, "threads")
    )


def add_train_size(p: argparse.ArgumentParser, cls: type) -> None:
    """--train-size ('all' or a number) of config `cls`."""
    p.add_argument("--train-size", type=parse_size, default=20000, help=help_for(cls, "train_size"))


def config(cls: type, args: argparse.Namespace, **values: Any) -> Any:
    """Config `cls` from the parsed options named like its fields, plus `values`; each value is
    typed against its field (settings.set_fields), so every face fills configs the same way."""
    fields = {
        name: getattr(args, name)
        for name in settable_fields(cls)
        if hasattr(args, name) and name not in values
    }
    return set_fields(cls(), {**fields, **values})


def data_config(args: argparse.Namespace) -> DataConfig:
    """The --dataset/--data-dir of a command, checked (ConfigError for an unknown dataset)."""
    # Imported here, as below: this module is loaded by every command line, `--help` too, and
    # the data task loads NumPy and matplotlib.
    from digitlab.tasks.data import DataConfig

    cfg = DataConfig(dataset=args.dataset, data_dir=str(args.data_dir) if args.data_dir else None)
    cfg.validate()
    return cfg


def prepare(
    args: argparse.Namespace, *configs: Any, out: Path | None = None, command: str | None = None
) -> Dataset:
    """Check every config against the dataset's size before loading it, then load it.

    The one place a command's numeric settings are checked: against the datasets table first
    (nothing is read or written when one is out of range), then against the data as loaded
    (a local folder may hold fewer images). `out`, the command's output folder, is checked
    writable (and, for `command`, not another command's: `folders.refuse_others`) after the
    settings and before the data loads. Raises ConfigError, OutputError or DataError.
    """

    from digitlab.tasks.data import load as load_data

    data = data_config(args)
    n_train = data.validate()
    for cfg in configs:
        cfg.validate(n_train)
    if out is not None:
        check_writable(out)
        if command is not None:
            refuse_others(out, command)
    ds = load_data(data, quiet=getattr(args, "quiet", False))
    for cfg in configs:
        cfg.validate(len(ds.x_train))
    return ds


def say(args: argparse.Namespace, text: str) -> None:
    """Print `text` unless --quiet."""
    if not getattr(args, "quiet", False):
        print(text, flush=True)


def say_if_nothing_to_resume(args: argparse.Namespace, checkpoint: Path) -> None:
    """With --resume and no `checkpoint` there, say the run starts anew (a mistyped --out
    would otherwise silently start over). Raises ConfigError where the folder holds a finished
    model but no checkpoint: --resume once trained a new model over it."""
    # Any run's checkpoint there: this one's resumes, another command's is refused by training.
    folder = checkpoint.parent
    if args.resume and not runs_in(folder):
        if any((folder / kind.model / "config.json").is_file() for kind in RUN_KINDS):
            raise ConfigError(
                f"{folder} holds a finished model but no checkpoint to resume from: --resume "
                "would train a new one over it; leave out --resume to train it again, or "
                "choose another --out"
            )
        say(args, f"no checkpoint in {shown_name(folder)} to resume: starting a new run there")


def out_dir(args: argparse.Namespace, default: str) -> Path:
    """--out, or `default` in the current folder (checked by `prepare(..., out=)`)."""
    return args.out if args.out is not None else Path(default)


def out_file(path: Path, command: str) -> Path:
    """An output file's path, its folder made and checked writable before work; OutputError
    when that folder holds another command's output or a saved model (`gan evaluate --json`
    once replaced the shipped CNN's config.json, and `gan generate` a run's figure)."""
    path = check_writable_file(path)
    refuse_others(path.parent, command, one_file=True)
    return path


#: The signal that stopped the command (SIGINT, SIGTERM), set by the CLI's handler.
last_signal: list[int] = []


def interrupted_code() -> int:
    """The exit code of a command stopped by a signal: 128 + its number, as a shell gives a
    process killed by it (130 for Ctrl-C, 143 for SIGTERM; SIGTERM once also exited 130)."""
    return 128 + (last_signal[0] if last_signal else 2)


def check_unnamed(path: Path, mark: str, what: str) -> Path:
    """`path`, a place the user did not name (a default name, a GIF's frame strip), if it may
    be written: OutputError, before any work, when it is a folder, or a file other than a
    picture digitlab wrote as `mark` (`plots.save_marked`). The user's mine.png beside
    --out mine.gif, and their own mnist-train-7.png under `data show`'s default name, were
    once overwritten in silence."""
    if path.is_dir():
        raise OutputError(
            f"cannot write {what} to {shown_name(path)}: it is a folder; choose another --out"
        )

    from digitlab.plots import mark_of

    if (path.exists() or path.is_symlink()) and mark_of(path) != mark:
        raise OutputError(
            f"{shown_name(path)} is already there, and digitlab did not write it as {what}: it "
            "is kept; move it away or name another file with --out"
        )
    return path


def check_range(name: str, value: int, low: int, high: int) -> int:
    """ConfigError unless low <= value <= high (an option's range)."""
    if not low <= value <= high:
        raise ConfigError(f"{name} must be in {low}..{high}, got {value}")
    return value
