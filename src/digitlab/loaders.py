"""Saved models: saving, finding and loading them, in one place.

Weights are safetensors with the network's config beside them as JSON (`checkpoint`); a model
is rebuilt from its config, never unpickled.

A model may be named by the folder its training wrote (`cnn train --out DIR` puts the model in
DIR/model, `gan train --out DIR` in DIR/generator), by that subfolder itself, or not at all:
then the model shipped inside the package is used.
"""

from __future__ import annotations

from pathlib import Path

import torch

from digitlab import shipped
from digitlab.checkpoint import load_weights, save_weights
from digitlab.cnn import CNNConfig, CourseCNN
from digitlab.device import resolve_device
from digitlab.errors import DataError
from digitlab.files import shown_name
from digitlab.folders import owner
from digitlab.gan import GANConfig, Generator
from digitlab.run_kinds import CNN_RUN, GAN_RUN, RUN_KINDS, RunKind

CNN_KIND = "course_cnn"
GENERATOR_KIND = "conditional_gan_generator"


def save_model(model: CourseCNN, folder: str | Path, metadata: dict | None = None) -> Path:
    """model.safetensors + config.json (+ metadata.json) in `folder`, each written atomically."""
    return save_weights(model, folder, "model", CNN_KIND, model.cfg, metadata)


def load_model(folder: str | Path, device: torch.device | str = "cpu") -> CourseCNN:
    """Rebuild the CNN saved in `folder` (or in the `cnn train` folder's model/) from its
    config.json and load its weights (eval mode).

    Raises DataError naming the missing or mismatched file, ConfigError for a device PyTorch
    cannot use here (see `device.resolve_device`)."""
    model = load_weights(
        cnn_folder(folder),  # a `cnn train` folder is taken for the model it saved
        "model",
        CNN_KIND,
        CNNConfig,
        CourseCNN,
        "train one with `digitlab cnn train --out DIR`",
    )
    return model.to(resolve_device(device)).eval()


def save_generator(generator: Generator, folder: str | Path, metadata: dict | None = None) -> Path:
    """generator.safetensors + config.json (+ metadata.json), each written atomically."""
    return save_weights(generator, folder, "generator", GENERATOR_KIND, generator.cfg, metadata)


def load_generator(folder: str | Path, device: torch.device | str = "cpu") -> Generator:
    """Rebuild the generator saved in `folder` and load its weights (eval mode).

    Raises DataError naming the missing or mismatched file, ConfigError for a device PyTorch
    cannot use here (see `device.resolve_device`)."""
    generator = load_weights(
        model_folder(folder, GAN_RUN, shipped.GENERATOR),  # a `gan train` folder too
        "generator",
        GENERATOR_KIND,
        GANConfig,
        Generator,
        "train one with `digitlab gan train --out DIR`",
    )
    return generator.to(resolve_device(device)).eval()


def model_folder(path: str | Path | None, run: RunKind, shipped_dir: Path) -> Path:
    """The folder holding a model's config.json: `path`, its `run.model` subfolder, or
    `shipped_dir`.

    `path=None` means the shipped model; a training output folder is accepted for the model it
    saved. Raises DataError for the other training command's folder (a CNN's where a
    generator is wanted, or the reverse), naming what it is, and for a folder holding only
    this kind's checkpoint (a run interrupted before it saved a model), saying to finish it
    with `run.command --resume`; beyond that the loader says what is missing.
    """
    if path is None:
        return shipped_dir
    path = Path(path)
    if (path / run.model / "config.json").is_file():
        return path / run.model
    _refuse_other_output(path, run)
    if (path / "config.json").is_file():
        return path  # the model's own folder; its loader checks what it holds
    for kind in RUN_KINDS:
        if kind is not run and kind.made(path):
            raise DataError(
                f"{path} is a {kind.what} training folder (from `{kind.command}`), not "
                f"a {run.what}: pass a folder from `{run.command} --out`, or leave the option "
                "out for the shipped model"
            )
    if (path / run.checkpoint).is_file():
        raise DataError(
            f"{path} holds an unfinished training run (a checkpoint, no saved {run.model} "
            f"yet): finish it with `{run.command} --resume --out {path}` and the settings it "
            "started with"
        )
    return path


def _refuse_other_output(path: Path, run: RunKind) -> None:
    """DataError when `path` holds the output of a command that saves no `run.what` there (a
    `knn` or `cluster` folder, a `digitlab run` folder), naming that command and, when a
    folder inside it holds such a model (a run's models/cnn), that folder. A `knn` folder
    given to `cnn predict` once said only "config.json is missing", and a run folder, whose
    own config.json holds its settings, that model.safetensors was."""
    made_by = owner(path)
    trainers = {kind.command.removeprefix("digitlab ") for kind in RUN_KINDS}
    if made_by in (None, "a saved model") or made_by in trainers:
        return  # what a saved model's loader or a training folder's own checks say better
    inside = sorted(
        folder
        for folder in (*path.glob("*/"), *path.glob("*/*/"))
        if not folder.name.startswith(".") and (folder / run.model / "config.json").is_file()
    )
    found = f"; its {run.what} is in {shown_name(inside[0])}: pass that folder" if inside else ""
    raise DataError(
        f"{shown_name(path)} holds the output of `digitlab {made_by}`, not a saved {run.what} "
        f"(a folder from `{run.command} --out`, or its {run.model}/){found}"
    )


def cnn_folder(path: str | Path | None = None) -> Path:
    """Where the CNN named by `path` lives (a `cnn train` folder, its model/, or shipped)."""
    return model_folder(path, CNN_RUN, shipped.CNN)


def generator_folder(path: str | Path | None = None) -> Path:
    """Where the generator named by `path` lives (a `gan train` folder, its generator/, or
    shipped). Raises DataError when no path is given and no generator is shipped."""
    if path is None and not has_shipped_generator():
        raise DataError(
            "this version of digitlab ships no trained generator yet; train one "
            "with `digitlab gan train --out DIR` and pass --model DIR"
        )
    return model_folder(path, GAN_RUN, shipped.GENERATOR)


def has_shipped_generator() -> bool:
    """True when the package carries a trained generator."""
    return (shipped.GENERATOR / "config.json").is_file()


def load_cnn(path: str | Path | None = None, device: torch.device | str = "cpu") -> CourseCNN:
    """The CNN named by `path` (see `cnn_folder`), in eval mode. Raises DataError if absent."""
    return load_model(cnn_folder(path), device)


def load_gan_generator(
    path: str | Path | None = None, device: torch.device | str = "cpu"
) -> Generator:
    """The generator named by `path` (see `generator_folder`), in eval mode; DataError if absent."""
    return load_generator(generator_folder(path), device)
