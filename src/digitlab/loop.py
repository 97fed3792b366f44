"""What the two training loops (CNN and GAN) share: resume-or-refuse, checkpoints, the bar,
the optimizer.

A checkpoint is one safetensors file (networks, optimizer moments, and JSON metadata holding
progress, history and settings), written atomically through `checkpoint.save_state`, so an
interruption always leaves the last one whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from digitlab.checkpoint import load_state, restore, save_state
from digitlab.errors import CheckpointMismatch, ConfigError, DataError, DigitlabError
from digitlab.run_kinds import RUN_KINDS, runs_in
from digitlab.validation import whole_number


@dataclass
class Checkpoint:
    """The resumable state of one training run: its file and the objects saved into it.

    path: the checkpoint file (None: training keeps nothing on disk);
    modules/optimizers: name -> object, saved and restored under those names.
    """

    path: Path | None
    modules: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]

    def resume_or_refuse(
        self,
        resume: bool,
        settings: dict[str, Any],
        may_change: Iterable[str] = (),
        legacy: dict[str, dict[str, Any]] | None = None,
        progress: tuple[str, int, str] | None = None,
        history: type | None = None,
    ) -> dict[str, Any] | None:
        """Restore the saved state when asked to resume; None when there is nothing to resume.

        settings: what identifies the run (name -> JSON value, a dict per config); each saved
        config must equal it but for `may_change` keys, and keys newer than the checkpoint
        (`legacy`: per config, old checkpoints' values of keys added since). `settings["data"]`,
        when given, is the data's identity (`Dataset.identity()`: its name and a digest of its
        arrays): a checkpoint of other data is refused, naming both datasets. `progress`:
        (metadata key, the count asked for, its name), e.g. ("epoch", 2, "epochs"): a checkpoint
        already further than that is refused, since its model was not made with those settings.
        Raises ConfigError when a checkpoint exists and `resume` is False (never overwrite
        training silently), and CheckpointMismatch (a ConfigError) when its data or settings
        differ, naming them. `history`: the dataclass of per-epoch lists the run logs;
        meta["history"] comes back as one. A checkpoint whose contents do not fit these networks
        or that history (a hand-edited or foreign one) is a DataError, one line.
        """
        if self.path is None:
            return None
        self._refuse_other_runs()
        if not self.path.exists():
            return None
        if not resume:
            raise ConfigError(
                f"{self.path.parent} already holds a training checkpoint ({self.path.name}); "
                "pass --resume to continue it, or choose another output folder"
            )
        meta = load_state(self.path)
        try:
            return self._resume(meta, settings, may_change, legacy, progress, history)
        except DigitlabError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise DataError(
                f"{self.path} does not hold a run these networks can continue ({detail}); "
                "delete it to start over"
            ) from exc

    def _resume(self, meta, settings, may_change, legacy, progress, history):
        self._check_data(meta.get("data"), settings.get("data"))
        changed = changed_settings(meta, settings, set(may_change), legacy or {})
        if changed:
            raise CheckpointMismatch(
                f"the checkpoint in {self.path.parent} was made with other settings "
                f"({', '.join(changed)}); resume with the same ones"
            )
        if progress is not None:
            key, asked, noun = progress
            done = meta[key] = whole_number(key, meta.get(key, 0), 0, ValueError)
            if done > asked:
                raise CheckpointMismatch(
                    f"the checkpoint in {self.path.parent} is already at {done} {noun}, more "
                    f"than the {asked} asked for; ask for {done} or more, or train afresh in "
                    "another folder"
                )
        if history is not None:
            meta["history"] = history(**meta["history"])
            lengths = {len(v) for v in asdict(meta["history"]).values()}
            if len(lengths) > 1:
                raise ValueError(f"its history's lists differ in length {sorted(lengths)}")
        restore(meta, self.modules, self.optimizers)
        return meta

    def _refuse_other_runs(self) -> None:
        """ConfigError when the folder holds another training command's run: two kinds of run
        in one folder would mix their files (and `--model DIR` would find the wrong one)."""
        folder = self.path.parent
        for kind in runs_in(folder):
            if kind.checkpoint != self.path.name:
                raise ConfigError(
                    f"{folder} holds a {kind.what} training run ({kind.checkpoint}, "
                    f"from `{kind.command}`); choose another output folder"
                )
        for kind in RUN_KINDS:
            weights = folder / f"{kind.model}.safetensors"
            if (folder / "config.json").is_file() and weights.is_file():
                raise ConfigError(
                    f"{folder} is a saved {kind.what}'s own folder (config.json, "
                    f"{weights.name}); choose another output folder"
                )

    def _check_data(self, saved: Any, mine: Any) -> None:
        """CheckpointMismatch when the checkpoint was trained on other data than `mine`."""
        if not isinstance(saved, dict) or not isinstance(mine, dict):
            return  # a checkpoint from before data was recorded: nothing to compare
        if saved.get("dataset") != mine.get("dataset"):
            raise CheckpointMismatch(
                f"the checkpoint in {self.path.parent} was trained on {saved.get('dataset')}, "
                f"not {mine.get('dataset')}; resume it with --dataset {saved.get('dataset')}, "
                "or train afresh in another folder"
            )
        if saved.get("digest") != mine.get("digest"):
            raise CheckpointMismatch(
                f"the checkpoint in {self.path.parent} was trained on other {mine.get('dataset')} "
                "files (their contents differ from these); resume it with the same data, or "
                "train afresh in another folder"
            )

    def save(self, meta: dict[str, Any]) -> None:
        """Write the modules, the optimizers and `meta` (JSON-able) atomically, if kept."""
        if self.path is not None:
            save_state(self.path, self.modules, self.optimizers, meta)


def changed_settings(
    saved: dict[str, Any],
    mine: dict[str, Any],
    may_change: set[str],
    legacy: dict[str, dict[str, Any]],
) -> list[str]:
    """Names of settings in which the checkpoint's metadata `saved` differs from `mine`."""
    changed = []
    for group, values in mine.items():
        old = saved.get(group, {})
        if not isinstance(values, dict):
            if old != values:
                changed.append(group)
            continue
        old = {**legacy.get(group, {}), **old}
        changed += [
            k for k in sorted(old) if k not in may_change and k in values and old[k] != values[k]
        ]
        changed += [k for k in sorted(set(old) - set(values)) if k not in may_change]
    return changed


def progress_bar(steps: Iterable, desc: str, progress: bool, unit: str) -> tqdm:
    """A transient tqdm bar over `steps` (hidden when `progress` is False or not a terminal)."""
    return tqdm(steps, desc=desc, disable=None if progress else True, leave=False, unit=unit)


def keras_adam(params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam as Keras sets it up (epsilon 1e-7, not PyTorch's 1e-8), with PyTorch's fused
    kernel on CPUs and CUDA GPUs.

    Why fused: PyTorch's default for CPU parameters is a Python loop of small tensor calls per
    parameter; the fused kernel does each parameter's update in one pass. The GAN's two
    optimizers took 2.4-6.2 ms a step that way and 1.3 ms fused (2-vCPU EPYC, AVX2 kind).
    The update is the same formula; only float rounding inside it may differ.
    """
    params = list(params)
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, eps=1e-7, fused=fused or None)
