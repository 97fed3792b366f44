"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import contextmanager, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    default = os.environ.get("DIGITLAB_DATA") or (
        str(ROOT.parent / "shared/data/mnist")
        if (ROOT.parent / "shared/data/mnist").is_dir()
        else None
    )
    p.add_argument("--data-dir", default=default, help="MNIST folder (default: shared/ or cache)")
    p.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: all)")
    return p


def cpu_line() -> str:
    """The CPU capability line every benchmark prints first: model, ISA, threads, torch."""
    import platform

    import torch

    from digitlab.device import cpu_summary

    info = cpu_summary()
    return (
        f"# CPU: {info['model']} ({info['cores']} cores visible; flags: {info['flags']}); "
        f"torch {torch.__version__} capability {info['capability']}, "
        f"{torch.get_num_threads()} threads; bf16 fast: {info['bf16']}; "
        f"python {platform.python_version()}"
        + (f"; emulated limits: {info['limits']}" if info["limits"] else "")
    )


def reset_peak_rss() -> None:
    """Linux: make VmHWM start again from the current resident size."""
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


@contextmanager
def timer(store: dict, key: str):
    start = time.perf_counter()
    yield
    store[key] = time.perf_counter() - start


def emit(result: dict) -> None:
    """The convention: the last line printed is one JSON object."""
    print(json.dumps(result, default=float))


@contextmanager
def competing_process(enabled: bool = True):
    """One other CPU-bound process for the duration ("busy": a user's laptop is rarely idle).

    A child Python spinning in a loop; it is killed on exit, whatever happens.
    """
    if not enabled:
        yield
        return
    import subprocess
    import sys

    # It ignores Ctrl-C (which reaches the whole process group); kill() below ends it.
    spin = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass"
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        yield
    finally:
        child.kill()
        child.wait()
