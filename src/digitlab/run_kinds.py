"""The kinds of training run a folder can hold, told by their files (no PyTorch here: the
command line checks folders before it loads the models' modules)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunKind:
    """What one training command leaves in its --out folder. A folder holds one kind only."""

    checkpoint: str  # the resumable state's file
    model: str  # the subfolder the saved model goes in
    what: str  # the model, as a message names it
    command: str  # the command that trains it

    def made(self, folder: Path) -> bool:
        """True when `folder` holds this kind's run: its checkpoint, or the model it saved."""
        saved_model = folder / self.model / "config.json"
        return (folder / self.checkpoint).is_file() or saved_model.is_file()


CNN_RUN = RunKind("checkpoint.safetensors", "model", "CNN", "digitlab cnn train")
GAN_RUN = RunKind("gan_checkpoint.safetensors", "generator", "GAN generator", "digitlab gan train")
RUN_KINDS = (CNN_RUN, GAN_RUN)


def runs_in(folder: Path) -> list[RunKind]:
    """The kinds of training run whose checkpoint is in `folder`."""
    return [kind for kind in RUN_KINDS if (folder / kind.checkpoint).is_file()]
