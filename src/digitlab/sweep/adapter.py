"""The sweep's only contact with the run pipeline: settings, metrics and one trial.

Everything else in `digitlab.sweep` is independent of how a run is configured and executed.
When the run layer changes (task functions, one config tree), only the functions here change:
`resolve_base`, `setting_type`, `coerce_value`, `apply_settings`, `check_stages` and
`run_trial` (with `_epoch_reports`). METRICS names what each stage produces.
"""

from __future__ import annotations

import contextlib
import copy
import json
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from digitlab.errors import ConfigError


@dataclass(frozen=True)
class Metric:
    """An objective a sweep may optimise: a validation figure of one stage, and its test twin."""

    stage: str
    mode: str  # the direction in which it is better
    test: str | None  # the test-set figure reported beside it (never used to choose)
    description: str


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
        "cnn", "min", None, "the CNN's validation cross-entropy after its last epoch"
    ),
}


def resolve_base(
    preset: str = "course", config_file: str | Path | None = None, overrides: Sequence[str] = ()
):
    """The base run configuration: a preset, then a TOML file, then `key=value` overrides."""
    from digitlab.pipeline import load_config, validate_config

    cfg = load_config(preset, config_file, list(overrides))
    validate_config(cfg)
    return cfg


def _hint(key: str):
    from digitlab.pipeline import RunConfig

    section, _, name = key.partition(".")
    top = typing.get_type_hints(RunConfig)
    if not name:
        if section not in top or hasattr(top[section], "__dataclass_fields__"):
            raise ConfigError(f"unknown setting {key!r}; write section.name, e.g. knn.k")
        return top[section]
    if section not in top or not hasattr(top[section], "__dataclass_fields__"):
        sections = [k for k, v in top.items() if hasattr(v, "__dataclass_fields__")]
        raise ConfigError(
            f"unknown section {section!r} in {key!r}; sections: {', '.join(sections)}"
        )
    hints = typing.get_type_hints(top[section])
    if name not in hints:
        raise ConfigError(f"unknown setting {key!r}; {section} settings: {', '.join(hints)}")
    return hints[name]


def setting_type(key: str) -> type:
    """int, float, bool or str: the type of a run setting (ConfigError for an unknown key)."""
    hint = _hint(key)
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    for kind in (int, float, bool, str):
        if kind in args:
            return kind
    return str


def coerce_value(key: str, value: object) -> object:
    """Type one value for `key` as the run settings would ('none' -> None, '0.95' -> 0.95)."""
    from digitlab.pipeline import _coerce, _parse_value

    hint = _hint(key)
    if isinstance(value, str):
        parsed = _parse_value(value)
        # A text setting keeps the text as written ('1-3' stays '1-3', not a number).
        if setting_type(key) is str and not isinstance(parsed, str) and parsed is not None:
            parsed = value
        value = parsed
    return _coerce(key, value, hint)


def apply_settings(base, settings: dict[str, object]):
    """A checked copy of `base` with `settings` ({'knn.k': 5, 'data.seed': 3}) applied."""
    from digitlab.pipeline import apply_overrides, validate_config

    cfg = apply_overrides(copy.deepcopy(base), dict(settings))
    validate_config(cfg)
    return cfg


def check_stages(names: Sequence[str] | None) -> list[str]:
    """The run stages to execute in every trial (ConfigError for an unknown one)."""
    from digitlab.pipeline import choose_stages

    return choose_stages(list(names) if names else None)


def stage_of_setting(key: str) -> str | None:
    """The stage a setting belongs to (None for settings every stage shares)."""
    from digitlab.pipeline import STAGES

    section = key.partition(".")[0]
    return section if section in STAGES else None


def config_dict(cfg) -> dict:
    from dataclasses import asdict

    return asdict(cfg)


@contextlib.contextmanager
def _epoch_reports(on_epoch: Callable[[str, int, dict], None] | None) -> Iterator[None]:
    """Route the CNN loop's per-epoch history to `on_epoch(stage, epoch, figures)`.

    The pipeline's CNN stage does not pass an epoch callback through, so for the length of one
    trial (one worker process, one trial at a time) the loop function the stage calls is
    wrapped to add one. The task layer should take `on_epoch` directly; then this goes.
    """
    if on_epoch is None:
        yield
        return
    from digitlab import train

    original = train.train_cnn

    def wrapped(*args, on_epoch=None, **kwargs):
        inner = on_epoch

        def report(epoch: int, history) -> None:
            figures = {
                "cnn.val_accuracy": history.val_accuracy[-1],
                "cnn.val_loss": history.val_loss[-1],
            }
            callback("cnn", epoch, figures)
            if inner is not None:
                inner(epoch, history)

        return original(*args, on_epoch=report, **kwargs)

    callback = on_epoch
    train.train_cnn = wrapped
    try:
        yield
    finally:
        train.train_cnn = original


def _knn_validation(cfg, folder: Path) -> dict:
    """kNN at the knn section's settings scored on a validation split (reused when unchanged)."""
    from dataclasses import asdict

    from digitlab.data import load_dataset
    from digitlab.evaluation import _jsonable
    from digitlab.files import atomic_write_json
    from digitlab.knn_experiment import KNNConfig, run_knn_sweep

    k = cfg.knn
    knn_cfg = KNNConfig(
        k=k.k,
        train_size=k.train_size,
        seed=cfg.data.seed,
        weights=k.weights,
        deskew=k.deskew,
        pca=k.pca,
        device=cfg.device,
    )
    key = {"knn": asdict(knn_cfg), "data": asdict(cfg.data), "val": cfg.sweep.val_fraction}
    path = folder / "stages" / "knn_validation.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return saved["metrics"]
    ds = load_dataset(cfg.data.dataset, cfg.data.data_dir, quiet=True)
    result = run_knn_sweep(ds, knn_cfg, [k.k], cfg.sweep.val_fraction)
    metrics = {
        "val_accuracy": result["val_accuracy"][k.k],
        "n_fit": result["n_fit"],
        "n_val": result["n_val"],
        "val_fraction": cfg.sweep.val_fraction,
    }
    atomic_write_json(path, {"key": key, "metrics": _jsonable(metrics)})
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
    base,
    settings: dict[str, object],
    out_dir: str | Path,
    stages: Sequence[str],
    metric: str,
    threads: int | None = None,
    on_epoch: Callable[[str, int, dict], None] | None = None,
) -> dict[str, float]:
    """Run one trial as a normal run folder in `out_dir`; return its flat scalar figures.

    `settings` ({'knn.k': 5, 'data.seed': 3}) are applied to `base`; `threads` fills the CNN's
    thread setting when the base leaves it unset (the trial's CPU share). The returned dict
    holds every stage's scalar figures as 'stage.name' plus `metric`.
    """
    from digitlab.pipeline import run_course

    cfg = apply_settings(base, settings)
    if threads is not None and cfg.cnn.threads is None:
        cfg.cnn.threads = threads
    folder = Path(out_dir)
    with _epoch_reports(on_epoch):
        metrics = run_course(cfg, folder, list(stages), quiet=True)
    flat = _flatten(metrics["stages"])
    if metric == "knn.val_accuracy":
        flat["knn.val_accuracy"] = float(_knn_validation(cfg, folder)["val_accuracy"])
    elif metric == "sweep.val_accuracy":
        sw = metrics["stages"]["sweep"]
        val = sw["val_accuracy"]
        flat["sweep.val_accuracy"] = float(val.get(str(sw["chosen_k"]), val.get(sw["chosen_k"])))
    return flat
