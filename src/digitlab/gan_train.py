"""Training the conditional GAN: keras.io's train_step as a plain loop, with resume.

Per step (batch 64): the discriminator learns to call generated images 1 and real images 0
(binary cross-entropy on logits), then the generator learns to make the discriminator say 0 for
new generated images. Adam 3e-4 for both. Noise and shuffling are seeded by step and epoch, so
a resumed run continues exactly where it stopped. A checkpoint (both networks and both Adam
states, one safetensors file) is written atomically every `checkpoint_every` steps and at the
end of every epoch; `on_epoch` hands the generator of every finished epoch to the caller (the
task layer draws its fixed-noise grid and saves it). No figures and no files but the checkpoint.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from digitlab.device import (
    keep_freed_memory,
    requested_threads,
    resolve_device,
    step_threads,
    threads,
)
from digitlab.errors import ConfigError
from digitlab.gan import Discriminator, GANConfig, Generator, one_hot
from digitlab.loop import Checkpoint, keras_adam, progress_bar
from digitlab.run_kinds import GAN_RUN
from digitlab.validation import check_seed, whole_number

CHECKPOINT = GAN_RUN.checkpoint


@dataclass
class GANTrainConfig:
    """Training settings of the conditional GAN (keras.io's: Adam 3e-4, batch 64)."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-4
    seed: int = 0
    device: str = "auto"
    # None: timed on the training steps themselves, 1 thread against all cores, again every
    # STEP_TRIAL_EVERY steps (`device.step_threads`). A number: that many, every step (and the same
    # numbers on every run: the choice by timing can differ between runs, and with it the
    # order of some float additions inside oneDNN).
    threads: int | None = None
    # Channels-last pays on CPU for these convolutions (measured in one process, 1 thread:
    # 1.15 s against 1.72 s per step on a loaded AVX512 box; README: 197 vs 236 ms quiet).
    # The CLI's default too.
    channels_last: bool = True
    # One generated batch serves both updates (as pytorch/examples' DCGAN does) instead of
    # keras.io's second draw for the generator step: a quarter less compute per step, and
    # each step still shows the discriminator and the generator fresh noise.
    reuse_fakes: bool = True
    checkpoint_every: int = 200  # steps; an epoch is 1,094 steps on all 70,000 digits
    max_steps: int | None = None  # stop early (dry runs, tests)
    # bfloat16 autocast of both networks' forward passes: pays off on CPUs with AVX512-BF16 or
    # AMX, and GPUs; Adam's state and the losses stay float32.
    bf16: bool = False

    def validate(self, n_images: int | None = None) -> None:
        """Raise ConfigError for any setting out of range (for `n_images` when known)."""
        for name in ("epochs", "batch_size", "checkpoint_every"):
            whole_number(name, getattr(self, name))
        check_seed(self.seed)
        if self.max_steps is not None:
            whole_number("max_steps", self.max_steps)
        if n_images is not None and self.batch_size > n_images:
            raise ConfigError(
                f"batch_size must be at most the {n_images} images, got {self.batch_size}"
            )
        if not 0 < self.lr < 1:
            raise ConfigError(f"lr must be in (0, 1), got {self.lr!r}")
        resolve_device(self.device)
        requested_threads(self.threads)  # checks $DIGITLAB_THREADS too


@dataclass
class GANHistory:
    """Per finished epoch: mean discriminator and generator losses (binary cross-entropy on
    logits), seconds, and training steps per second."""

    d_loss: list[float] = field(default_factory=list)
    g_loss: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    steps_per_second: list[float] = field(default_factory=list)


def train_step(
    g: Generator,
    d: Discriminator,
    g_opt: torch.optim.Optimizer,
    d_opt: torch.optim.Optimizer,
    real: torch.Tensor,
    hot: torch.Tensor,
    z: torch.Tensor,
    reuse_fakes: bool = True,
    autocast: torch.autocast | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One keras.io train_step: the discriminator's update, then the generator's.

    real: (B, 1, 28, 28) float32 in [0, 1]; hot: (B, n_classes) one-hot float32; z: (2, B,
    latent_dim) noise (z[1] is used only when reuse_fakes is False). Returns the two losses
    (binary cross-entropy on logits) as 0-d tensors, without a host sync.

    The discriminator sees generated and real digits as ONE batch, as keras.io does; that is
    the same computation as two passes only because it has no batch statistics (no batch
    norm: each sample's logit depends on that sample alone).
    """
    autocast = autocast or contextlib.nullcontext()
    n = len(real)
    targets = _targets(n, real.device)
    with autocast:
        if reuse_fakes:
            fake = g(z[0], hot)
        else:
            with torch.no_grad():
                fake = g(z[0], hot)
        logits = d(torch.cat([fake.detach(), real]), torch.cat([hot, hot])).float()
    # Generated -> 1, real -> 0 (keras.io's convention).
    d_loss = F.binary_cross_entropy_with_logits(logits, targets)
    d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    d_opt.step()
    # Generator: make the (updated) discriminator call generated images real (0).
    # Its own weights need no gradients here, which saves their backward pass.
    d.requires_grad_(False)
    with autocast:
        if not reuse_fakes:
            fake = g(z[1], hot)
        g_logits = d(fake, hot).float()
    g_loss = F.binary_cross_entropy_with_logits(g_logits, targets[n:])
    g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    g_opt.step()
    d.requires_grad_(True)
    return d_loss.detach(), g_loss.detach()


_TARGETS: dict = {}


def _targets(n: int, device: torch.device) -> torch.Tensor:
    """[1]*n + [0]*n as an (2n, 1) column, made once per batch size and device."""
    key = (n, str(device))
    if key not in _TARGETS:
        _TARGETS[key] = torch.cat([torch.ones(n, 1), torch.zeros(n, 1)]).to(device)
    return _TARGETS[key]


def train_gan(
    images: np.ndarray,
    labels: np.ndarray,
    cfg: GANTrainConfig,
    out_dir: str | Path,
    gan_cfg: GANConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[int, Generator, GANHistory], None] | None = None,
    data: dict | None = None,
) -> tuple[Generator, GANHistory, dict]:
    """Train on uint8 images (N, 28, 28) with int labels (N,); the checkpoint goes in out_dir.

    `on_epoch(epoch, generator, history)` runs after every finished epoch (0-based epoch).
    Returns the generator (eval mode), the history and an info dict (steps, steps_per_epoch,
    device). Raises ConfigError for bad settings, or a checkpoint without `resume` or made
    with other settings. `data`: the data's identity (`Dataset.identity()`), recorded in the
    checkpoint; a checkpoint of other data, or already past the steps asked for, is refused
    (CheckpointMismatch).
    """
    cfg.validate(len(images))
    gan_cfg = gan_cfg or GANConfig()
    device = resolve_device(cfg.device)
    nets = build_nets(cfg, gan_cfg, device)
    g, d, g_opt, d_opt = nets.g, nets.d, nets.g_opt, nets.d_opt
    ckpt = Checkpoint(
        Path(out_dir) / CHECKPOINT, {"g": g, "d": d}, {"g_opt": g_opt, "d_opt": d_opt}
    )
    state = {"train_config": asdict(cfg), "gan_config": asdict(gan_cfg)}
    if data is not None:
        state["data"] = data
    per_epoch = len(images) // cfg.batch_size  # full batches only, as a fixed-size pipeline would
    stop_at = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * per_epoch
    meta = ckpt.resume_or_refuse(
        resume,
        {k: v for k, v in state.items() if k != "gan_config"},
        may_change=("epochs", "device", "threads", "max_steps", "checkpoint_every", "bf16"),
        progress=("step", stop_at, "steps"),
        history=GANHistory,
    )
    history = meta["history"] if meta else GANHistory()
    step = meta["step"] if meta else 0

    x, hot_all = device_data(images, labels, nets)

    # The unfinished epoch's loss totals, steps and seconds so far, kept in the checkpoint:
    # a run resumed mid-epoch logs that epoch's means over all its steps, not only the
    # steps after the resume.
    carried = _EpochTotals.from_meta(meta, step, per_epoch)

    def save(at: int, totals: _EpochTotals | None = None) -> None:
        """Checkpoint the networks as they are after `at` steps (the caller's count: a save
        from inside an epoch must not record the epoch's first step), with the unfinished
        epoch's totals so far."""
        extra = {"epoch_totals": asdict(totals)} if totals is not None and totals.steps else {}
        ckpt.save({**state, "step": at, "history": asdict(history), **extra})

    # threads(None) restores the caller's thread count after the per-step choices.
    with threads(None), keep_freed_memory(nets.device):
        while step < stop_at:
            epoch = step // per_epoch
            start_step = step
            step, totals = _train_epoch(
                nets, x, hot_all, step, stop_at, per_epoch, progress, save, carried
            )
            carried = None
            if step - start_step and step % per_epoch == 0:  # a finished epoch
                history.d_loss.append(totals.d_sum / totals.steps)
                history.g_loss.append(totals.g_sum / totals.steps)
                history.epoch_seconds.append(totals.seconds)
                history.steps_per_second.append(totals.steps / totals.seconds)
                save(step)
                if on_epoch is not None:
                    on_epoch(epoch, g, history)
                    g.train()
            elif step - start_step:  # stopped mid-epoch (max_steps): keep what was done
                save(step, totals)
    g.eval()
    info = {"steps": step, "steps_per_epoch": per_epoch, "device": str(device)}
    return g, history, {**info, "threads": nets.threads.current}


def build_nets(cfg: GANTrainConfig, gan_cfg: GANConfig, device: torch.device) -> _Nets:
    """Both networks (seeded by cfg.seed, in cfg's memory format), their Adam optimizers and
    the per-step thread choice: what `train_gan` trains (and the benchmark times)."""
    torch.manual_seed(cfg.seed)
    g, d = Generator(gan_cfg).to(device), Discriminator(gan_cfg).to(device)
    if cfg.channels_last:
        g, d = g.to(memory_format=torch.channels_last), d.to(memory_format=torch.channels_last)
    g_opt, d_opt = keras_adam(g.parameters(), cfg.lr), keras_adam(d.parameters(), cfg.lr)
    return _Nets(g, d, g_opt, d_opt, gan_cfg, cfg, device)


def device_data(
    images: np.ndarray, labels: np.ndarray, nets: _Nets
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 28, 28) and int labels (N,) -> float32 (N, 1, 28, 28) in [0, 1] and
    one-hot (N, n_classes), on the training device in the networks' memory format.

    The whole dataset lives on the device: each batch is indexed there, with no per-step
    host copies (70,000 digits are 220 MB as float32).
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).to(nets.device).float().div_(255.0)
    x = x[:, None]
    if nets.cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    hot = one_hot(torch.from_numpy(np.asarray(labels, np.int64)), nets.gan_cfg.n_classes)
    return x, hot.to(nets.device)


@dataclass
class _Nets:
    """Both networks, their optimizers and settings: what a training step works on."""

    g: Generator
    d: Discriminator
    g_opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer
    gan_cfg: GANConfig
    cfg: GANTrainConfig
    device: torch.device

    def __post_init__(self) -> None:
        self.autocast = torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16
        )
        self.noise = torch.Generator(device=self.device)  # reseeded each step: exact resumes
        self.threads = step_threads(requested_threads(self.cfg.threads), self.device)


@dataclass
class _EpochTotals:
    """One epoch's loss totals (binary cross-entropy, summed over steps), steps and seconds."""

    d_sum: float = 0.0
    g_sum: float = 0.0
    steps: int = 0
    seconds: float = 0.0

    @classmethod
    def from_meta(cls, meta: dict | None, step: int, per_epoch: int) -> _EpochTotals | None:
        """The totals a checkpoint kept for the epoch `step` lies inside; None if it kept none
        (older checkpoints, or `step` at an epoch's start)."""
        kept = (meta or {}).get("epoch_totals")
        if not isinstance(kept, dict) or step % per_epoch == 0:
            return None
        try:
            totals = cls(**kept)
            fits = 0 < totals.steps <= step % per_epoch
        except TypeError:  # a hand-edited checkpoint: the epoch's means cover what follows
            return None
        return totals if fits else None


def _train_epoch(
    nets: _Nets,
    x: torch.Tensor,
    hot: torch.Tensor,
    step: int,
    stop_at: int,
    per_epoch: int,
    progress: bool,
    save: Callable[[int, _EpochTotals], None],
    carried: _EpochTotals | None = None,
) -> tuple[int, _EpochTotals]:
    """The rest of the epoch that `step` lies in (or up to `stop_at`); `save(step, totals)`
    every `checkpoint_every` steps on the way.

    x: (N, 1, 28, 28) float32 images and hot: (N, n_classes) one-hot labels, both on the
    training device. `carried`: this epoch's totals from before a resume. Returns the step
    reached and the epoch's totals so far (carried ones included).
    """
    cfg, device = nets.cfg, nets.device
    epoch, within = divmod(step, per_epoch)
    order = torch.from_numpy(np.random.default_rng([cfg.seed, epoch]).permutation(len(x)))
    order = order.to(device)  # once per epoch: batches are indexed on the device
    before = carried or _EpochTotals()
    # d and g loss totals, summed on the device (a host sync only to show or save them)
    sums = torch.tensor([before.d_sum, before.g_sum], device=device)
    count, t0 = before.steps, time.perf_counter() - before.seconds

    def totals() -> _EpochTotals:
        d_sum, g_sum = sums.tolist()
        return _EpochTotals(d_sum, g_sum, count, time.perf_counter() - t0)

    bar = progress_bar(
        range(within, per_epoch), f"epoch {epoch + 1}/{cfg.epochs}", progress, "step"
    )
    for b in bar:
        if step >= stop_at:
            break
        idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        d_loss, g_loss = run_step(nets, x[idx], hot[idx], step)
        sums[0] += d_loss
        sums[1] += g_loss
        step += 1
        count += 1
        if not bar.disable and count % 25 == 0:  # a host sync only for the display
            d_mean, g_mean = (sums / count).tolist()
            bar.set_postfix(d_loss=f"{d_mean:.3f}", g_loss=f"{g_mean:.3f}")
        if step % cfg.checkpoint_every == 0:
            save(step, totals())
    bar.close()
    return step, totals()


def run_step(
    nets: _Nets, real: torch.Tensor, hot: torch.Tensor, step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training step number `step` on one batch (real: (B, 1, 28, 28), hot: (B, n_classes)),
    with its seeded noise and its thread count; returns the two losses (0-d tensors)."""
    cfg = nets.cfg
    nets.noise.manual_seed(cfg.seed * 1_000_003 + step)  # by step: resumes exactly
    z = torch.randn(2, len(real), nets.gan_cfg.latent_dim, generator=nets.noise, device=nets.device)
    with nets.threads.unit():  # on a GPU the count is fixed and nothing is timed
        return train_step(
            nets.g, nets.d, nets.g_opt, nets.d_opt, real, hot, z, cfg.reuse_fakes, nets.autocast
        )
