"""The sweep's only contact with the run layer: settings, metrics and one trial.

Settings are the run configuration's own (`run_config`: one tree made of the task configs;
values typed against their dataclass fields by `settings`), so a sweep accepts exactly what
`digitlab run` accepts, with the same messages. A trial is `pipeline.run_course` into its own
run folder, with the pipeline's per-epoch callback feeding early stopping; the kNN validation
objective comes from the kNN task. Everything else in `digitlab.sweep` is independent of how a
run is configured and executed. METRICS names what each stage produces.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from digitlab.errors import ConfigError, DataError
from digitlab.files import jsonable, read_json_object, save_metrics
from digitlab.folders import working_for
from digitlab.run_config import (
    RUN_WIDE,
    STAGES,
    RunConfig,
    apply_overrides,
    check_split,
    choose_stages,
    load_config,
    validate_config,
)
from digitlab.settings import settable_fields
from digitlab.tasks import data as data_task
from digitlab.tasks import knn as knn_task


@dataclass(frozen=True)
class Metric:
    """An objective a sweep may optimise: a validation figure of one stage, and its test twin."""

    stage: str
    mode: str  # the direction in which it is better
    test: str | None  # the test-set figure reported beside it (never used to choose)
    description: str
    # The values it can take: an interval for its mean is clipped to them (2 seeds at 0.88
    # and 1.0 once gave an accuracy interval up to 1.007). The test twins are accuracies.
    bounds: tuple[float, float] = (0.0, 1.0)


#: Validation figures only: the objective never looks at the test set.
METRICS: dict[str, Metric] = {
    "knn.val_accuracy": Metric(
        "knn",
        "max",
        "knn.accuracy",
        "kNN accuracy on a stratified validation split of the training subset "
        "(sweep.val_fraction), with the knn section's settings",
    ),
    "sweep.val_accuracy": Metric(
        "sweep",
        "max",
        "sweep.test_accuracy_at_chosen_k",
        "validation accuracy at the k the k-sweep stage chose",
    ),
    "cnn.val_accuracy": Metric(
        "cnn", "max", "cnn.accuracy", "the CNN's validation accuracy after its last epoch"
    ),
    "cnn.val_loss": Metric(
        "cnn",
        "min",
        None,
        "the CNN's validation cross-entropy after its last epoch",
        (0.0, float("inf")),
    ),
}


def resolve_base(
    preset: str = "course",
    config_file: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, object] = (),
) -> RunConfig:
    """The base run configuration: a preset, then a TOML file, then overrides (checked).

    `overrides` are `key=value` words or a mapping of keys to typed values (a path stays a
    path: nothing is pasted into TOML text).
    """
    cfg = load_config(preset, config_file, overrides)
    validate_config(cfg)
    return cfg


def _hint(key: str):
    """The annotation of run setting `key` (ConfigError naming what is allowed if unknown)."""
    section, _, name = key.partition(".")
    if key == "seed":
        return int
    if key == "device":  # the run-wide shortcut: every stage's device
        return str
    if section in STAGES and name:
        fields = settable_fields(type(getattr(RunConfig(), section)), RUN_WIDE)
        if name in fields:
            return fields[name]
    # Unknown: the run configuration says why, in its own words (unknown section or name).
    apply_overrides(RunConfig(), {key: None})
    raise ConfigError(f"unknown setting {key!r}; write section.name, e.g. knn.k")


def setting_type(key: str) -> type:
    """int, float, bool or str: the type of a run setting (ConfigError for an unknown key)."""
    hint = _hint(key)
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    for kind in (int, float, bool, str):
        if kind in args:
            return kind
    return str


def coerce_value(key: str, value: object) -> object:
    """One value for `key`, typed as the run configuration types it ('none' -> None for an
    optional setting, '0.95' -> 0.95, '1-3' stays text for a text setting)."""
    _hint(key)  # unknown keys fail with the run configuration's message
    cfg = apply_overrides(RunConfig(), {key: value})
    if key == "seed":
        return cfg.seed
    if key == "device":
        return cfg.knn.device
    section, _, name = key.partition(".")
    return getattr(getattr(cfg, section), name)


def apply_settings(base: RunConfig, settings: Mapping[str, object]) -> RunConfig:
    """A checked copy of `base` with `settings` ({'knn.k': 5, 'seed': 3}) applied."""
    cfg = apply_overrides(copy.deepcopy(base), dict(settings))
    validate_config(cfg)
    return cfg


def check_objective(cfg: RunConfig, metric: str, n_train: int | None = None) -> None:
    """ConfigError when the objective `metric` cannot be worked out for `cfg`: the kNN
    validation figure splits the knn stage's training subset by `sweep.val_fraction`, and a
    split without every class on both sides fails. `n_train`: the dataset's training images
    (default: its table size, so no data is needed)."""
    if metric != "knn.val_accuracy":
        return
    n = n_train if n_train is not None else cfg.data.validate()
    names = ("sweep.val_fraction", "knn.train_size")
    try:
        check_split(cfg, cfg.knn.train_size, cfg.sweep.val_fraction, n, names)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (the objective {metric} splits the knn stage's images)") from None


def check_settings(
    base: RunConfig, settings: Mapping[str, object], metric: str, n_train: int | None = None
) -> RunConfig:
    """`apply_settings`, then `check_objective`: ConfigError for a setting out of range (for
    `n_train` training images; default: the table's) or an objective that cannot be made."""
    cfg = apply_overrides(copy.deepcopy(base), dict(settings))
    validate_config(cfg, n_train)
    check_objective(cfg, metric, n_train)
    return cfg


def check_with_data(
    base: RunConfig,
    points: Iterable[Mapping[str, object]],
    metric: str | None = None,
    stages: Sequence[str] | None = None,
) -> None:
    """Check `base` with each of `points` applied against its dataset's real size (and, given
    `metric`, that the objective can be worked out on it). Only `stages` (None: all), the
    ones every trial runs, are held to that size, as a run holds only its own.

    The dataset (each one named, when the data settings are swept) is read once. Raises
    ConfigError for a setting out of range for it, DataError when it cannot be read.
    """

    sizes: dict[str, int] = {}
    for point in points:
        cfg = apply_overrides(copy.deepcopy(base), dict(point))
        key = json.dumps(jsonable(dataclasses.asdict(cfg.data)), sort_keys=True)
        if key not in sizes:
            sizes[key] = len(data_task.load(cfg.data, quiet=True).x_train)
        validate_config(cfg, sizes[key], stages)
        if metric is not None:
            check_objective(cfg, metric, sizes[key])


def check_stages(names: Sequence[str] | None) -> list[str]:
    """The run stages to execute in every trial (ConfigError for an unknown one)."""
    return choose_stages(list(names) if names else None)


def stage_of_setting(key: str) -> str | None:
    """The stage a setting belongs to (None for the run-wide ones: seed, device)."""
    section = key.partition(".")[0]
    return section if section in STAGES else None


def config_dict(cfg: RunConfig) -> dict:
    """The settings as plain values (as a run's config.json records them)."""
    return jsonable(cfg.as_dict())


def _knn_validation(cfg: RunConfig, folder: Path) -> dict:
    """The knn stage's settings scored on a validation split (`sweep.val_fraction`) by the kNN
    task; kept in the trial's `stages/knn_validation.json` and reused while unchanged."""
    knn_cfg = cfg.stage("knn")
    key = jsonable(
        {
            "knn": dataclasses.asdict(knn_cfg),
            "data": dataclasses.asdict(cfg.data),
            "val_fraction": cfg.sweep.val_fraction,
        }
    )
    path = folder / "stages" / "knn_validation.json"
    if path.is_file():
        try:
            saved = read_json_object(path)
        except DataError:
            saved = {}
        if saved.get("key") == key:
            return saved["metrics"]

    ds = data_task.load(cfg.data, quiet=True)
    metrics = knn_task.validate(ds, knn_cfg, cfg.sweep.val_fraction)
    save_metrics(path, {"key": key, "metrics": metrics})
    return metrics


def _flatten(stages: dict) -> dict[str, float]:
    """Every scalar figure of every stage as 'stage.name' (the last epoch for histories)."""
    flat: dict[str, float] = {}
    for stage, m in stages.items():
        for name, value in m.items():
            if isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                flat[f"{stage}.{name}"] = float(value)
        hist = m.get("history")
        if isinstance(hist, dict):
            for name, values in hist.items():
                if isinstance(values, list) and values and isinstance(values[-1], (int, float)):
                    flat.setdefault(f"{stage}.{name}", float(values[-1]))
    return flat


def run_trial(
    base: RunConfig,
    settings: Mapping[str, object],
    out_dir: str | Path,
    stages: Sequence[str],
    metric: str,
    threads: int | None = None,
    on_epoch: Callable[[str, int, dict], None] | None = None,
) -> dict[str, float]:
    """Run one trial as a normal run folder in `out_dir`; return its flat scalar figures.

    `settings` ({'knn.k': 5, 'seed': 3}) are applied to `base`; `threads` (the trial's CPU
    share) fills every stage's thread setting that the base leaves unset. `on_epoch(stage,
    epoch, figures)` gets each training epoch's figures named like the metrics
    ('cnn.val_accuracy'). The returned dict holds every stage's scalar figures as 'stage.name'
    plus `metric`.
    """
    from digitlab.pipeline import run_course  # the tasks, plots and report: only in a trial

    cfg = apply_settings(base, settings)
    if threads is not None:
        for name in STAGES:
            section = getattr(cfg, name)
            if getattr(section, "threads", 0) is None:
                section.threads = threads
    folder = Path(out_dir)
    report = None
    if on_epoch is not None:

        def report(stage: str, epoch: int, figures: dict) -> None:
            on_epoch(stage, epoch, {f"{stage}.{k}": v for k, v in figures.items()})

    # The trial's run folder lies in the sweep's, where a run is refused unless the sweep
    # makes it (a plain `digitlab run` there would replace a trial's results).
    with working_for("sweep"):
        metrics = run_course(cfg, folder, list(stages), quiet=True, on_epoch=report)
    flat = _flatten(metrics["stages"])
    if metric == "knn.val_accuracy":
        flat["knn.val_accuracy"] = float(_knn_validation(cfg, folder)["val_accuracy"])
    elif metric == "sweep.val_accuracy":
        sw = metrics["stages"]["sweep"]
        flat["sweep.val_accuracy"] = float(sw["val_accuracy"][str(sw["chosen_k"])])
    return flat
