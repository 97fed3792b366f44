"""The GAN steps: train (resumable, with per-epoch samples), generate, morph, evaluate."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab import figures, plots
from digitlab.cnn import CourseCNN
from digitlab.data import Dataset
from digitlab.device import resolve_device
from digitlab.download import file_digest
from digitlab.errors import ConfigError
from digitlab.files import read_json_object, save_metrics
from digitlab.gan import (
    MAX_STEPS,
    Generator,
    check_count,
    check_digit,
    generate,
    generate_grid,
    interpolate,
)
from digitlab.gan_quality import evaluate_generator
from digitlab.gan_train import GANHistory, GANTrainConfig, train_gan
from digitlab.loaders import (
    generator_folder,
    has_shipped_generator,
    load_cnn,
    load_gan_generator,
    save_generator,
)
from digitlab.validation import check_seed

MAX_FIGURE = 1000  # generated digits in one PNG: more takes minutes and gigabytes to draw
MAX_PER_DIGIT = 2000  # images per digit for `evaluate` (features of 10x that many are kept)


@dataclass
class SamplesConfig:
    """What the course's GAN step draws, and with which generator."""

    model: str | None = None  # a saved generator; None: the one shipped with digitlab
    digit: int = 3
    interpolate_from: int = 2
    interpolate_to: int = 6
    steps: int = 9
    device: str = "auto"
    seed: int = 0

    def validate(self) -> None:
        """Raise ConfigError for a digit out of 0..9, steps out of 2..MAX_STEPS or a bad device."""
        for digit in (self.digit, self.interpolate_from, self.interpolate_to):
            check_digit(digit)
        if not (isinstance(self.steps, int) and 2 <= self.steps <= MAX_STEPS):
            raise ConfigError(f"steps must be in 2..{MAX_STEPS}, got {self.steps!r}")
        check_seed(self.seed)
        resolve_device(self.device)


def check_generate(digit: int | None, count: int) -> None:
    """ConfigError unless `count` images (of `digit`, or per digit for a grid) fit one figure."""
    if digit is not None:
        check_digit(digit)
        check_count("count", count, MAX_FIGURE)
    else:
        check_count("count", count, MAX_FIGURE // 10)


def generate_figure(
    generator: Generator,
    digit: int | None,
    count: int,
    seed: int,
    out: str | Path,
    centre: bool = True,
) -> Path:
    """`count` generated images of `digit`, or a grid of `count` per digit, drawn to `out`."""
    check_generate(digit, count)
    if digit is None:
        images = generate_grid(generator, per_class=count, seed=seed, centre=centre)
        return plots.save_marked(plots.digits_grid(images, None, ncols=count), out, "gan generate")
    images = generate(generator, digit, count, seed=seed, centre=centre)
    titles = [str(digit)] * len(images)
    figure = plots.digits_grid(images, titles, ncols=min(10, count))
    return plots.save_marked(figure, out, "gan generate")


def morph(
    generator: Generator,
    start: int,
    end: int,
    steps: int,
    out: str | Path,
    seed: int = 0,
    centre: bool = True,
    size: int = 112,
    fps: float = 6,
    strip: str | Path | None = None,
    strip_size: float = 1.3,
    suptitle: str | None = None,
) -> list[Path]:
    """The morph from `start` to `end` as a GIF of `size` pixels at `out`, and its frames side
    by side as a PNG at `strip` if given (`strip_size` inches a frame). Returns the files
    written; ConfigError for a bad digit, steps, size or fps, before any work."""
    plots.check_gif(size, fps)
    frames = interpolate(generator, start, end, steps=steps, seed=seed, centre=centre)
    files = [plots.save_gif(frames, out, size=size, fps=fps)]
    if strip is not None:
        grid = plots.digits_grid(
            frames, None, ncols=len(frames), size=strip_size, suptitle=suptitle
        )
        # The GIF's digest too: a GIF carries no mark, and is told ours by it (`wrote_morph`).
        gif = {GIF_KEY: file_digest(files[0], "sha256")}
        files.append(plots.save_marked(grid, strip, f"frames of {Path(out).name}", gif))
    return files


# Pictures this module writes carry `plots.MARK_KEY` ("frames of m.gif", "gan generate"). The
# command line writes a file the user did not name (a GIF's frame strip, a default name) only
# over a file carrying it: the user's own mine.png beside `--out mine.gif` was once
# overwritten in silence.
GIF_KEY = "digitlab-gif-sha256"  # in a frame strip: the sha256 of the GIF written with it


def wrote_morph(gif: str | Path) -> bool:
    """True if the GIF at `gif` is the one `morph` wrote with the frame strip beside it (same
    name, .png), whose GIF_KEY holds the GIF's sha256: a GIF carries no mark of its own."""
    gif = Path(gif)
    digest = plots.png_text(gif.with_suffix(".png")).get(GIF_KEY)
    return gif.is_file() and digest == file_digest(gif, "sha256")


def check_model(cfg: SamplesConfig) -> None:
    """DataError, before any work, if `cfg.model` names no loadable generator (a missing
    folder, a CNN's, damaged files): a run once found out after all its other stages."""
    if cfg.model is not None:
        load_gan_generator(cfg.model)


def model_digest(cfg: SamplesConfig) -> str:
    """SHA-256 over the files of the generator `cfg.model` names (or the shipped one): what
    the GAN stage's results depend on beyond its settings ("" when there is none). A generator
    trained further in the same folder once left the stage "unchanged" and its old figures
    reused."""
    if cfg.model is None and not has_shipped_generator():
        return ""
    folder = generator_folder(cfg.model)
    h = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        h.update(path.name.encode())
        h.update(file_digest(path, "sha256").encode())
    return h.hexdigest()


def course_samples(cfg: SamplesConfig, out_dir: str | Path, dataset: str | None = None) -> dict:
    """The course's GAN step: every digit, one digit ten times, the morph (GIF and frames).

    Skipped (a "skipped" reason, no error) when no generator is named and none is shipped, or
    when `dataset` (the run's) is not the one the generator was trained on: its pictures
    would say nothing about this dataset.
    """
    cfg.validate()
    if cfg.model is None and not has_shipped_generator():
        return {
            "skipped": "no generator is shipped with this digitlab; train one with `digitlab "
            "gan train --out DIR` and run with gan.model=DIR"
        }
    meta_path = generator_folder(cfg.model) / "metadata.json"
    meta = read_json_object(meta_path) if meta_path.is_file() else {}
    trained_on = meta.get("dataset", "mnist")  # generators before the field: MNIST's
    if dataset is not None and trained_on != dataset:
        which = "the shipped generator" if cfg.model is None else f"the generator {cfg.model}"
        return {
            "skipped": f"{which} was trained on {trained_on}, not on this run's {dataset}; "
            f"train one with `digitlab gan train --dataset {dataset} --out DIR` and run "
            "with gan.model=DIR",
            "generator_dataset": trained_on,
        }
    out_dir = Path(out_dir)
    g = load_gan_generator(cfg.model, resolve_device(cfg.device))
    grid = generate_grid(g, 10, cfg.seed)
    plots.save(
        plots.digits_grid(
            grid, None, ncols=10, size=0.9, suptitle="Generated digits: row d was asked for digit d"
        ),
        out_dir / figures.GAN["grid"],
    )
    plots.save(
        plots.digits_grid(
            generate(g, cfg.digit, 10, cfg.seed),
            None,
            ncols=10,
            size=1.2,
            suptitle=f"Ten generated {cfg.digit}s",
        ),
        out_dir / figures.GAN["digit"],
    )
    morph(
        g,
        cfg.interpolate_from,
        cfg.interpolate_to,
        cfg.steps,
        out_dir / figures.GAN["morph"],
        seed=cfg.seed,
        strip=out_dir / figures.GAN["morph_strip"],
        strip_size=1.1,
        suptitle=f"From {cfg.interpolate_from} to {cfg.interpolate_to}",
    )
    return {
        "model": cfg.model or "shipped",
        "generator_metadata": meta,
        "figures": dict(figures.GAN),
    }


def write_epoch_samples(out: str | Path, seed: int = 0) -> Callable[[int, Generator], Path]:
    """A function that draws a generator's fixed-noise grid of all ten digits after epoch
    `epoch` (0-based) to `out/samples/epoch_NNN.png`: the same noise every epoch, to compare."""
    fixed_seed = seed + 12345

    def draw(epoch: int, generator: Generator) -> Path:
        grid = generate_grid(generator, per_class=10, seed=fixed_seed)
        fig = plots.digits_grid(
            grid, None, ncols=10, size=0.8, suptitle=f"epoch {epoch + 1}: rows are digits 0-9"
        )
        return plots.save(fig, Path(out) / figures.gan_epoch_samples(epoch + 1))

    return draw


def train(
    ds: Dataset,
    cfg: GANTrainConfig,
    out: str | Path,
    resume: bool = False,
    quiet: bool = False,
    log_quality: bool = False,
    keep_best: bool = False,
    say: Callable[[str], None] = lambda text: None,
) -> dict:
    """Train on all the dataset's images (training and test together, as the course does).

    After every epoch: a fixed-noise sample grid in `out/samples`, the generator saved to
    `out/generator` (usable at once), and with `log_quality`/`keep_best` its conditional
    accuracy and Fréchet distance (read by the shipped CNN) logged, the best epoch kept in
    `out/generator-best`. Returns train_gan's info dict.
    """
    out = Path(out)
    images = np.concatenate([ds.x_train, ds.x_test])
    labels = np.concatenate([ds.y_train, ds.y_test])
    cfg.validate(len(images))
    draw = write_epoch_samples(out, cfg.seed)
    quality = _QualityLog(out, resume, keep_best) if (log_quality or keep_best) else None
    base = {"dataset": ds.name, "seed": cfg.seed}

    def after_epoch(epoch: int, generator: Generator, history: GANHistory) -> None:
        draw(epoch, generator)
        meta = {"epochs": epoch + 1, "history": history.__dict__, **base}
        if quality is not None:
            meta["quality_per_epoch"] = quality.record(epoch, generator, ds.x_test, meta, say)
        save_generator(generator, out / "generator", meta)

    g, history, info = train_gan(
        images,
        labels,
        cfg,
        out,
        resume=resume,
        progress=not quiet,
        on_epoch=after_epoch,
        data=ds.identity(),
    )
    final = {
        "steps": info["steps"],
        "epochs": info["steps"] / info["steps_per_epoch"],
        "history": history.__dict__,
        "threads": info["threads"],  # the CPU threads the steps ran on at the end
        **base,
    }
    if quality is not None and quality.log:
        final["quality_per_epoch"] = quality.log
    save_generator(g, out / "generator", final)
    return info


class _QualityLog:
    """Per-epoch quality of the generator (read by the shipped CNN), and the best one kept."""

    def __init__(self, out: Path, resume: bool, keep_best: bool):
        self.out, self.keep_best = out, keep_best
        self.classifier = load_cnn()
        self.best_dir = out / "generator-best"
        self.best, self.log = -1.0, []
        if resume and keep_best and (self.best_dir / "metadata.json").is_file():
            saved = read_json_object(self.best_dir / "metadata.json")
            self.best = saved["quality"]["conditional_accuracy"]
        previous = out / "generator" / "metadata.json"
        if resume and previous.is_file():
            self.log = read_json_object(previous).get("quality_per_epoch", [])

    def record(self, epoch: int, generator: Generator, real: np.ndarray, meta: dict, say) -> list:
        """Score `generator` after `epoch`, log it, keep it if best; returns the log so far."""
        q = evaluate_generator(generator, self.classifier, real, per_digit=100)
        self.log.append({"epoch": epoch + 1, **q})
        say(
            f"epoch {epoch + 1}: conditional accuracy {q['conditional_accuracy']:.3f}, "
            f"Fréchet distance {q['frechet']:.1f} (floor {q['frechet_real_vs_real']:.1f})"
        )
        if self.keep_best and q["conditional_accuracy"] > self.best:
            # GAN quality does not rise steadily; keep the best epoch as well as the last.
            self.best = q["conditional_accuracy"]
            save_generator(
                generator, self.best_dir, {**meta, "quality_per_epoch": self.log, "quality": q}
            )
        return self.log


def evaluate(
    generator: Generator,
    classifier: CourseCNN,
    ds: Dataset,
    per_digit: int = 500,
    seed: int = 0,
    json_path: str | Path | None = None,
) -> dict:
    """Conditional accuracy and Fréchet distance of `generator` read by `classifier` (see
    `gan_metrics.evaluate_generator`); also written to `json_path` if given."""
    check_count("per_digit", per_digit, MAX_PER_DIGIT)
    result = evaluate_generator(generator, classifier, ds.x_test, per_digit, seed)
    if json_path is not None:
        save_metrics(json_path, result)
    return result
