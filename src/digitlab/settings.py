"""Settings: one table of what every setting means, and typed values for dataclass fields.

Every task's settings are a dataclass (`KNNConfig`, `TrainConfig`, ...). This module is how
values reach their fields, whatever their source: a `--flag`, a `key=value` override, a TOML
file. Each value is checked once against the field's annotation (never pasted into TOML text
and parsed back, so a path keeps every character), and `HELP` gives the one sentence that
`--help`, `--print-config` and the error messages show for it.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from digitlab.errors import ConfigError
from digitlab.files import shown_name

# What each setting means, by field name ("Class.field" where one class means something else).
HELP: dict[str, str] = {
    "seed": "random seed: the same seed gives the same subsets, splits and (on CPU) numbers",
    "device": "auto, cpu or cuda (auto: cuda when PyTorch sees a GPU)",
    "threads": "CPU threads (none: $DIGITLAB_THREADS, else the task's own choice)",
    "dataset": "mnist, fashion-mnist or kmnist",
    "data_dir": "folder with the four IDX files or <dataset>.npz (none: $DIGITLAB_DATA, the "
    "cache, else download)",
    "train_size": "training images, a seeded random subset (all: every training image)",
    "show_index": "the training image drawn on its own",
    "gallery_digit": "the class drawn three times",
    "k": "neighbours that vote",
    "weights": "neighbour votes: uniform (the course) or distance (weighted by 1/distance)",
    "deskew": "straighten every digit by its image moments first (no labels used)",
    "pca": "project onto this many principal components first (none: raw pixels)",
    "max_memory_mb": "bound on the distance block held at once, in MB",
    "compare_sklearn": "also time scikit-learn's brute-force kNN on the same arrays",
    "ks": "k values to try: 1-7, 1,3,5 or 1-9:2",
    "val_fraction": "share of the training images held out for validation",
    "epochs": "passes over the training images",
    "batch_size": "images per training step",
    "lr": "Adam learning rate",
    "augment": "random shifts (±2 px) and rotations (±10°) of the training images",
    "lr_schedule": "constant (the course) or cosine (decay to 0 over the run)",
    "channels_last": "channels-last memory layout (faster on CPU here)",
    "bf16": "bfloat16 autocast (faster only on CPUs with AVX512-BF16/AMX, or GPUs)",
    "ema": "per-step decay of the saved weight average (none: the last step's weights)",
    "embedding": "features to cluster: raw pixels (the course), pca or umap",
    "method": "kmeans (the course) or gmm (a Gaussian mixture)",
    "n_clusters": "number of clusters",
    "n_init": "restarts, the best kept",
    "pca_components": "components for the pca embedding",
    "umap_components": "components for the umap embedding",
    "umap_neighbors": "neighbours UMAP looks at",
    "model": "a saved generator folder (none: the one shipped with digitlab)",
    "digit": "the digit generated ten times",
    "interpolate_from": "first digit of the morph",
    "interpolate_to": "last digit of the morph",
    "steps": "frames of the morph",
    "reuse_fakes": "one generated batch serves both updates (false: keras.io's second draw)",
    "checkpoint_every": "steps between checkpoints",
    "max_steps": "stop after this many steps (none: all epochs)",
}


def describe(cls: type, name: str) -> str:
    """The help sentence of field `name` of dataclass `cls` (empty when the table has none)."""
    return HELP.get(f"{cls.__name__}.{name}", HELP.get(name, ""))


def settable_fields(cls: type, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Field name -> resolved annotation, for the fields a user may set.

    Left out: the class's `hidden` fields (derived from others) and `exclude` (set elsewhere,
    such as a run's one seed).
    """
    hints = typing.get_type_hints(cls)
    skip = (*getattr(cls, "hidden", ()), *exclude)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init and f.name not in skip}


def _choices(hint) -> tuple[list, bool]:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [a for a in args if a is not type(None)], type(None) in args
    return [hint], False


def _type_name(t) -> str:
    return getattr(t, "__name__", str(t))


def coerce(name: str, value: Any, hint) -> Any:
    """`value` as the field annotated `hint` holds it (int, float, str, bool, or X | None).

    Text (from a command line) is read as the field's type: "5" for an int, "true" for a bool,
    "none"/"all" for an optional field. Raises ConfigError naming `name` and what it means.
    """
    allowed, optional = _choices(hint)
    if isinstance(value, Path):
        value = str(value)
    if value is None or (
        isinstance(value, str) and optional and value.strip().lower() in ("none", "all", "null")
    ):
        if optional:
            return None
        raise ConfigError(f"{name} cannot be empty")
    for t in allowed:
        if isinstance(value, str) and t is not str:
            parsed = _from_text(value, t)
            if parsed is not _NO:
                return parsed
            continue
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            number = _real(value)
            if number is not _NO:
                return number
            continue
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is bool and isinstance(value, bool):
            return value
        if t is str and isinstance(value, str):
            return value
    if optional:
        # What the user can type, in words: "int or none" read as Python, and for train_size
        # "none" was not even the word its help (and every user) spells it with.
        kinds = " or ".join(_TYPED.get(t, _type_name(t)) for t in allowed)
        what = f"{kinds} or {_none_word(name)!r}"
    else:  # "knn.k must be int": short, and quoted as such by other faces' tests
        what = " or ".join(_type_name(t) for t in allowed)
    meaning = describe_hint(name)
    raise ConfigError(f"{name} must be {what}{meaning}, got {value!r}")


# How a value of each type is typed, for the messages of optional settings.
_TYPED = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}


def _none_word(name: str) -> str:
    """The word that leaves optional setting `name` unset, as its help spells it: "all" for
    train_size ("(all: every training image)"), else "none" (all three words are read)."""
    match = re.search(r"\((none|all|null):", HELP.get(name.rpartition(".")[2], ""))
    return match.group(1) if match else "none"


_NO = object()


def _from_text(text: str, t) -> Any:
    word = text.strip()
    if t is bool:
        return {"true": True, "false": False}.get(word.lower(), _NO)
    if t is int:
        try:
            return int(word.replace("_", ""))
        except ValueError:
            return _NO
    if t is float:
        try:
            return _real(float(word))
        except ValueError:
            return _NO
    return _NO


def _real(value: int | float) -> Any:
    """The value of a number setting (a float field): a whole number as an int, anything else
    as a float; _NO for an int no float can hold.

    `max_memory_mb = 512` in a config file was read as 512.0 and written back so in every
    run's config.toml and config.json: a whole number stays one, however it was typed (512,
    512.0, "512", argparse's float). Beyond 2**53 a float no longer holds every whole number,
    so those stay floats."""
    if isinstance(value, int) and abs(value) < 2**53:
        return value
    try:
        value = float(value)
    except OverflowError:  # an int beyond any float (10**400)
        return _NO
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def describe_hint(name: str) -> str:
    """' (what it means)' for a dotted or plain setting name, or '' when unknown."""
    text = HELP.get(name.rpartition(".")[2], "")
    return f" ({text})" if text else ""


def unquote(text: str) -> str:
    """A command-line string value: TOML's quoted forms are unwrapped, anything else is kept.

    `'...'` is taken literally (TOML literal strings have no escapes); `"..."` is read as a TOML
    basic string when it is one, else its inside is kept as typed (a Windows path's `\\d` is not
    an escape there); unquoted text is kept character for character.
    """
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1]
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            return tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            return text[1:-1]
    return text


def set_fields(
    obj: Any, values: dict[str, Any], prefix: str = "", exclude: tuple[str, ...] = ()
) -> Any:
    """Set `values` (field -> value, text or typed) on dataclass `obj`; unknown names are errors."""
    fields = settable_fields(type(obj), exclude)
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise ConfigError(
                f"unknown setting {key!r}; {prefix.rstrip('.') or 'allowed'} settings: "
                f"{', '.join(fields)}"
            )
        if isinstance(value, str):
            value = unquote(value)
        setattr(obj, name, coerce(key, value, fields[name]))
    return obj


def toml_value(value: Any) -> str:
    """One value as TOML text (strings escaped, so a path survives a round trip)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def toml_table(obj: Any, exclude: tuple[str, ...] = ()) -> list[str]:
    """The settable fields of dataclass `obj` as TOML lines, each with its help as a comment."""
    lines = []
    for name in settable_fields(type(obj), exclude):
        value = getattr(obj, name)
        note = describe(type(obj), name)
        tail = f"  # {note}" if note else ""
        if value is None:  # its own word, which reads back as None (a commented-out line
            # left the preset's value in place: a run's config.toml did not reproduce it)
            lines.append(f'{name} = "{_none_word(name)}"{tail}')
        else:
            lines.append(f"{name} = {toml_value(value)}{tail}")
    return lines


def source_words(
    preset: str | None, config_file: str | None, mark: Callable[[str], str] = shown_name
) -> str:
    """Where a run's settings came from, as config.toml, config.json's readers and the report
    say it: "preset quick", "settings from runs/a/config.toml", or "preset quick, then
    settings from my.toml". `mark` shows each name (the report makes it bold; the default
    keeps a file name on one line).

    A run's config.toml given back with --config once made a run labelled "preset course",
    the default, though every setting came from the file (which never names a preset).
    """
    if config_file is None:
        return f"preset {mark(preset or 'course')}"
    from_file = f"settings from {mark(config_file)}"
    return from_file if preset is None else f"preset {mark(preset)}, then {from_file}"
