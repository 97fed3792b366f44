"""Choosing the compute device and the CPU thread count.

`auto` picks CUDA when PyTorch sees a GPU. Thread counts are settings, never hard-coded: each
task passes its own measured default (see the benchmarks), and the user can override it with an
option or the DIGITLAB_THREADS environment variable (`requested_threads`).
"""

from __future__ import annotations

import collections
import contextlib
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

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

    None leaves the choice to the task (the kNN search and the CNN's and GAN's training time
    it on their own work with `ThreadPicker`; the others use PyTorch's default).
    Raises ConfigError for a count below 1 or a non-number in the variable.
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
    """`n`, capped at the CPUs this process may use, if it is a whole number of at least 1;
    ConfigError otherwise.

    Why the cap: more OpenMP threads than cores wait for each other at every barrier (64
    threads on a 2-vCPU machine ran a CNN epoch in 6.9 s against 0.63 s on 2); a count written
    for a bigger machine (a config file, DIGITLAB_THREADS) then still runs well here.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1, got {n!r}")
    return min(n, available_cpus())


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


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


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _glibc():
    """The process's C library through ctypes where it is glibc (Linux), else None."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


@contextlib.contextmanager
def keep_freed_memory(device: torch.device | str = "cpu") -> Iterator[bool]:
    """While a CPU training loop runs, let glibc keep freed memory for the next step.

    Each training step allocates and frees the same activations and gradients (up to 25 MB
    each for the GAN); with glibc's default, large blocks come fresh from the kernel every step
    and every page faults on first touch. Setting the mmap threshold to its maximum (32 MB) and
    the trim threshold to 256 MB keeps them in the heap: the course CNN's step measured
    15.6-16.5 ms instead of 17.1-22.9 ms (2-vCPU EPYC, 2 threads, three runs each). On exit the
    trim threshold drops to 64 MB (what glibc's own rule would reach with a 32 MB mmap
    threshold) and the free memory is returned with malloc_trim. The same as running with
    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=268435456, without the variables.
    Elsewhere (not glibc, or a GPU) it does nothing. Yields whether the setting took effect.
    """
    libc = _glibc() if torch.device(device).type == "cpu" else None
    if libc is None:
        yield False
        return
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    )
    try:
        yield ok
    finally:
        libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)
        libc.malloc_trim(0)


class ThreadPicker:
    """The CPU thread count for each unit of a job (a query chunk, a training step), chosen
    by timing the job's own units: all `n` threads against one.

    A trial runs `settle` untimed units and then `trial` timed units at `n` threads, the same
    at one thread, and keeps one thread only if its median time per row beats `margin` times
    that of `n` (so a noisy quiet machine stays on `n`). Before the first trial `warmup`
    untimed units run at `n` (they pay one-off costs: page faults on fresh buffers, library
    set-up). With `every`, a new trial starts every that many units (counted from the start of
    the last), so a long run follows the load as it changes. With `slowdown`, a new trial
    starts at once when, on all `n` threads, the median of the last SLOW_UNITS units takes
    more than `slowdown` times what the trial measured for them: load that arrives after a
    trial (another program starting) is met within a few units instead of at the next
    `every`. On one thread no such early trial is made (a trial would run units at `n` under
    the very load that slowed them); `every` brings a quiet machine back to `n`. `decided`: a
    count already known (asked for by the user, or measured by `probe_threads`); nothing is
    then timed.

    Why: on a quiet 2-vCPU machine two threads win, but with one competing CPU-bound process a
    two-thread OpenMP product waits at every barrier for the thread that lost its core
    (measured here: a 1,024 x 20,000 x 99 product 2.6x slower on 2 threads than on 1 under
    load; a GAN training step 4-8x slower). Timing real units costs nothing extra, unlike a
    separate trial on made-up work. Timing the first unit instead picked one thread on a quiet
    machine in 1 of 3 kNN searches (its one-off costs were charged to the all-thread count).
    OMP_WAIT_POLICY=passive would be another fix, but it is read only when the OpenMP runtime
    starts, i.e. before torch is imported, which a library cannot guarantee.

    Used by the kNN search (per query chunk), and the CNN's and GAN's training loops (per step).
    """

    def __init__(
        self,
        n: int | None = None,
        *,
        warmup: int = 1,
        trial: int = 1,
        settle: int = 0,
        every: int | None = None,
        margin: float = 0.9,
        decided: int | None = None,
        slowdown: float | None = None,
    ):
        self.n = n if n is not None else torch.get_num_threads()
        self.margin = margin
        self.every = every
        self.slowdown = slowdown
        self._expected: float | None = None  # the trial's time per row at the chosen count
        self._recent: collections.deque[float] = collections.deque(maxlen=SLOW_UNITS)
        #: Trials started early by `slowdown` (for tests and benchmarks).
        self.early_trials = 0
        self._trial_plan = [
            (count, timed) for count in (self.n, 1) for timed in [False] * settle + [True] * trial
        ]
        self._warmup = warmup
        self._times: dict[int, list[float]] = {}
        self._since = 0  # units run since the last trial started
        self.fixed = decided if decided is not None else (self.n if self.n <= 1 else None)
        #: The count kept by the latest trial (or the decided one); None before any decision.
        self.chosen: int | None = self.fixed
        self._plan = [] if self.fixed is not None else list(self._trial_plan)

    @property
    def current(self) -> int:
        """The count in force outside a trial: the chosen one, else `n`."""
        return self.chosen if self.chosen is not None else self.n

    def next(self) -> int:
        """The thread count for the next unit."""
        if self.fixed is not None:
            return self.fixed
        if self._warmup:
            return self.n
        if not self._plan and self.every is not None and self._since >= self.every:
            self._plan = list(self._trial_plan)
            self._since = 0
        return self._plan[0][0] if self._plan else self.current

    @contextlib.contextmanager
    def unit(self, rows: int = 1) -> Iterator[int]:
        """Run one unit of work (the `with` block) at the count `next()` gives, and record its
        time for `rows` rows. The count is set only when it differs, so a run of units at one
        count pays no switch; a `threads()` block around the whole job gives the caller's
        count back. CPU work only: its ops are synchronous, so the clock sees them."""
        n = self.next()
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
        tick = time.perf_counter()
        yield n
        self.record(n, time.perf_counter() - tick, rows)

    def record(self, n: int, seconds: float, rows: int = 1) -> None:
        """Report how long the unit just run with `n` threads took for `rows` rows."""
        if self.fixed is not None:
            return
        if self._warmup:
            self._warmup -= 1
            return
        self._since += 1
        if not self._plan or self._plan[0][0] != n:  # outside a trial (or not its count)
            self._watch(n, seconds / max(rows, 1))
            return
        _, timed = self._plan.pop(0)
        if timed:
            self._times.setdefault(n, []).append(seconds / max(rows, 1))
        if not self._plan:  # the trial is complete: the medians decide
            one, all_ = (statistics.median(self._times.pop(k)) for k in (1, self.n))
            self.chosen = 1 if one < self.margin * all_ else self.n
            self._expected = all_ if self.chosen == self.n else one
            self._recent.clear()

    def _watch(self, n: int, per_row: float) -> None:
        """Start a trial now if the all-thread units have slowed by more than `slowdown`."""
        if self.slowdown is None or self._expected is None or n != self.n or n <= 1:
            return
        self._recent.append(per_row)
        if len(self._recent) == SLOW_UNITS and (
            statistics.median(self._recent) > self.slowdown * self._expected
        ):
            self._plan = list(self._trial_plan)
            self._since = 0
            self._recent.clear()
            self.early_trials += 1


STEP_TRIAL_EVERY = 400  # training steps between two timings of 1 thread against all cores
STEP_SLOWDOWN = 1.5  # all-core steps this much slower than their trial's: time them again now
SLOW_UNITS = 3  # units whose median is watched for a slowdown (one slow unit is noise)
STEP_TRIAL = 4  # steps per thread count in a trial; the first of each is not counted


def step_threads(
    fixed: int | None, device: torch.device, every: int = STEP_TRIAL_EVERY
) -> ThreadPicker:
    """The thread count for each step of a training loop (the CNN's, the GAN's): `fixed` if
    given (or off the CPU), else timed on the steps themselves: every `every` steps,
    STEP_TRIAL steps at all cores and as many at 1 thread, the first of each not counted
    (oneDNN re-plans for a new count), and one thread kept only where its median is 10%
    faster. A trial costs about 1% of the steps and follows the load as it changes during a
    long run: on a quiet 2-vCPU machine two threads run a GAN step about 1.5x faster than one
    (a CNN step 1.7x: 14.7 against 24.5 ms, AVX2 kind), but with one competing CPU-bound
    process a two-thread step ran 4-8x SLOWER than one thread (README, "What it measures").
    Between trials, all-core steps that slow to STEP_SLOWDOWN times their trial's time (the
    median of SLOW_UNITS steps) start a trial at once.
    """
    cores = torch.get_num_threads()
    if fixed is None and device.type != "cpu":
        fixed = cores
    return ThreadPicker(
        cores,
        warmup=0,
        settle=1,
        trial=STEP_TRIAL - 1,
        every=every,
        # One thread must win by 10%: a burst of load during a trial would otherwise hold a
        # quiet run on one thread until the next trial (seen in a CNN run on the AVX2 kind).
        margin=0.9,
        decided=fixed,
        # A GAN benchmark chose two threads on a quiet box; another program then started and
        # its two-thread steps took 1.1-2.1 s against 0.5 s on one thread, for the rest of the
        # run (the next timed trial was 400 steps away): 0.74x Keras instead of ~2x.
        slowdown=STEP_SLOWDOWN,
    )


_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, executor)
_pool_lock = threading.Lock()


def run_in_threads(calls: list[tuple[Callable, tuple]]) -> None:
    """Run the (function, args) calls at once: the first on this thread, the others on a pool
    of Python threads kept for the process; return when all are done (re-raising the first
    error). For compiled functions that release the GIL (numba `nogil`), which then run in
    parallel: the kNN scan's rows, the CNN's fused first stage's images.

    Right after a PyTorch parallel op its OpenMP workers spin for a while before sleeping (GNU
    OpenMP's default), holding a core these threads want: a 7x7 gradient pass measured 6.3 ms
    on 2 threads with OMP_WAIT_POLICY=passive, but 11-13 ms (its one-thread time) inside a GAN
    training step. Short passes (the CNN stage's, ~1 ms) lose little; a long pass between
    PyTorch ops may gain nothing from a second thread.
    """
    global _pool
    if len(calls) > 1:
        with _pool_lock:
            # Remade in a forked child, where the parent's threads do not exist.
            if _pool is None or _pool[0] != os.getpid() or _pool[1] < len(calls) - 1:
                workers = len(calls) - 1
                _pool = (os.getpid(), workers, ThreadPoolExecutor(workers, "digitlab-worker"))
            pool = _pool[2]
        futures = [pool.submit(fn, *args) for fn, args in calls[1:]]
    else:
        futures = []
    try:
        fn, args = calls[0]
        fn(*args)
    finally:
        for f in futures:
            f.result()


def probe_threads(n: int | None = None, samples: int = 3) -> int:
    """How many of `n` threads (default: torch's count) have a core of their own right now:
    `n` less the other runnable tasks beyond the free cores, at least 1.

    Linux: the kernel's count of runnable tasks (`procs_running` in /proc/stat, this thread
    included), its minimum over `samples` readings 2 ms apart so a passing task is not
    counted; elsewhere `n`. Why: with one competing CPU-bound process on a 2-vCPU machine, a
    2-thread OpenMP product waits at every barrier for the thread that lost its core: the
    pruned kNN search's one-off set-up (its training index and PCA bounds, about 0.3 s on one
    thread) took 0.5-0.6 s on two there. A timed trial cannot see it in time: a short product
    runs at full speed on two threads (a thread that just woke up is scheduled at once), and
    the set-up is a single pass. Call it before starting threads of your own.
    """
    n = n if n is not None else torch.get_num_threads()
    if n <= 1:
        return 1
    try:
        cores = available_cpus()
        running = []
        for i in range(samples):
            if i:
                time.sleep(0.002)
            with open("/proc/stat") as stat:
                lines = [line for line in stat if line.startswith("procs_running")]
            running += [int(line.split()[1]) for line in lines]
    except (AttributeError, OSError, ValueError, IndexError):
        return n
    if not running:
        return n
    others = max(0, min(running) - 1)
    return max(1, min(n, cores - others))


def cpu_flags() -> set[str]:
    """The CPU's instruction-set flags as the kernel reports them (Linux; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_is_fast() -> bool:
    """True where bfloat16 compute has instructions of its own (AVX512-BF16 or AMX) and
    PyTorch may use them (ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA not capped below AVX512).

    Elsewhere bfloat16 autocast is emulated in float32 and runs slower than float32 itself
    (the AVX2 machine's bench_gan bf16 rows ran for minutes).
    """
    if torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AVX512_BF16", "AMX"):
        return False
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if isa and not (
        isa.startswith("AVX512_CORE_BF16")
        or isa.startswith("AVX512_CORE_AMX")
        or isa in ("ALL", "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16")
    ):
        return False
    try:
        return bool(
            torch._C._cpu._is_avx512_bf16_supported() or torch._C._cpu._is_amx_tile_supported()
        )
    except AttributeError:  # older PyTorch: read the flags
        flags = cpu_flags()
        return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_summary() -> dict:
    """Model name, ISA summary, PyTorch's capability and whether bf16 is fast (for benchmarks
    and run records)."""
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    flags = cpu_flags()
    wanted = (
        "avx2",
        "fma",
        "avx512f",
        "avx512_vnni",
        "avx_vnni",
        "avx512_bf16",
        "amx_bf16",
        "amx_int8",
    )
    limits = {
        k: os.environ[k]
        for k in (
            "ATEN_CPU_CAPABILITY",
            "ONEDNN_MAX_CPU_ISA",
            "MKL_ENABLE_INSTRUCTIONS",
            "NUMBA_CPU_NAME",
            "NUMBA_CPU_FEATURES",
            "OPENBLAS_CORETYPE",
        )
        if os.environ.get(k)
    }
    if "NUMBA_CPU_NAME" in limits and "NUMBA_CPU_FEATURES" not in limits:
        # numba then targets the named CPU with the HOST's features: on an AVX512 machine
        # NUMBA_CPU_NAME=haswell alone still compiles AVX512 code (seen in its assembly).
        limits["NUMBA_CPU_FEATURES"] = "unset: numba keeps the host's instructions"
    return {
        "model": model,
        "cores": available_cpus(),
        "flags": " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/vnni/bf16/amx",
        "capability": torch.backends.cpu.get_cpu_capability(),
        "bf16": bf16_is_fast(),
        "limits": ", ".join(f"{k}={v}" for k, v in limits.items()),
    }
