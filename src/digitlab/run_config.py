"""The settings of `digitlab run`: the task configs themselves, one per stage, and one seed.

Resolved in order, later winning: a preset, a TOML file, then `key=value` overrides and the
command's own flags. Each value is typed once against its dataclass field (`settings`); none
is pasted into TOML text and parsed back.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from digitlab.cluster_experiment import ClusterConfig
from digitlab.data import get_spec, validation_count
from digitlab.errors import ConfigError
from digitlab.knn_experiment import KNNConfig, SweepConfig
from digitlab.settings import (
    coerce,
    describe_hint,
    set_fields,
    settable_fields,
    source_words,
    toml_table,
)
from digitlab.tasks.data import DataConfig
from digitlab.tasks.gan import SamplesConfig
from digitlab.train import TrainConfig
from digitlab.validation import check_seed, subset_size

STAGES = ("data", "knn", "sweep", "cnn", "cluster", "gan")
# Set once for the whole run, not per stage: every stage draws its subsets from the same seed.
RUN_WIDE = ("seed",)


@dataclass
class RunConfig:
    """Every setting of a run: the seed, and each stage's own task config.

    `preset` and `config_file` say where the settings came from (`source`), not what they are:
    the preset the settings started from (None when a config file set every one of them, so
    no preset's value is left), and the TOML file read over it (None: none).
    """

    preset: str | None = "course"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    knn: KNNConfig = field(default_factory=lambda: KNNConfig(compare_sklearn=True))
    sweep: SweepConfig = field(default_factory=SweepConfig)
    cnn: TrainConfig = field(default_factory=TrainConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    gan: SamplesConfig = field(default_factory=SamplesConfig)
    config_file: str | None = None

    def stage(self, name: str) -> Any:
        """The task config of stage `name`, with the run's seed in it."""
        section = getattr(self, name)
        if "seed" in {f.name for f in dataclasses.fields(section)}:
            section = dataclasses.replace(section, seed=self.seed)
        return section

    def source(self) -> str:
        """Where the settings came from, in words ("preset quick", "settings from FILE")."""
        return source_words(self.preset, self.config_file)

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain values (what config.json records; no per-stage seeds)."""
        out: dict[str, Any] = {
            "preset": self.preset,
            "config_file": self.config_file,
            "seed": self.seed,
        }
        for name in STAGES:
            section = getattr(self, name)
            out[name] = {k: getattr(section, k) for k in settable_fields(type(section), RUN_WIDE)}
        return out


PRESETS: dict[str, dict[str, object]] = {
    # Small subsets: the whole course in about a minute on a 2-core machine (31 s measured).
    "quick": {
        "knn.train_size": 5000,
        "sweep.train_size": 5000,
        "cnn.train_size": 6000,
        "cnn.epochs": 2,
        "cluster.train_size": 5000,
        "cluster.n_init": 3,
    },
    # The course's own settings.
    "course": {},
    # Every training image.
    "full": {
        "knn.train_size": None,
        "sweep.train_size": None,
        "cnn.train_size": None,
        "cluster.train_size": None,
    },
}


def apply_overrides(cfg: RunConfig, overrides: Mapping[str, Any]) -> RunConfig:
    """Set dotted keys (`knn.k`), `seed`, or `device` (every stage's device) on `cfg`.

    Values may be typed or text (from a command line); unknown keys name what is allowed.
    """
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if (section, name) == ("data", "seed"):  # where configs before 0.2 kept the run's seed
            section, name = "seed", ""
        if not name:
            _set_top(cfg, section, value)
            continue
        if section not in STAGES:
            raise ConfigError(
                f"unknown section {section!r} in {key!r}; sections: {', '.join(STAGES)}"
            )
        if name in RUN_WIDE:
            raise ConfigError(f"{key}: the seed is the run's, not a stage's; set seed=N")
        set_fields(getattr(cfg, section), {name: value}, f"{section}.", RUN_WIDE)
    return cfg


def _set_top(cfg: RunConfig, key: str, value: Any) -> None:
    if key == "seed":
        cfg.seed = coerce("seed", value, int)
    elif key == "device":  # a shortcut: the same device for every stage that has one
        for name in STAGES:
            section = getattr(cfg, name)
            if "device" in settable_fields(type(section)):
                set_fields(section, {"device": value}, f"{name}.")
    else:
        raise ConfigError(
            f"unknown setting {key!r}; top-level settings: seed, device; "
            f"sections: {', '.join(STAGES)}"
        )


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """`key=value` strings -> {key: value text}; the text is typed later, against its field."""
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value (e.g. knn.k=5)")
        parsed[key.strip()] = value
    return parsed


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML settings file flattened to dotted keys; ConfigError if unreadable."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    if "preset" in flat:
        raise ConfigError("choose the preset with --preset, not in the config file")
    return flat


def load_config(
    preset: str | None = None,
    file: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> RunConfig:
    """Preset, then a TOML file, then overrides (`key=value` strings or a typed mapping).

    `preset` None: the course's settings, under any `file`; the run is then said to come from
    the file alone (`RunConfig.source`) when the file sets every setting (a run's own
    config.toml does), since no preset's value is left.
    """
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    cfg = RunConfig(preset=preset or "course")
    apply_overrides(cfg, PRESETS[cfg.preset])
    if file is not None:
        values = read_toml(file)
        apply_overrides(cfg, values)
        cfg.config_file = str(file)
        if preset is None and _sets_everything(cfg, values):
            cfg.preset = None
    if not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    apply_overrides(cfg, overrides)
    return cfg


def _sets_everything(cfg: RunConfig, values: Mapping[str, Any]) -> bool:
    """Whether the dotted keys `values` (a settings file) set every setting of `cfg`."""
    given = {"seed" if key == "data.seed" else key for key in values}
    needed = {"seed"}
    for name in STAGES:
        fields = settable_fields(type(getattr(cfg, name)), RUN_WIDE)
        needed |= {f"{name}.{field}" for field in fields}
        if "device" in given and "device" in fields:  # the shortcut sets every stage's
            given.add(f"{name}.device")
    return needed <= given


def config_toml(cfg: RunConfig) -> str:
    """The resolved configuration as TOML, each setting with what it means (--print-config)."""
    lines = [
        f"# digitlab run configuration ({cfg.source()})",
        f"seed = {cfg.seed}  # {describe_hint('seed').strip(' ()')}",
    ]
    for name in STAGES:
        lines.append(f"\n[{name}]")
        lines += toml_table(getattr(cfg, name), RUN_WIDE)
    return "\n".join(lines) + "\n"


def validate_config(
    cfg: RunConfig, n_train: int | None = None, stages: Sequence[str] | None = None
) -> None:
    """Check every stage's settings now, so a bad value fails before any data loads, not after
    an hour of training.

    Every stage's settings are checked against the dataset's table size (a stage not run still
    has its settings recorded with the run). `n_train`, the training images of the data as
    loaded (a local folder may hold fewer), holds only the stages that run (`stages`; None: all)
    to that size too: `--stages data` on 2,000 images was refused for knn.train_size=5000.

    Raises ConfigError (one line, naming the section) for the first setting out of range,
    a validation split that cannot be made (`check_split`) included; one out of range only for
    the data as loaded says so, and a subset larger than the data names the settings to change.
    """
    check_seed(cfg.seed)
    size = cfg.data.validate()
    _check_stages(cfg, STAGES, size)
    if n_train is not None and n_train != size:
        held = STAGES if stages is None else choose_stages(list(stages))
        if "data" in held:
            _check_section("data", lambda: cfg.data.validate(n_train))
        _check_stages(cfg, held, n_train, _data_hints(cfg, n_train, held))
    _check_section("gan", cfg.gan.validate)


def _check_section(section: str, fn: Callable[[], object], hint: str = "") -> None:
    """Call `fn`; its ConfigError again, as one line naming `section` (and `hint` after it)."""
    try:
        fn()
    except ConfigError as exc:
        raise ConfigError(f"[{section}] {exc}{hint}") from None


def _check_stages(
    cfg: RunConfig, stages: Sequence[str], n_train: int, hints: Mapping[str, str] | None = None
) -> None:
    """The sized settings of `stages` against `n_train` training images; `hints`: what to add
    to a stage's message (section -> text)."""
    hints = hints or {}
    for name in ("knn", "sweep", "cnn", "cluster"):
        if name in stages:
            _check_section(
                name, lambda name=name: cfg.stage(name).validate(n_train), hints.get(name, "")
            )
    # The split with the dataset's own classes (SweepConfig.validate assumes ten):
    # sweep.val_fraction=0.001 of 300 images once failed only after the data had loaded.
    if "sweep" in stages:
        _check_section(
            "sweep",
            lambda: check_split(cfg, cfg.sweep.train_size, cfg.sweep.val_fraction, n_train),
            hints.get("sweep", ""),
        )


def _data_hints(cfg: RunConfig, n_train: int, stages: Sequence[str]) -> dict[str, str]:
    """What to add to a message of each of `stages` whose settings fit the dataset's table but
    not the `n_train` images of the data as loaded: for a subset larger than the data, every
    such subset of the stages run, named as the overrides that fix them all at once (the quick
    preset's 5,000 on any smaller local folder); else the data's size."""
    sized = [name for name in ("knn", "sweep", "cnn", "cluster") if name in stages]
    too_big = [name for name in sized if (getattr(cfg, name).train_size or 0) > n_train]
    fix = " ".join(f"{name}.train_size=all" for name in too_big)
    return {
        name: f" (the data hold {n_train} training images: set {fix}, or smaller subsets)"
        if name in too_big
        else f" (the data hold {n_train} training images)"
        for name in sized
    }


def check_split(
    cfg: RunConfig,
    train_size: int | None,
    fraction: float,
    n_train: int,
    names: tuple[str, str] = ("val_fraction", "train_size"),
) -> int:
    """How many of a training subset (`train_size` of `n_train` images; None: all) a
    stratified split with `fraction` holds out for validation; `names` name the fraction and
    the subset size in messages.

    Raises ConfigError when `fraction` is not in (0, 1), or when either side of the split
    would hold fewer images than the dataset has classes (it needs one of each). Needs no data:
    the classes come from the datasets table.
    """
    frac_name, size_name = names
    n = subset_size(train_size, n_train, size_name) or n_train
    n_classes = len(get_spec(cfg.data.dataset).classes)
    return validation_count(n, fraction, n_classes, frac_name, size_name)


def choose_stages(only: Sequence[str] | None, skip: Sequence[str] = ()) -> list[str]:
    """The stages to run, in course order: `only` (None: all) less `skip`. ConfigError for an
    unknown name, or when none is left (an empty list once ran nothing and still rewrote the
    folder's config and report)."""
    for name in [*(only or []), *skip]:
        if name not in STAGES:
            raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    chosen = list(only) if only is not None else list(STAGES)
    stages = [s for s in STAGES if s in chosen and s not in skip]
    if not stages:
        raise ConfigError(f"no stage left to run; stages: {', '.join(STAGES)}")
    return stages
