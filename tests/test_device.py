"""CPU capability reporting used by the benchmarks to skip settings the CPU cannot do well."""

from __future__ import annotations

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
