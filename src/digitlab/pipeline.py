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
results as one journalled commit (`digitlab.commit`: a run killed while committing is
completed by the next run). A staged stage is reused by the next run with the same settings;
a committed stage left out of new results (`--stages` with other settings) goes back there.
While a run works in its folder it holds the folder's lock (`files.folder_lock`): a second
run on the same folder stops at once and names the process that holds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from digitlab import __version__
from digitlab import commit as commits
from digitlab.checkpoint import load_state
from digitlab.commit import RECORD, STAGED
from digitlab.data import Dataset, get_spec
from digitlab.errors import CheckpointMismatch, ConfigError, DataError
from digitlab.files import (
    OutputError,
    json_text,
    jsonable,
    read_json_object,
    save_metrics,
    shown_name,
    signals_deferred,
)
from digitlab.folders import claim
from digitlab.report import check_stage, render_report
from digitlab.run_config import STAGES, RunConfig, choose_stages, config_toml, validate_config
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
    force: bool = False  # every stage afresh: no reuse, no checkpoint continued
    committed: bool = False  # its results are in place (an interrupt after that loses none)

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
        return commits.staged(self.folder, stage)

    def log(self, text: str, shown: str | None = None) -> None:
        """Append a timestamped line to run.log and, unless quiet, print it (or `shown`;
        an empty `shown` prints nothing)."""
        line = f"{datetime.now(UTC).strftime('%H:%M:%S')} {text}"
        with open(self.folder / "run.log", "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        if not self.quiet and shown != "":
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
    return hashlib.sha256(json.dumps(_plain(parts), sort_keys=True).encode()).hexdigest()[:16]


def _plain(value):
    """`value` with whole floats as ints: 512.0 from a config file is the setting 512 (the
    run's own config.toml, given back, once reran the kNN stages)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


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
        try:
            fmt = read_json_object(cfg_path).get("run_format")
        except DataError:  # damaged: this run writes it anew (its stage records hold the keys)
            return
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
    if isinstance(stages, str):  # "knn" once ran the stages "k" and "n"
        raise ConfigError(f"stages must be a list of stage names, got the string {stages!r}")
    stages = choose_stages(None if stages is None else list(stages))
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
        run.log(f"digitlab run: {cfg.source()}, stages {', '.join(stages)} -> {shown_name(folder)}")
        if commits.finish(folder):
            run.log("finished putting in place the results of a run stopped while it did")
        try:
            return _run_stages(run, stages, force)
        except BaseException as exc:
            if run.committed:
                kept = "its results were written first"
            elif (folder / STAGED / commits.JOURNAL).exists():
                kept = (
                    "its results were being put in place; the next run (or `digitlab "
                    "report`) finishes that first"
                )
            elif (folder / "config.json").exists():
                kept = (
                    "config, metrics.json and report.html are still those of the last "
                    "finished run (finished stages are kept and reused on the next run)"
                )
            else:
                kept = (
                    "no results were written yet (finished stages are kept and reused on "
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
    validate_config(cfg, len(ds.x_train), stages)  # only the stages run meet the data
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
            if saved is not None and not _intact(run, stage, saved, staged):
                saved = None
            if saved is not None:
                run.log(
                    f"[{stage}] finished earlier with these settings (not yet committed): reused"
                )
                metrics["stages"][stage] = saved
                ready[stage] = staged
                continue
            saved = _finished(stage, folder / "stages" / f"{stage}.json", key)
            if saved is not None and not _intact(run, stage, saved, folder):
                saved = None
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
        for note in result.get("notes") or []:  # the CLI prints them with the results
            run.log(f"[{stage}] note: {note}", shown="")
    # Stages not run this time are in the results only as their records made with these
    # settings and data (their key): `--stages knn --seed 1` once kept seed 0's CNN beside
    # seed 1's config.
    aside: list[str] = []
    for stage in [s for s in metrics["stages"] if s not in STAGES]:
        metrics["stages"].pop(stage)  # a hand edit or another version's: no record of ours
        run.log(f"[{stage}] left out of these results: digitlab has no such stage")
    for stage in [s for s in STAGES if s not in stages]:
        key = _stage_key(cfg, stage, identity["digest"])
        saved = _finished(stage, run.staged(stage) / RECORD, key)
        if saved is not None and _intact(run, stage, saved, run.staged(stage)):
            ready[stage] = run.staged(stage)
        else:
            saved = _finished(stage, folder / "stages" / f"{stage}.json", key)
            if saved is not None and not _intact(run, stage, saved, folder):
                saved = None
        if saved is not None:
            metrics["stages"][stage] = saved
            continue
        aside.append(stage)  # its outputs too: the folder shows this run's files only
        waiting = run.staged(stage) / RECORD
        if waiting.exists() and (folder / "stages" / f"{stage}.json").exists():
            run.log(
                f"[{stage}] a finished {stage} of other settings waiting in {STAGED}/ is "
                "replaced by the one set aside now"
            )
        if metrics["stages"].pop(stage, None) is not None:
            run.log(
                f"[{stage}] left out of these results: it was made with other settings or "
                f"data (run it again with --stages {stage}; kept under {STAGED}/ meanwhile)"
            )
    config = jsonable({"run_format": RUN_FORMAT, **cfg.as_dict()})
    metrics = jsonable(metrics)
    # Together, and only now: the folder never pairs one run's settings with another's results
    # or figures (written in full first, then moved into place as one journalled commit with
    # Ctrl-C held back). The report is rendered from the staged figures before they move.
    figure_dirs = {stage: staged / "figures" for stage, staged in ready.items()}
    texts = {
        "config.json": json_text(config),
        "config.toml": config_toml(cfg),
        "metrics.json": json_text(metrics),
        "report.html": render_report(folder, metrics, config, figure_dirs),
    }
    steps = [step for stage in ready for step in commits.stage_steps(folder, stage)]
    steps += [step for stage in aside for step in commits.aside_steps(folder, stage)]
    with signals_deferred():  # an interrupt meanwhile comes after the run knows it is done
        commits.commit(folder, texts, steps)
        run.committed = True
        commits.tidy(folder, list(ready))
    run.log(f"report: {shown_name(folder / 'report.html')}")
    return metrics


def _intact(run: Run, stage: str, saved: dict, where: Path) -> bool:
    """Whether a finished stage's figures (and the CNN's model) are still in `where` (the run
    folder, or the stage's staged folder) for it to be reused; a deleted or damaged one is
    logged and the stage runs again (it was reused, and the model stayed missing)."""
    names = saved.get("figures")
    missing = [
        n
        for n in (names.values() if isinstance(names, dict) else [])
        if not isinstance(n, str) or not _readable_picture(where / "figures" / n)
    ]
    if stage == "cnn" and not _readable_weights(where / "models" / "cnn" / "model"):
        missing.append("models/cnn")
    if missing:
        run.log(f"[{stage}] its {', '.join(map(str, missing))} are missing or damaged")
    return not missing


def _readable_picture(path: Path) -> bool:
    """Whether a figure is there and a whole PNG/GIF (an emptied or cut file was reused)."""
    from PIL import Image

    try:
        with Image.open(path) as picture:
            picture.load()
    except (OSError, ValueError, SyntaxError):
        return False
    return True


def _readable_weights(model: Path) -> bool:
    """Whether a saved model's config and safetensors weights are there and read in full."""
    from safetensors import SafetensorError, safe_open

    try:
        read_json_object(model / "config.json")
        with safe_open(str(model / "model.safetensors"), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (not a dict)
                f.get_tensor(name)
    except (DataError, SafetensorError, OSError, ValueError):
        return False
    return True


def _clear_staged(staged: Path, keep_models: bool) -> None:
    """Make `staged` ready for its stage to run: no record, no figures; an unfinished CNN's
    checkpoint kept (`keep_models`) so that it resumes."""
    if keep_models:
        (staged / RECORD).unlink(missing_ok=True)
        shutil.rmtree(staged / "figures", ignore_errors=True)
    else:
        shutil.rmtree(staged, ignore_errors=True)
    (staged / "figures").mkdir(parents=True, exist_ok=True)


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
        try:
            shutil.copytree(run.models / "cnn", model_dir, dirs_exist_ok=True)
        except shutil.Error as exc:  # its message is a list of every file's failure
            _source, _target, why = exc.args[0][0]
            raise OutputError(f"cannot copy {run.models / 'cnn'} to {model_dir}: {why}") from None
    if checkpoint.exists():
        try:
            load_state(checkpoint)
        except DataError as exc:  # a truncated checkpoint: the run's own, so start over
            run.log(f"[cnn] {exc}: training afresh")
            checkpoint.unlink()
    resume = checkpoint.exists()
    if resume:
        run.log("[cnn] continuing from its checkpoint (if it was made with these settings)")
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
