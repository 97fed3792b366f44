"""The whole course as stages, from one configuration, into one run folder.

A run folder holds the resolved `config.json`/`config.toml`, `metrics.json` (every stage's
figures, timing and the environment), `figures/`, `models/`, `stages/` (one record per finished
stage), `run.log` and `report.html`. A stage whose settings and data are unchanged since it last
finished is reused, so an interrupted run picks up where it stopped (the CNN also from its last
epoch).
Each stage is one call into the task layer (`digitlab.tasks`).

The config, metrics.json and report.html are written together, only when the run finishes:
a failed or interrupted rerun leaves the last finished run's three consistent (the failure is
in run.log). So do the stages' figures and models: a stage writes them, and its record, under
`.staged/<stage>/`, and they are moved into `figures/`, `models/` and `stages/` with the
results (a killed rerun with other settings once left its figures and CNN beside the last
finished run's metrics). A staged stage is reused by the next run with the same settings.
While a run works in its folder it holds the folder's lock (`files.folder_lock`): a second
run on the same folder stops at once and names the process that holds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from digitlab import __version__, figures
from digitlab.checkpoint import load_state
from digitlab.data import Dataset, get_spec
from digitlab.errors import CheckpointMismatch, DataError
from digitlab.files import jsonable, read_json_object, replace_together, save_metrics
from digitlab.folders import claim
from digitlab.report import check_stage, render_report
from digitlab.run_config import STAGES, RunConfig, config_toml, validate_config
from digitlab.tasks import cluster as cluster_task
from digitlab.tasks import cnn as cnn_task
from digitlab.tasks import data as data_task
from digitlab.tasks import gan as gan_task
from digitlab.tasks import knn as knn_task
from digitlab.train import CHECKPOINT, History

RUN_FORMAT = 1
#: Where a finished stage's figures, models and record wait until the run's results are
#: committed together (`_commit`).
STAGED = ".staged"
RECORD = "record.json"

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
    force: bool = False  # every stage afresh: no reuse, no checkpoint continued

    @property
    def figures(self) -> Path:
        """Where every stage's figures go (the report reads them there)."""
        return self.folder / "figures"

    @property
    def models(self) -> Path:
        """Where the finished run's trained models are."""
        return self.folder / "models"

    def staged(self, stage: str) -> Path:
        """Where `stage` writes its figures (`figures/`), models (`models/`) and record until
        the run's results are committed."""
        return self.folder / STAGED / stage

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


def _finished(stage: str, record: Path, key: str) -> dict | None:
    """The metrics a stage's record holds if it finished with `key` (these settings and data);
    None otherwise. A missing or damaged record only means the stage cannot be reused; so does
    one whose figures a report cannot show (hand-edited: it was reused, then every report
    failed until it was deleted by hand)."""
    with contextlib.suppress(DataError):
        saved = read_json_object(record)
        if saved.get("key") == key and isinstance(saved.get("metrics"), dict):
            check_stage(stage, saved["metrics"])
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
        run = Run(folder, cfg, quiet, on_epoch=on_epoch, force=force)
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
    """Load the data, run or reuse each stage, then commit config, metrics, report and the
    stages' figures, models and records together."""
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
    ready: dict[str, Path] = {}  # stage -> its staged outputs, committed with the results
    for stage in stages:
        key = _stage_key(cfg, stage, identity["digest"])
        staged = run.staged(stage)
        if not force:
            saved = _finished(stage, staged / RECORD, key)
            if saved is not None:
                run.log(
                    f"[{stage}] finished earlier with these settings (not yet committed): reused"
                )
                metrics["stages"][stage] = saved
                ready[stage] = staged
                continue
            saved = _finished(stage, folder / "stages" / f"{stage}.json", key)
            if saved is not None:
                run.log(f"[{stage}] unchanged since it finished: reused")
                metrics["stages"][stage] = saved
                continue
        _clear_staged(staged, keep_models=not force)
        run.log(f"[{stage}] running")
        start = time.perf_counter()
        result = STAGE_FUNCTIONS[stage](run, ds, staged)
        result["seconds"] = time.perf_counter() - start
        metrics["stages"][stage] = jsonable(result)
        save_metrics(staged / RECORD, {"key": key, "metrics": result})
        ready[stage] = staged
        run.log(f"[{stage}] done in {result['seconds']:.1f} s")
    # Stages not run this time are in the results only as their records made with these
    # settings and data (their key): `--stages knn --seed 1` once kept seed 0's CNN beside
    # seed 1's config.
    for stage in [s for s in (*STAGES, *metrics["stages"]) if s not in stages]:
        key = _stage_key(cfg, stage, identity["digest"])
        saved = _finished(stage, run.staged(stage) / RECORD, key)
        if saved is not None:
            ready[stage] = run.staged(stage)
        else:
            saved = _finished(stage, folder / "stages" / f"{stage}.json", key)
        if saved is not None:
            metrics["stages"][stage] = saved
        elif metrics["stages"].pop(stage, None) is not None:
            run.log(
                f"[{stage}] left out of these results: it was made with other settings or "
                f"data (run it again with --stages {stage})"
            )
    config = jsonable({"run_format": RUN_FORMAT, **cfg.as_dict()})
    metrics = jsonable(metrics)
    # Together, and only now: the folder never pairs one run's settings with another's results
    # or figures (written in full first, then renamed into place with Ctrl-C held back). The
    # report is rendered from the staged figures before they move.
    figure_dirs = {stage: staged / "figures" for stage, staged in ready.items()}
    replace_together(
        {
            folder / "config.json": json.dumps(config, indent=2) + "\n",
            folder / "config.toml": config_toml(cfg),
            metrics_path: json.dumps(metrics, indent=2) + "\n",
            folder / "report.html": render_report(folder, metrics, config, figure_dirs),
        },
        first=lambda: _move_staged(run, ready),
    )
    _tidy_staged(run, ready)
    run.log(f"report: {folder / 'report.html'}")
    return metrics


def _clear_staged(staged: Path, keep_models: bool) -> None:
    """Make `staged` ready for its stage to run: no record, no figures; an unfinished CNN's
    checkpoint kept (`keep_models`) so that it resumes."""
    if keep_models:
        (staged / RECORD).unlink(missing_ok=True)
        shutil.rmtree(staged / "figures", ignore_errors=True)
    else:
        shutil.rmtree(staged, ignore_errors=True)
    (staged / "figures").mkdir(parents=True, exist_ok=True)


def _move_staged(run: Run, ready: dict[str, Path]) -> None:
    """Move each ready stage's figures, models and record into the run's own places (renames
    in one folder: called by `replace_together` with Ctrl-C held back)."""
    for stage, staged in ready.items():
        made = set()
        source = staged / "figures"
        for path in sorted(source.rglob("*")) if source.is_dir() else []:
            if path.is_file():
                name = path.relative_to(source)
                (run.figures / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, run.figures / name)
                made.add(name.as_posix())
        for name in figures.BY_STAGE.get(stage, {}).values():
            if name not in made:  # no longer made (a GAN stage now skipped): not the old one
                (run.figures / name).unlink(missing_ok=True)
        models = staged / "models"
        for model in sorted(models.iterdir()) if models.is_dir() else []:
            target = run.models / model.name
            old = run.models / f".{model.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            if target.exists():
                os.replace(target, old)
            os.replace(model, target)
        os.replace(staged / RECORD, run.folder / "stages" / f"{stage}.json")


def _tidy_staged(run: Run, ready: dict[str, Path]) -> None:
    """After a commit: the replaced models and the committed stages' leftovers go, and so do
    finished stages of other settings; an unfinished stage (a CNN's checkpoint) stays to resume."""
    for old in run.models.glob(".*.old"):
        shutil.rmtree(old, ignore_errors=True)
    root = run.folder / STAGED
    for staged in sorted(root.iterdir()) if root.is_dir() else []:
        if staged in ready.values() or (staged / RECORD).exists():
            shutil.rmtree(staged, ignore_errors=True)


# ----- stages: one task call each; `out` is the stage's staged folder ---------------------


def stage_data(run: Run, ds: Dataset, out: Path) -> dict:
    """The dataset's summary and its first pictures."""
    return data_task.overview(ds, run.cfg.data, run.cfg.seed, out / "figures")


def stage_knn(run: Run, ds: Dataset, out: Path) -> dict:
    """kNN at the configured k, fully evaluated (and compared with scikit-learn)."""
    return knn_task.evaluate_knn(ds, run.cfg.stage("knn"), out / "figures", metrics_file=None)


def stage_sweep(run: Run, ds: Dataset, out: Path) -> dict:
    """k chosen on a validation split."""
    return knn_task.sweep(ds, run.cfg.stage("sweep"), out / "figures", metrics_file=None)


def stage_cnn(run: Run, ds: Dataset, out: Path) -> dict:
    """The CNN, trained (or resumed from its checkpoint), saved and evaluated."""
    cfg = run.cfg.stage("cnn")
    model_dir = out / "models" / "cnn"
    checkpoint = model_dir / CHECKPOINT
    finished = run.models / "cnn" / CHECKPOINT
    if not checkpoint.exists() and finished.is_file() and not run.force:
        # The finished run's training continues where it can (more epochs asked for); one
        # made with other settings is refused below and trained afresh.
        shutil.copytree(run.models / "cnn", model_dir, dirs_exist_ok=True)
    if checkpoint.exists():
        try:
            load_state(checkpoint)
        except DataError as exc:  # a truncated checkpoint: the run's own, so start over
            run.log(f"[cnn] {exc}: training afresh")
            checkpoint.unlink()
    resume = checkpoint.exists()
    if resume:
        run.log("[cnn] continuing from its checkpoint")
    report = _epoch_figures("cnn", run.on_epoch) if run.on_epoch is not None else None
    try:
        return cnn_task.train_and_save(
            ds, cfg, model_dir, resume, run.quiet, figures_dir=out / "figures", on_epoch=report
        )
    except CheckpointMismatch as exc:
        # The checkpoint belongs to other settings or data, or has more epochs than asked for
        # (the stage key changed): train afresh, so the model is made with these settings.
        run.log(f"[cnn] {exc}: training afresh")
        checkpoint.unlink()
        return cnn_task.train_and_save(
            ds, cfg, model_dir, False, run.quiet, figures_dir=out / "figures", on_epoch=report
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


def stage_cluster(run: Run, ds: Dataset, out: Path) -> dict:
    """k-means (or the configured method), scored, with its pictures."""
    return cluster_task.cluster(ds, run.cfg.stage("cluster"), out / "figures", metrics_file=None)


def stage_gan(run: Run, ds: Dataset, out: Path) -> dict:
    """Generated digits and the morph (skipped with a note when there is no generator)."""
    result = gan_task.course_samples(run.cfg.stage("gan"), out / "figures", dataset=ds.name)
    if "skipped" in result:
        run.log(f"[gan] skipped: {result['skipped']}")
    return result


STAGE_FUNCTIONS: dict[str, Callable[[Run, Dataset, Path], dict]] = {
    "data": stage_data,
    "knn": stage_knn,
    "sweep": stage_sweep,
    "cnn": stage_cnn,
    "cluster": stage_cluster,
    "gan": stage_gan,
}
