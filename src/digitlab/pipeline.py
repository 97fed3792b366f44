"""The whole course as stages, from one configuration, into one run folder.

A run folder holds the resolved `config.json`/`config.toml`, `metrics.json` (every stage's
figures, timing and the environment), `figures/`, `models/`, `stages/` (one record per finished
stage), `run.log` and `report.html`. A stage whose settings and data are unchanged since it last
finished is reused, so an interrupted run picks up where it stopped (the CNN also from its last
epoch).
Each stage is one call into the task layer (`digitlab.tasks`).

The config, metrics.json and report.html are written together, only when the run finishes:
a failed or interrupted rerun leaves the last finished run's three consistent (the failure is
in run.log). While a run works in its folder it holds the folder's lock (`files.folder_lock`):
a second run on the same folder stops at once and names the process that holds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from digitlab import __version__
from digitlab.data import Dataset, get_spec
from digitlab.errors import CheckpointMismatch, DataError
from digitlab.files import jsonable, read_json_object, replace_together, save_metrics
from digitlab.folders import claim
from digitlab.report import render_report
from digitlab.run_config import STAGES, RunConfig, config_toml, validate_config
from digitlab.tasks import cluster as cluster_task
from digitlab.tasks import cnn as cnn_task
from digitlab.tasks import data as data_task
from digitlab.tasks import gan as gan_task
from digitlab.tasks import knn as knn_task
from digitlab.train import CHECKPOINT, History

RUN_FORMAT = 1

#: `on_epoch(stage, epoch, figures)`: a training stage's figures after each finished epoch
#: (0-based epoch; figures are that epoch's history values, e.g. "val_accuracy", "val_loss").
EpochCallback = Callable[[str, int, dict[str, float]], None]


@dataclass
class Run:
    """A run in progress: its folder, settings, and the log every stage writes to."""

    folder: Path
    cfg: RunConfig
    quiet: bool = False
    log_lines: list[str] = field(default_factory=list)
    # Per-epoch figures of a training stage: on_epoch(stage, epoch, {"val_accuracy": ...}).
    on_epoch: EpochCallback | None = None

    @property
    def figures(self) -> Path:
        """Where every stage's figures go (the report reads them there)."""
        return self.folder / "figures"

    @property
    def models(self) -> Path:
        """Where trained models and their checkpoints go."""
        return self.folder / "models"

    def log(self, text: str, shown: str | None = None) -> None:
        """Append a timestamped line to run.log and, unless quiet, print it (or `shown`)."""
        line = f"{datetime.now(UTC).strftime('%H:%M:%S')} {text}"
        with open(self.folder / "run.log", "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        if not self.quiet:
            print(text if shown is None else shown, flush=True)


def environment() -> dict:
    """Versions, platform, CPU capability, GPU and threads: what the timings depend on."""
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


def _stage_key(cfg: RunConfig, stage: str, data_digest: str = "") -> str:
    settings = cfg.as_dict()
    data = dict(settings["data"])
    if data_digest:
        # The digest says what the data are; where they were found (--data-dir, $DIGITLAB_DATA,
        # the cache, a copy) does not change a result. With the folder in the key, the same
        # files reached two ways reran every stage.
        data.pop("data_dir", None)
    parts = {
        "stage": stage,
        "seed": cfg.seed,
        "data": data,
        "data_digest": data_digest,  # the files' contents: replaced files rerun the stage
        "settings": data if stage == "data" else settings[stage],
        "version": __version__,
    }
    if stage == "gan":  # the generator's files, as the data's digest: replaced, it reruns
        with contextlib.suppress(DataError, OSError):
            parts["generator"] = gan_task.model_digest(cfg.stage("gan"))
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _finished(record: Path, key: str) -> dict | None:
    """The metrics a stage's record holds if it finished with `key` (these settings and data);
    None otherwise. A missing or damaged record only means the stage cannot be reused."""
    with contextlib.suppress(DataError):
        saved = read_json_object(record)
        if saved.get("key") == key and isinstance(saved.get("metrics"), dict):
            return saved["metrics"]
    return None


def _previous_metrics(run: Run, path: Path) -> dict:
    """The last finished run's metrics.json, whose stages this run keeps or replaces.

    Every figure in it is also in a stage record (stages/*.json), from which this run takes
    what it keeps: a damaged or hand-broken metrics.json is logged and rebuilt from them, not
    a stop (it once stopped every rerun, naming the file but not what to do).
    """
    if not path.exists():
        return {"stages": {}}
    try:
        metrics = read_json_object(path)
        if not isinstance(metrics.setdefault("stages", {}), dict):
            raise DataError(f"{path} holds no table of stages")
    except DataError as exc:
        run.log(f"{exc}: rebuilt from the stage records")
        return {"stages": {}}
    return metrics


def _check_folder(folder: Path) -> None:
    cfg_path = folder / "config.json"
    if cfg_path.exists():
        fmt = read_json_object(cfg_path).get("run_format")  # a damaged one: named, one line
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
    on_epoch: EpochCallback | None = None,
) -> dict:
    """Run the chosen stages into `folder`; returns the metrics written to metrics.json.

    Every setting is checked before the folder is made or any data loads (ConfigError).
    `on_epoch(stage, epoch, figures)` is called after each epoch of a training stage (the CNN)
    with that epoch's figures (`val_accuracy`, `val_loss`, `loss`, `accuracy`): a sweep reports
    them to its early-stopping scheduler.
    """
    validate_config(cfg)
    stages = list(stages) if stages is not None else list(STAGES)
    if "gan" in stages:
        gan_task.check_model(cfg.stage("gan"))
    folder = Path(folder)
    _check_folder(folder)
    # Before the data and any work: an unwritable place (OutputError), another command's
    # folder, and a second writer are refused here.
    with claim(folder, "run"):
        run = Run(folder, cfg, quiet, on_epoch=on_epoch)
        for sub in (run.figures, run.models, folder / "stages"):
            sub.mkdir(exist_ok=True)
        run.log(f"digitlab run: preset {cfg.preset}, stages {', '.join(stages)} -> {folder}")
        try:
            return _run_stages(run, stages, force)
        except BaseException as exc:
            kept = (
                "config, metrics.json and report.html are still those of the last finished "
                "run (finished stages are kept and reused on the next run)"
                if (folder / "config.json").exists()
                else "no results were written yet (finished stages are kept and reused on "
                "the next run)"
            )
            if isinstance(exc, KeyboardInterrupt):
                run.log(f"interrupted; {kept}")
            else:  # the error itself is the caller's to show (the CLI prints it once)
                run.log(f"failed: {exc}; {kept}", shown=f"stopped; {kept}")
            raise


def _run_stages(run: Run, stages: list[str], force: bool) -> dict:
    """Load the data, run or reuse each stage, then write config, metrics and report together."""
    cfg, folder = run.cfg, run.folder
    ds = data_task.load(cfg.data)
    validate_config(cfg, len(ds.x_train))
    identity = ds.identity()
    metrics_path = folder / "metrics.json"
    metrics = _previous_metrics(run, metrics_path)
    metrics["environment"] = environment()
    spec = get_spec(ds.name)
    metrics["dataset"] = {
        "name": ds.name,
        "title": spec.title,
        "description": spec.description,
        "classes": list(ds.classes),
        "digest": identity["digest"],
    }
    for stage in stages:
        record = folder / "stages" / f"{stage}.json"
        key = _stage_key(cfg, stage, identity["digest"])
        saved = None if force else _finished(record, key)
        if saved is not None:
            run.log(f"[{stage}] unchanged since it finished: reused")
            metrics["stages"][stage] = saved
            continue
        run.log(f"[{stage}] running")
        start = time.perf_counter()
        result = STAGE_FUNCTIONS[stage](run, ds)
        result["seconds"] = time.perf_counter() - start
        metrics["stages"][stage] = jsonable(result)
        save_metrics(record, {"key": key, "metrics": result})
        run.log(f"[{stage}] done in {result['seconds']:.1f} s")
    # Stages not run this time are in the results only as their records made with these
    # settings and data (their key): `--stages knn --seed 1` once kept seed 0's CNN beside
    # seed 1's config.
    for stage in [s for s in (*STAGES, *metrics["stages"]) if s not in stages]:
        key = _stage_key(cfg, stage, identity["digest"])
        saved = _finished(folder / "stages" / f"{stage}.json", key)
        if saved is not None:
            metrics["stages"][stage] = saved
        elif metrics["stages"].pop(stage, None) is not None:
            run.log(
                f"[{stage}] left out of these results: it was made with other settings or "
                f"data (run it again with --stages {stage})"
            )
    # Together, and only now: the folder never pairs one run's settings with another's results
    # (written in full first, then renamed into place with Ctrl-C held back).
    config = jsonable({"run_format": RUN_FORMAT, **cfg.as_dict()})
    metrics = jsonable(metrics)
    replace_together(
        {
            folder / "config.json": json.dumps(config, indent=2) + "\n",
            folder / "config.toml": config_toml(cfg),
            metrics_path: json.dumps(metrics, indent=2) + "\n",
            folder / "report.html": render_report(folder, metrics, config),
        }
    )
    run.log(f"report: {folder / 'report.html'}")
    return metrics


# ----- stages: one task call each ----------------------------------------------------------


def stage_data(run: Run, ds: Dataset) -> dict:
    """The dataset's summary and its first pictures."""
    return data_task.overview(ds, run.cfg.data, run.cfg.seed, run.figures)


def stage_knn(run: Run, ds: Dataset) -> dict:
    """kNN at the configured k, fully evaluated (and compared with scikit-learn)."""
    return knn_task.evaluate_knn(ds, run.cfg.stage("knn"), run.figures, metrics_file=None)


def stage_sweep(run: Run, ds: Dataset) -> dict:
    """k chosen on a validation split."""
    return knn_task.sweep(ds, run.cfg.stage("sweep"), run.figures, metrics_file=None)


def stage_cnn(run: Run, ds: Dataset) -> dict:
    """The CNN, trained (or resumed from the run's checkpoint), saved and evaluated."""
    cfg = run.cfg.stage("cnn")
    out = run.models / "cnn"
    resume = (out / CHECKPOINT).exists()
    if resume:
        run.log("[cnn] continuing from its checkpoint")
    report = _epoch_figures("cnn", run.on_epoch) if run.on_epoch is not None else None
    try:
        return cnn_task.train_and_save(
            ds, cfg, out, resume, run.quiet, figures_dir=run.figures, on_epoch=report
        )
    except CheckpointMismatch as exc:
        # The checkpoint belongs to other settings or data, or has more epochs than asked for
        # (the stage key changed): train afresh, so the model is made with these settings.
        run.log(f"[cnn] {exc}: training afresh")
        (out / CHECKPOINT).unlink()
        return cnn_task.train_and_save(
            ds, cfg, out, False, run.quiet, figures_dir=run.figures, on_epoch=report
        )


def _epoch_figures(stage: str, on_epoch: EpochCallback) -> Callable[[int, History], None]:
    """A training loop's `on_epoch(epoch, history)` -> `on_epoch(stage, epoch, figures)`."""

    def report(epoch: int, history: History) -> None:
        figures = {
            name: float(values[-1])
            for name, values in history.as_dict().items()
            if name != "epoch_seconds" and values
        }
        on_epoch(stage, epoch, figures)

    return report


def stage_cluster(run: Run, ds: Dataset) -> dict:
    """k-means (or the configured method), scored, with its pictures."""
    return cluster_task.cluster(ds, run.cfg.stage("cluster"), run.figures, metrics_file=None)


def stage_gan(run: Run, ds: Dataset) -> dict:
    """Generated digits and the morph (skipped with a note when there is no generator)."""
    result = gan_task.course_samples(run.cfg.stage("gan"), run.figures, dataset=ds.name)
    if "skipped" in result:
        run.log(f"[gan] skipped: {result['skipped']}")
    return result


STAGE_FUNCTIONS: dict[str, Callable[[Run, Dataset], dict]] = {
    "data": stage_data,
    "knn": stage_knn,
    "sweep": stage_sweep,
    "cnn": stage_cnn,
    "cluster": stage_cluster,
    "gan": stage_gan,
}
