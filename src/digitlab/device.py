"""Choosing the compute device and the CPU thread count.

`auto` picks CUDA when PyTorch sees a GPU. Thread counts are settings, never hard-coded: each
task passes its own measured default (see the benchmarks), and the user can override it with an
option or the DIGITLAB_THREADS environment variable (`requested_threads`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from digitlab.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """`auto` -> cuda if available else cpu; `cuda` without a GPU is a clear error."""
    if isinstance(name, torch.device):
        return name
    name = str(name).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                "device 'cuda' was asked for but PyTorch sees no CUDA GPU; use --device cpu or auto"
            )
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}")


def requested_threads(n: int | None = None) -> int | None:
    """The thread count asked for: `n` if given, else DIGITLAB_THREADS if set, else None.

    None leaves the choice to the task (the CNN measures 1 against all cores; the others use
    PyTorch's default). Raises ConfigError for a count below 1 or a non-number in the variable.
    """
    if n is not None:
        return check_threads(n)
    env = os.environ.get("DIGITLAB_THREADS", "").strip()
    if not env:
        return None
    try:
        value = int(env)
    except ValueError:
        raise ConfigError(f"DIGITLAB_THREADS must be a whole number, got {env!r}") from None
    return check_threads(value, "DIGITLAB_THREADS")


def check_threads(n: int, name: str = "threads") -> int:
    """`n` if it is a whole number of at least 1; ConfigError otherwise."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1, got {n!r}")
    return n


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[int]:
    """Run a block with `n` PyTorch CPU threads (None: leave as is), then restore."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(check_threads(n))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
