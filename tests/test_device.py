"""CPU capability reporting used by the benchmarks to skip settings the CPU cannot do well."""

from __future__ import annotations

import time

import pytest
import torch

from digitlab.device import bf16_is_fast, cpu_summary


def test_bf16_is_not_fast_when_onednn_is_capped_below_avx512_bf16(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert bf16_is_fast() is False


def test_bf16_is_not_fast_without_avx512(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert bf16_is_fast() is False


def test_cpu_summary_names_the_caps_in_force(monkeypatch):
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    info = cpu_summary()
    assert info["capability"] == torch.backends.cpu.get_cpu_capability()
    assert "MKL_ENABLE_INSTRUCTIONS=AVX2" in info["limits"]
    assert info["cores"] >= 1 and info["model"]


def test_cpu_summary_says_when_numba_keeps_the_hosts_instructions(monkeypatch):
    """NUMBA_CPU_NAME alone does not hold numba to that CPU's instructions: the line says so."""
    monkeypatch.setenv("NUMBA_CPU_NAME", "haswell")
    monkeypatch.delenv("NUMBA_CPU_FEATURES", raising=False)
    assert "NUMBA_CPU_FEATURES=unset" in cpu_summary()["limits"]
    monkeypatch.setenv("NUMBA_CPU_FEATURES", "+avx2,+fma")
    assert "NUMBA_CPU_FEATURES=+avx2,+fma" in cpu_summary()["limits"]


def test_keep_freed_memory_reuses_training_sized_blocks():
    """Inside the context a 20 MB block freed and allocated again, step after step, costs no
    fresh pages (glibc keeps it); on exit the setting reports whether it applied."""
    import platform
    import resource

    import numpy as np

    from digitlab.device import keep_freed_memory

    with keep_freed_memory("cpu") as applied:
        if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
            assert applied is False
            return
        assert applied is True
        for cycle in range(6):
            if cycle == 1:
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            block = np.ones(20 << 18, np.float32)  # 20 MB, every page touched
            del block
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    # One fresh 20 MB block is 5,120 faults; glibc by default took ~500 over these cycles here.
    assert faults < 64
    with keep_freed_memory("cuda") as applied:  # not a CPU loop: nothing to do
        assert applied is False


def test_probe_threads_counts_a_competing_process():
    """A CPU-bound process that runs the whole time takes a core: one thread fewer."""
    import os
    import subprocess
    import sys

    from digitlab.device import ThreadPicker, probe_threads

    assert probe_threads(1) == 1
    cores = len(os.sched_getaffinity(0))
    assert 1 <= probe_threads(cores) <= cores
    if cores < 2:
        return
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        time.sleep(0.3)  # they are running
        assert probe_threads(cores) == 1  # every core is taken
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    assert ThreadPicker(2, decided=1).chosen == 1  # a decided count: no chunk is timed
    assert ThreadPicker(2).chosen is None


def test_run_in_threads_runs_every_call_and_reraises():
    import threading

    import pytest

    from digitlab.device import run_in_threads

    seen = []
    lock = threading.Lock()

    def record(i):
        with lock:
            seen.append((i, threading.current_thread().name))

    run_in_threads([(record, (i,)) for i in range(3)])
    assert sorted(i for i, _ in seen) == [0, 1, 2]
    assert dict(seen)[0] == threading.current_thread().name  # the first runs here
    assert all(name.startswith("digitlab-worker") for i, name in seen if i)

    def fail():
        raise ValueError("from a worker")

    with pytest.raises(ValueError, match="from a worker"):
        run_in_threads([(record, (9,)), (fail, ())])
    run_in_threads([(record, (5,))])  # one call: this thread only
    assert dict(seen)[5] == threading.current_thread().name


def test_thread_picker_settles_after_each_switch_and_times_again():
    """settle: the first unit at each count is not compared; every: a new trial that many
    units after the last began; `current` is the count in force outside a trial."""
    from digitlab.device import ThreadPicker

    picker = ThreadPicker(2, warmup=0, settle=1, trial=2, every=8, margin=1.0)
    assert picker.chosen is None and picker.current == 2
    plan = []
    for i in range(6):  # 9 s first units would decide the trial if they were counted
        n = picker.next()
        plan.append(n)
        picker.record(n, 9.0 if i in (0, 3) else {2: 1.0, 1: 1.5}[n])
    assert plan == [2, 2, 2, 1, 1, 1] and picker.chosen == 2
    for _ in range(2):  # units 7 and 8 at the chosen count, outside any trial
        picker.record(picker.next(), 1.0)
    plan = []
    for _ in range(6):  # unit 9: eight after the first trial began, so a new one
        n = picker.next()
        plan.append(n)
        picker.record(n, {2: 3.0, 1: 1.0}[n])  # now one thread is faster
    assert plan == [2, 2, 2, 1, 1, 1]
    assert picker.chosen == 1 and picker.current == 1 and picker.next() == 1


def test_thread_picker_times_again_when_all_core_units_slow_down():
    """Load that arrives after a trial: all-core units at 1.5x their trial's time (median of
    three) start a trial at once, long before `every`; one slow unit does not, and units on
    one thread never do (that trial would run at all cores under the load)."""
    from digitlab.device import ThreadPicker

    picker = ThreadPicker(2, warmup=0, trial=1, every=400, margin=0.9, slowdown=1.5)
    for n, t in [(2, 1.0), (1, 1.5)]:  # the first trial: two threads win
        assert picker.next() == n
        picker.record(n, t)
    assert picker.chosen == 2
    for t in [1.0, 4.0, 1.1, 1.2, 1.4, 1.0]:  # one slow unit, small drift: no new trial
        picker.record(picker.next(), t)
    assert picker.early_trials == 0 and picker.next() == 2
    plan = []
    for t in [1.6, 3.0]:  # another program starts: two of the last three steps 1.6-3x slower
        plan.append(picker.next())
        picker.record(plan[-1], t)
    assert picker.early_trials == 1 and plan == [2, 2]
    for n, t in [(2, 3.0), (1, 1.6)]:  # the early trial: one thread now wins
        assert picker.next() == n
        picker.record(n, t)
    assert picker.chosen == 1
    for _ in range(10):  # on one thread, slower units start no trial
        picker.record(picker.next(), 5.0)
    assert picker.early_trials == 1 and picker.next() == 1
    # Without `slowdown` (the kNN search's pickers) nothing changes before `every`.
    plain = ThreadPicker(2, warmup=0, trial=1, every=400)
    for n, t in [(2, 1.0), (1, 1.5), (2, 9.0), (2, 9.0), (2, 9.0), (2, 9.0)]:
        plain.record(n, t)
    assert plain.next() == 2 and plain.early_trials == 0


def test_training_steps_watch_for_a_slowdown():
    from digitlab.device import STEP_SLOWDOWN, step_threads

    picker = step_threads(None, torch.device("cpu"))
    assert picker.slowdown == STEP_SLOWDOWN
    assert step_threads(1, torch.device("cpu")).fixed == 1


def test_thread_picker_unit_sets_the_count_and_records_the_time():
    """unit(): the count next() gives is set for the block (only when it differs), the block's
    time is recorded per row, and an error inside records nothing."""
    from digitlab.device import ThreadPicker, threads

    with threads(2):
        picker = ThreadPicker(2, warmup=0, margin=1.0)
        seen = []
        for _ in range(2):
            with picker.unit(rows=10) as n:
                seen.append((n, torch.get_num_threads()))
                if n == 2:
                    time.sleep(0.02)  # all cores slow here: one thread is kept
        assert seen == [(2, 2), (1, 1)] and picker.chosen == 1
        fixed = ThreadPicker(2, decided=2)
        with pytest.raises(RuntimeError), fixed.unit():
            raise RuntimeError("the block failed")
        assert fixed.chosen == 2
