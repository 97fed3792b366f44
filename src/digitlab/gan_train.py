"""Training the conditional GAN: keras.io's train_step as a plain loop, with resume.

Per step (batch 64): the discriminator learns to call generated images 1 and real images 0
(binary cross-entropy on logits), then the generator learns to make the discriminator say 0 for
new generated images. Adam 3e-4 for both. Noise and shuffling are seeded by step and epoch, so
a resumed run continues exactly where it stopped. A checkpoint (both networks and both Adam
states, one safetensors file) is written atomically every `checkpoint_every` steps and at the
end of every epoch, together with a fixed-noise grid of all ten digits for comparing epochs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from digitlab.checkpoint import load_state, restore, save_state
from digitlab.device import check_threads, resolve_device, threads
from digitlab.errors import ConfigError
from digitlab.gan import Discriminator, GANConfig, Generator, generate_grid, one_hot
from digitlab.validation import whole_number

CHECKPOINT = "gan_checkpoint.safetensors"


@dataclass
class GANTrainConfig:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-4
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    channels_last: bool = False
    # One generated batch serves both updates (as pytorch/examples' DCGAN does) instead of
    # keras.io's second draw for the generator step: a quarter less compute per step, and
    # each step still shows the discriminator and the generator fresh noise.
    reuse_fakes: bool = True
    checkpoint_every: int = 200  # steps; an epoch is 1,094 steps on all 70,000 digits
    max_steps: int | None = None  # stop early (dry runs, tests)
    # bfloat16 autocast of both networks' forward passes: pays off on CPUs with AVX512-BF16 or
    # AMX, and GPUs; Adam's state and the losses stay float32.
    bf16: bool = False

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "checkpoint_every"):
            whole_number(name, getattr(self, name))
        if not 0 < self.lr < 1:
            raise ConfigError(f"lr must be in (0, 1), got {self.lr!r}")
        resolve_device(self.device)
        if self.threads is not None:
            check_threads(self.threads)


@dataclass
class GANHistory:
    d_loss: list[float] = field(default_factory=list)
    g_loss: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    steps_per_second: list[float] = field(default_factory=list)


def train_gan(
    images: np.ndarray,
    labels: np.ndarray,
    cfg: GANTrainConfig,
    out_dir: str | Path,
    gan_cfg: GANConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[int, Generator, GANHistory], None] | None = None,
) -> tuple[Generator, GANHistory, dict]:
    """Train on uint8 images (N, 28, 28) with labels; checkpoints and sample grids in out_dir."""
    from digitlab import plots

    cfg.validate()
    gan_cfg = gan_cfg or GANConfig()
    device = resolve_device(cfg.device)
    out = Path(out_dir)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT
    torch.manual_seed(cfg.seed)
    g, d = Generator(gan_cfg).to(device), Discriminator(gan_cfg).to(device)
    if cfg.channels_last:
        g, d = g.to(memory_format=torch.channels_last), d.to(memory_format=torch.channels_last)
    g_opt = torch.optim.Adam(g.parameters(), lr=cfg.lr, eps=1e-7)
    d_opt = torch.optim.Adam(d.parameters(), lr=cfg.lr, eps=1e-7)
    history, step = GANHistory(), 0
    if ckpt.exists():
        if not resume:
            raise ConfigError(
                f"{out} already holds a GAN checkpoint; pass --resume to continue "
                "it, or choose another output folder"
            )
        meta = load_state(ckpt)
        restore(meta, {"g": g, "d": d}, {"g_opt": g_opt, "d_opt": d_opt})
        saved = {
            k: v
            for k, v in meta["train_config"].items()
            if k not in ("epochs", "device", "threads", "max_steps", "checkpoint_every", "bf16")
        }
        mine = {k: v for k, v in asdict(cfg).items() if k in saved}
        if saved != mine:
            raise ConfigError(
                f"the checkpoint in {out} was made with other settings; resume with the same ones"
            )
        history, step = GANHistory(**meta["history"]), meta["step"]

    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).float().div_(255.0)[:, None]
    y = torch.from_numpy(np.asarray(labels, np.int64)).to(device)
    n = len(x)
    per_epoch = n // cfg.batch_size  # full batches only, as a fixed-size pipeline would
    n_threads = cfg.threads
    fixed_seed = cfg.seed + 12345
    state = {"train_config": asdict(cfg), "gan_config": asdict(gan_cfg)}
    stop_at = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * per_epoch
    ones = torch.ones(cfg.batch_size, 1, device=device)
    zeros = torch.zeros(cfg.batch_size, 1, device=device)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)

    def checkpoint() -> None:
        meta = {**state, "step": step, "history": asdict(history)}
        save_state(ckpt, {"g": g, "d": d}, {"g_opt": g_opt, "d_opt": d_opt}, meta)

    with threads(n_threads):
        while step < stop_at:
            epoch, within = divmod(step, per_epoch)
            order = torch.from_numpy(np.random.default_rng([cfg.seed, epoch]).permutation(n))
            t0, d_sum, g_sum, count, start_step = time.perf_counter(), 0.0, 0.0, 0, step
            bar = tqdm(
                range(within, per_epoch),
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                disable=None if progress else True,
                leave=False,
                unit="step",
            )
            for b in bar:
                if step >= stop_at:
                    break
                idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size].to(device)
                real, hot = x[idx], one_hot(y[idx], gan_cfg.n_classes, device)
                gen = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + step)
                z = torch.randn(2, cfg.batch_size, gan_cfg.latent_dim, generator=gen, device=device)
                # Discriminator: generated -> 1, real -> 0 (keras.io's convention).
                with autocast:
                    if cfg.reuse_fakes:
                        fake = g(z[0], hot)
                    else:
                        with torch.no_grad():
                            fake = g(z[0], hot)
                    logits = d(torch.cat([fake.detach(), real]), torch.cat([hot, hot])).float()
                d_loss = F.binary_cross_entropy_with_logits(logits, torch.cat([ones, zeros]))
                d_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                d_opt.step()
                # Generator: make the (updated) discriminator call generated images real (0).
                # Its own weights need no gradients here, which saves their backward pass.
                d.requires_grad_(False)
                with autocast:
                    if not cfg.reuse_fakes:
                        fake = g(z[1], hot)
                    g_logits = d(fake, hot).float()
                g_loss = F.binary_cross_entropy_with_logits(g_logits, zeros)
                g_opt.zero_grad(set_to_none=True)
                g_loss.backward()
                g_opt.step()
                d.requires_grad_(True)
                step += 1
                count += 1
                d_sum += float(d_loss.detach())
                g_sum += float(g_loss.detach())
                bar.set_postfix(d_loss=f"{d_sum / count:.3f}", g_loss=f"{g_sum / count:.3f}")
                if step % cfg.checkpoint_every == 0:
                    checkpoint()
            bar.close()
            seconds = time.perf_counter() - t0
            if step - start_step and step % per_epoch == 0:  # a finished epoch
                history.d_loss.append(d_sum / max(count, 1))
                history.g_loss.append(g_sum / max(count, 1))
                history.epoch_seconds.append(seconds)
                history.steps_per_second.append((step - start_step) / seconds)
                grid = generate_grid(g, per_class=10, seed=fixed_seed)
                plots.save(
                    plots.digits_grid(
                        grid,
                        None,
                        ncols=10,
                        size=0.8,
                        suptitle=f"epoch {epoch + 1}: rows are digits 0-9",
                    ),
                    out / "samples" / f"epoch_{epoch + 1:03d}.png",
                )
                g.train()
                checkpoint()
                if on_epoch is not None:
                    on_epoch(epoch, g, history)
            elif step - start_step:  # stopped mid-epoch (max_steps): keep what was done
                checkpoint()
    g.eval()
    return g, history, {"steps": step, "steps_per_epoch": per_epoch, "device": str(device)}
