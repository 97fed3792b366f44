"""The whole course as stages, from one configuration, into one run folder.

A run folder holds the resolved `config.json`, `metrics.json` (every stage's figures, timing
and the environment), `figures/`, `models/`, `stages/` (one record per finished stage),
`run.log` and `report.html`. A stage whose settings are unchanged since it last finished is
reused, so an interrupted run picks up where it stopped (the CNN also from its last epoch).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import time
import tomllib
import typing
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from digitlab.errors import ConfigError, DataError
from digitlab.evaluation import _jsonable, save_metrics
from digitlab.files import atomic_write_json, atomic_write_text

RUN_FORMAT = 1
STAGES = ("data", "knn", "sweep", "cnn", "cluster", "gan")


@dataclass
class DataSection:
    dataset: str = "mnist"
    data_dir: str | None = None
    seed: int = 0
    show_index: int = 22876
    gallery_digit: int = 6


@dataclass
class KNNSection:
    k: int = 3
    train_size: int | None = 20000
    weights: str = "uniform"
    deskew: bool = False
    pca: int | None = None
    # Also time scikit-learn's brute-force kNN on the same arrays (raw pixels only) and show
    # both in the report, with whether the predictions are identical.
    compare_sklearn: bool = True


@dataclass
class SweepSection:
    ks: str = "1-7"
    val_fraction: float = 0.1
    train_size: int | None = 20000


@dataclass
class CNNSection:
    epochs: int = 10
    train_size: int | None = 20000
    batch_size: int = 128
    lr: float = 1e-3
    augment: bool = False
    lr_schedule: str = "constant"
    ema: float | None = 0.95  # decay of the saved weight average; none: the last weights
    threads: int | None = None


@dataclass
class ClusterSection:
    embedding: str = "raw"
    method: str = "kmeans"
    deskew: bool = False
    n_clusters: int = 10
    n_init: int = 10
    train_size: int | None = 20000


@dataclass
class GANSection:
    model: str | None = None  # a saved generator; None: the one shipped with digitlab
    digit: int = 3
    interpolate_from: int = 2
    interpolate_to: int = 6
    steps: int = 9


@dataclass
class RunConfig:
    preset: str = "course"
    device: str = "auto"
    data: DataSection = field(default_factory=DataSection)
    knn: KNNSection = field(default_factory=KNNSection)
    sweep: SweepSection = field(default_factory=SweepSection)
    cnn: CNNSection = field(default_factory=CNNSection)
    cluster: ClusterSection = field(default_factory=ClusterSection)
    gan: GANSection = field(default_factory=GANSection)


PRESETS: dict[str, dict[str, object]] = {
    # Small subsets: the whole course in about two minutes on a 2-core machine.
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


def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(RunConfig)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(RunConfig)
        if dataclasses.is_dataclass(hints[f.name])
    }


def _coerce(path: str, value, hint):
    """Check a value against a field's annotation (int, float, str, bool, or X | None)."""
    args = typing.get_args(hint)
    allowed = [a for a in args if a is not type(None)] if args else [hint]
    if value is None or (isinstance(value, str) and value.lower() in ("none", "all", "null")):
        if type(None) in args:
            return None
        raise ConfigError(f"{path} cannot be empty")
    for t in allowed:
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is bool and isinstance(value, bool):
            return value
        if t is str and isinstance(value, str):
            return value
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise ConfigError(f"{path} must be {names}, got {value!r}")


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: a string


def apply_overrides(cfg: RunConfig, overrides: dict[str, object]) -> RunConfig:
    """Set dotted keys (`knn.k`, `device`); unknown keys name what is allowed."""
    sections = _sections()
    top_hints = typing.get_type_hints(RunConfig)
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if not name:
            if section in sections or section not in top_hints:
                allowed = [k for k in top_hints if k not in sections]
                raise ConfigError(
                    f"unknown setting {key!r}; top-level settings: "
                    f"{', '.join(allowed)}; sections: {', '.join(sections)}"
                )
            setattr(cfg, section, _coerce(key, value, top_hints[section]))
            continue
        if section not in sections:
            raise ConfigError(
                f"unknown section {section!r} in {key!r}; sections: {', '.join(sections)}"
            )
        hints = typing.get_type_hints(sections[section])
        if name not in hints:
            raise ConfigError(f"unknown setting {key!r}; {section} settings: {', '.join(hints)}")
        setattr(getattr(cfg, section), name, _coerce(key, value, hints[name]))
    return cfg


def load_config(
    preset: str = "course", file: str | Path | None = None, overrides: Sequence[str] = ()
) -> RunConfig:
    """Preset, then a TOML file, then `key=value` overrides: later wins."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    cfg = RunConfig(preset=preset)
    apply_overrides(cfg, PRESETS[preset])
    if file is not None:
        try:
            data = tomllib.loads(Path(file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {file}: {exc}") from exc
        flat: dict[str, object] = {}
        for key, value in data.items():
            if isinstance(value, dict):
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                flat[key] = value
        if "preset" in flat:
            raise ConfigError("choose the preset with --preset, not in the config file")
        apply_overrides(cfg, flat)
    parsed = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value (e.g. knn.k=5)")
        parsed[key.strip()] = _parse_value(value.strip())
    apply_overrides(cfg, parsed)
    return cfg


def config_toml(cfg: RunConfig) -> str:
    """The resolved configuration as TOML (what --print-config shows)."""
    lines = [f"# digitlab run configuration (preset {cfg.preset})", f'device = "{cfg.device}"']
    for name in _sections():
        lines.append(f"\n[{name}]")
        for key, value in asdict(getattr(cfg, name)).items():
            if value is None:
                lines.append(f"# {key} = (none: all / not set)")
            elif isinstance(value, bool):
                lines.append(f"{key} = {str(value).lower()}")
            elif isinstance(value, str):
                lines.append(f'{key} = "{value}"')
            else:
                lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def validate_config(cfg: RunConfig, n_train: int = 60000) -> None:
    """Check every section now, so a bad value fails before an hour of training, not after."""
    from digitlab.clustering import ClusterConfig
    from digitlab.data import get_spec
    from digitlab.device import resolve_device
    from digitlab.experiments import KNNConfig, parse_k_range
    from digitlab.gan import check_digit
    from digitlab.train import TrainConfig

    def check(section: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except ConfigError as exc:
            raise ConfigError(f"[{section}] {exc}") from None

    check("data", lambda: get_spec(cfg.data.dataset))
    check("device", lambda: resolve_device(cfg.device))
    k, sw, c, cl = cfg.knn, cfg.sweep, cfg.cnn, cfg.cluster
    check(
        "knn",
        lambda: KNNConfig(
            k=k.k, train_size=k.train_size, weights=k.weights, deskew=k.deskew, pca=k.pca
        ).validate(n_train),
    )
    check(
        "sweep",
        lambda: KNNConfig(k=max(parse_k_range(sw.ks)), train_size=sw.train_size).validate(n_train),
    )
    if not 0 < sw.val_fraction < 1:
        raise ConfigError(f"[sweep] val_fraction must be in (0, 1), got {sw.val_fraction}")
    check(
        "cnn",
        lambda: TrainConfig(
            epochs=c.epochs,
            train_size=c.train_size,
            batch_size=c.batch_size,
            lr=c.lr,
            lr_schedule=c.lr_schedule,
            ema=c.ema,
            threads=c.threads,
        ).validate(n_train),
    )
    check(
        "cluster",
        lambda: ClusterConfig(
            embedding=cl.embedding,
            method=cl.method,
            deskew=cl.deskew,
            n_clusters=cl.n_clusters,
            n_init=cl.n_init,
            train_size=cl.train_size,
        ).validate(n_train),
    )
    g = cfg.gan
    for d in (g.digit, g.interpolate_from, g.interpolate_to):
        check("gan", lambda d=d: check_digit(d))
    if g.steps < 2:
        raise ConfigError(f"[gan] steps must be at least 2, got {g.steps}")


def choose_stages(only: Sequence[str] | None, skip: Sequence[str] = ()) -> list[str]:
    for name in [*(only or []), *skip]:
        if name not in STAGES:
            raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    chosen = list(only) if only else list(STAGES)
    return [s for s in STAGES if s in chosen and s not in skip]


# ----- the run ----------------------------------------------------------------------------


@dataclass
class Run:
    folder: Path
    cfg: RunConfig
    quiet: bool = False
    log_lines: list[str] = field(default_factory=list)

    @property
    def figures(self) -> Path:
        return self.folder / "figures"

    @property
    def models(self) -> Path:
        return self.folder / "models"

    def log(self, text: str) -> None:
        line = f"{datetime.now(UTC).strftime('%H:%M:%S')} {text}"
        with open(self.folder / "run.log", "a") as handle:
            handle.write(line + "\n")
        if not self.quiet:
            print(text, flush=True)


def environment() -> dict:
    import torch

    from digitlab import __version__

    return {
        "digitlab": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
    }


def _stage_key(cfg: RunConfig, stage: str) -> str:
    from digitlab import __version__

    parts = {"stage": stage, "data": asdict(cfg.data), "device": cfg.device, "version": __version__}
    if stage in ("knn", "sweep", "cnn", "cluster", "gan"):
        parts[stage] = asdict(getattr(cfg, stage))
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _check_folder(folder: Path) -> None:
    cfg_path = folder / "config.json"
    if cfg_path.exists():
        try:
            fmt = json.loads(cfg_path.read_text()).get("run_format")
        except (json.JSONDecodeError, AttributeError):
            fmt = None
        if fmt != RUN_FORMAT:
            raise DataError(
                f"{folder} is a run folder of another digitlab version (format "
                f"{fmt!r}, this version writes {RUN_FORMAT}); choose a new --out"
            )


def run_course(
    cfg: RunConfig,
    folder: str | Path,
    stages: Sequence[str] | None = None,
    quiet: bool = False,
    force: bool = False,
) -> dict:
    """Run the chosen stages into `folder`; returns the metrics written to metrics.json."""
    from digitlab.data import load_dataset

    validate_config(cfg)
    folder = Path(folder)
    _check_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    run = Run(folder, cfg, quiet)
    for sub in (run.figures, run.models, folder / "stages"):
        sub.mkdir(exist_ok=True)
    atomic_write_json(folder / "config.json", {"run_format": RUN_FORMAT, **asdict(cfg)})
    atomic_write_text(folder / "config.toml", config_toml(cfg))
    stages = list(stages) if stages is not None else list(STAGES)
    run.log(f"digitlab run: preset {cfg.preset}, stages {', '.join(stages)} -> {folder}")
    ds = load_dataset(cfg.data.dataset, cfg.data.data_dir)
    validate_config(cfg, len(ds.x_train))
    metrics_path = folder / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    metrics.setdefault("stages", {})
    metrics["environment"] = environment()
    for stage in stages:
        record = folder / "stages" / f"{stage}.json"
        key = _stage_key(cfg, stage)
        if not force and record.exists():
            saved = json.loads(record.read_text())
            if saved.get("key") == key:
                run.log(f"[{stage}] unchanged since it finished: reused")
                metrics["stages"][stage] = saved["metrics"]
                continue
        run.log(f"[{stage}] running")
        start = time.perf_counter()
        result = STAGE_FUNCTIONS[stage](run, ds)
        result["seconds"] = time.perf_counter() - start
        metrics["stages"][stage] = _jsonable(result)
        save_metrics(record, {"key": key, "metrics": result})
        save_metrics(metrics_path, metrics)
        run.log(f"[{stage}] done in {result['seconds']:.1f} s")
    save_metrics(metrics_path, metrics)
    from digitlab.report import write_report

    write_report(folder)
    run.log(f"report: {folder / 'report.html'}")
    return metrics


# ----- stages -------------------------------------------------------------------------------


def stage_data(run: Run, ds) -> dict:
    from digitlab import plots

    d = run.cfg.data
    summary = ds.summary()
    i = d.show_index if 0 <= d.show_index < len(ds.x_train) else 0
    plots.save(
        plots.digit(ds.x_train[i], f"x_train[{i}]: label {ds.classes[ds.y_train[i]]}"),
        run.figures / "data_digit.png",
    )
    members = np.flatnonzero(ds.y_train == d.gallery_digit)[:3]
    plots.save(
        plots.digits_grid(
            ds.x_train[members],
            [f"#{j}" for j in members],
            ncols=3,
            size=1.8,
            suptitle=f"Three {ds.classes[d.gallery_digit]}s",
        ),
        run.figures / "data_three.png",
    )
    rng = np.random.default_rng(d.seed)
    idx = np.concatenate(
        [
            rng.choice(np.flatnonzero(ds.y_train == c), 10, replace=False)
            for c in range(len(ds.classes))
        ]
    )
    plots.save(
        plots.digits_grid(
            ds.x_train[idx],
            None,
            ncols=10,
            size=0.9,
            suptitle="Ten random training images of every class",
        ),
        run.figures / "data_gallery.png",
    )
    return {
        "summary": summary,
        "shown_index": int(i),
        "figures": ["data_digit.png", "data_three.png", "data_gallery.png"],
    }


def stage_knn(run: Run, ds) -> dict:
    from digitlab.evaluation import write_evaluation
    from digitlab.experiments import KNNConfig, run_knn

    k = run.cfg.knn
    cfg = KNNConfig(
        k=k.k,
        train_size=k.train_size,
        seed=run.cfg.data.seed,
        weights=k.weights,
        deskew=k.deskew,
        pca=k.pca,
        device=run.cfg.device,
    )
    result = run_knn(ds, cfg)
    pred = result.pop("predictions")
    result.pop("proba")
    if k.compare_sklearn and not (k.deskew or k.pca):
        result["reference"] = _sklearn_knn(ds, cfg, pred)
    files = write_evaluation(run.figures, "knn", result, ds.x_test, ds.y_test, pred, ds.classes)
    result["figures"] = [p.name for p in files.values()]
    return result


def _sklearn_knn(ds, cfg, ours) -> dict:
    """scikit-learn's brute-force kNN on the same subset: its time and agreement with ours."""
    from sklearn.neighbors import KNeighborsClassifier

    from digitlab.data import random_subset

    x, y = random_subset(ds.x_train, ds.y_train, cfg.train_size, cfg.seed)
    start = time.perf_counter()
    model = KNeighborsClassifier(cfg.k, weights=cfg.weights, algorithm="brute")
    pred = model.fit(x.reshape(len(x), -1), y).predict(ds.x_test.reshape(len(ds.x_test), -1))
    return {
        "library": "scikit-learn",
        "fit_predict_s": time.perf_counter() - start,
        "identical_predictions": bool(np.array_equal(pred, ours)),
    }


def stage_sweep(run: Run, ds) -> dict:
    from digitlab import plots
    from digitlab.experiments import KNNConfig, parse_k_range, run_knn_sweep

    s = run.cfg.sweep
    ks = parse_k_range(s.ks)
    cfg = KNNConfig(
        k=max(ks),
        train_size=s.train_size,
        seed=run.cfg.data.seed,
        weights=run.cfg.knn.weights,
        device=run.cfg.device,
    )
    result = run_knn_sweep(ds, cfg, ks, s.val_fraction)
    plots.save(
        plots.k_sweep(ks, result["val_accuracy"], result["test_accuracy"], result["chosen_k"]),
        run.figures / "knn_sweep.png",
    )
    result["figures"] = ["knn_sweep.png"]
    return result


def stage_cnn(run: Run, ds) -> dict:
    from digitlab.cli_cnn import train_and_save
    from digitlab.train import CHECKPOINT, TrainConfig

    c = run.cfg.cnn
    cfg = TrainConfig(
        epochs=c.epochs,
        batch_size=c.batch_size,
        lr=c.lr,
        train_size=c.train_size,
        seed=run.cfg.data.seed,
        device=run.cfg.device,
        threads=c.threads,
        augment=c.augment,
        lr_schedule=c.lr_schedule,
        ema=c.ema,
    )
    cfg.validate(len(ds.x_train))
    out = run.models / "cnn"
    resume = (out / CHECKPOINT).exists()
    if resume:
        run.log("[cnn] continuing from its checkpoint")
    try:
        metrics = train_and_save(ds, cfg, out, resume, run.quiet, figures=run.figures)
    except ConfigError:
        # The checkpoint belongs to other settings (the stage key changed): start afresh.
        (out / CHECKPOINT).unlink()
        metrics = train_and_save(ds, cfg, out, False, run.quiet, figures=run.figures)
    return metrics


def stage_cluster(run: Run, ds) -> dict:
    from digitlab.cli_cluster import write_cluster_outputs
    from digitlab.clustering import ClusterConfig, run_clustering

    c = run.cfg.cluster
    cfg = ClusterConfig(
        embedding=c.embedding,
        method=c.method,
        deskew=c.deskew,
        n_clusters=c.n_clusters,
        n_init=c.n_init,
        train_size=c.train_size,
        seed=run.cfg.data.seed,
        device=run.cfg.device,
    )
    result = run_clustering(ds, cfg)
    files = write_cluster_outputs(ds, result, run.figures, run.cfg.data.seed)
    out = {k: v for k, v in result.items() if k not in ("test_clusters", "centre_images")}
    out["figures"] = [p.name for p in files.values()]
    return out


def stage_gan(run: Run, ds) -> dict:
    from digitlab import plots
    from digitlab.cli_gan import _generator
    from digitlab.gan import check_digit, generate, generate_grid, interpolate, write_gif

    c = run.cfg.gan
    for digit in (c.digit, c.interpolate_from, c.interpolate_to):
        check_digit(digit)
    if c.model is None and not (_shipped_dir() / "config.json").is_file():
        reason = (
            "no generator is shipped with this digitlab; train one with `digitlab gan "
            "train --out DIR` and run with gan.model=DIR/generator"
        )
        run.log(f"[gan] skipped: {reason}")
        return {"skipped": reason}
    g = _generator(Path(c.model) if c.model else None)
    seed = run.cfg.data.seed
    plots.save(
        plots.digits_grid(
            generate_grid(g, 10, seed),
            None,
            ncols=10,
            size=0.9,
            suptitle="Generated digits: row d was asked for digit d",
        ),
        run.figures / "gan_grid.png",
    )
    plots.save(
        plots.digits_grid(
            generate(g, c.digit, 10, seed),
            None,
            ncols=10,
            size=1.2,
            suptitle=f"Ten generated {c.digit}s",
        ),
        run.figures / "gan_digit.png",
    )
    frames = interpolate(g, c.interpolate_from, c.interpolate_to, c.steps, seed)
    write_gif(frames, run.figures / "gan_interpolation.gif")
    plots.save(
        plots.digits_grid(
            frames,
            None,
            ncols=len(frames),
            size=1.1,
            suptitle=f"From {c.interpolate_from} to {c.interpolate_to}",
        ),
        run.figures / "gan_interpolation.png",
    )
    meta_path = (Path(c.model) if c.model else _shipped_dir()) / "metadata.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return {
        "model": c.model or "shipped",
        "generator_metadata": meta,
        "figures": [
            "gan_grid.png",
            "gan_digit.png",
            "gan_interpolation.gif",
            "gan_interpolation.png",
        ],
    }


def _shipped_dir() -> Path:
    from digitlab.cli_gan import SHIPPED

    return SHIPPED


STAGE_FUNCTIONS: dict[str, Callable[[Run, object], dict]] = {
    "data": stage_data,
    "knn": stage_knn,
    "sweep": stage_sweep,
    "cnn": stage_cnn,
    "cluster": stage_cluster,
    "gan": stage_gan,
}
