"""The table of top-level commands: each one's module and one-line help.

`digitlab --help` lists every command from this table alone, and a command line builds the
full parser of its own command only: the modules behind the commands import PyTorch,
scikit-learn and matplotlib, which took 5-11 s to load on a 2-vCPU machine before
`digitlab --help` printed a line. This module imports nothing of digitlab's.
"""

from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    """One top-level command: `module` (in digitlab.cli) registers it; `help` is its line in
    `digitlab --help`."""

    module: str
    help: str


#: In the order `digitlab --help` lists them.
COMMANDS: dict[str, Command] = {
    "data": Command("data", "inspect and view the dataset"),
    "run": Command("run", "the whole course, end to end, into a run folder with report.html"),
    "report": Command("report", "rebuild report.html from a run folder"),
    "app": Command("app", "the web app: draw a digit, generate and morph digits"),
    "knn": Command("knn", "k-nearest-neighbour classification (and `knn sweep` to tune k)"),
    "cnn": Command("cnn", "the course's CNN: train, evaluate, predict"),
    "cluster": Command("cluster", "k-means (or a Gaussian mixture) on raw, PCA or UMAP features"),
    "gan": Command("gan", "the conditional GAN: train, generate, interpolate, evaluate"),
    "sweep": Command("sweep", "many runs on Ray (grid, random or Optuna), compared over seeds"),
}


def command_word(argv: list[str]) -> str | None:
    """The command named on a command line: its first word that is not an option (the
    top-level options, --help and --version, take no value). None when there is none."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word
    return None
