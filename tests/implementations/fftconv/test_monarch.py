"""The Monarch decomposition's plans and constant tables (implementations/fftconv/monarch.py):
FFT lengths, every shipped and swept plan valid, bad plans and lengths refused with a reason,
and the DFT factors, twiddles and the filter's digit-reversed spectrum against NumPy."""

from __future__ import annotations

import ast
import numpy as np
import pytest
import torch

from implementations.fftconv import monarch, tune
from implementations.fftconv.monarch import Plan
from implementations.fftconv.triton_fftconv import prepare


@pytest.mark.parametrize("N,L", [(1, 256), (128, 256), (129, 512), (300, 1024), (4096, 8192), (8192, 16384),
                                 (8193, 32768), (65536, 131072), (1 << 20, 1 << 21)])
def test_fft_length(N, L):
    assert monarch.fft_length(N) == L


@pytest.mark.parametrize("L, dtype", [(L, torch.bfloat16) for L in sorted(monarch.PLANS["sm90"])] +
                         [(L, torch.float32) for L in sorted(monarch.FP32_PLANS["sm90"])])
def test_every_plan_factors_its_length(L, dtype, monkeypatch):
    for arch in monarch.PLANS:
        monkeypatch.setenv("FLASHSUITE_ARCH", arch)  # make_plan reads the named architecture's table
        plan = monarch.make_plan(L // 2, dtype)
        assert plan.length == L and plan.problem() is None, (arch, plan)
        assert plan.levels == 3 or L <= monarch.FUSED_MAX_L, (arch, plan)  # one kernel holds at most FUSED_MAX_L
        if dtype != torch.float32:  # 16-bit: fused wherever one kernel can hold L; float32 may take passes sooner
            assert plan.levels == (2 if L <= monarch.FUSED_MAX_L else 3), (arch, plan)
        assert plan.num_warps in (4, 8, 16)
    assert set(monarch.PLANS["sm90"]) == {1 << e for e in range(8, 22)}
    assert set(monarch.FP32_PLANS["sm90"]) == {1 << e for e in range(8, 19)}  # to FP32_MAX_L
    assert set(monarch.FP32_PLANS) == set(monarch.PLANS)
    if dtype == torch.float32:
        assert plan.n2 * plan.n3 <= monarch.FP32_MAX_TILE


def test_a_plans_entry_may_name_its_chunk_and_stages(monkeypatch):
    monkeypatch.setenv("FLASHSUITE_ARCH", "sm90")
    monkeypatch.setitem(monarch.PLANS["sm90"], 16384, (1, 128, 128, 8, 32, 2))
    assert monarch.make_plan(8192) == Plan(1, 128, 128, num_warps=8, chunk=32, num_stages=2)
    monkeypatch.setitem(monarch.PLANS["sm90"], 16384, (1, 128, 128, 16))
    assert monarch.make_plan(8192) == Plan(1, 128, 128, num_warps=16, chunk=0, num_stages=3)
    monkeypatch.setitem(monarch.PLANS["sm90"], 16384, (16, 32, 32, 8, 0, 3, 32, 8, False))
    assert monarch.make_plan(8192) == Plan(16, 32, 32, num_warps=8, block_m=32, column_warps=8, paired=False)
    monkeypatch.setitem(monarch.PLANS["sm90"], 16384, (16, 32, 32, 4, 0, 3, 64, 4, True, 128))
    plan = monarch.make_plan(8192)
    assert plan.max_registers == 128 and plan.register_cap() == {"maxnreg": 128}
    assert Plan(16, 32, 32).register_cap() == {}


def test_tuning_names_and_entries_give_back_their_plans():
    """The sweep's candidate names parse back to the plan, and its PLANS entry builds it again."""
    for N in (512, 16384):
        for plan in tune.candidates(N):
            assert tune._parse(f"N{N} {tune._name(plan)}") == (f"N{N}", plan)
            n1, n2, n3, warps, *rest = ast.literal_eval(tune._entry(plan))
            keys = ("chunk", "num_stages", "block_m", "column_warps", "paired", "max_registers")
            assert Plan(n1, n2, n3, num_warps=warps, **dict(zip(keys, rest))) == plan
    assert any(plan.max_registers for plan in tune.candidates(16384))


@pytest.mark.parametrize("N", tune.LENGTHS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_tuning_candidates_are_valid_plans(N, dtype):
    """implementations/fftconv/tune.py sweeps only plans the launcher takes, the default among them."""
    plans = tune.candidates(N, dtype)
    assert plans and all(p.problem() is None and p.length == monarch.fft_length(N) for p in plans)
    default = monarch.make_plan(N, dtype)
    assert any((p.n1, p.n2, p.n3, p.num_warps, p.chunk, p.num_stages) ==
               (default.n1, default.n2, default.n3, default.num_warps, default.chunk, default.num_stages) for p in plans)


def test_float32_inputs_take_their_own_table(monkeypatch):
    monkeypatch.setenv("FLASHSUITE_ARCH", "sm90")
    monkeypatch.setitem(monarch.FP32_PLANS["sm90"], 16384, (16, 32, 32, 8))
    assert monarch.make_plan(8192, torch.float32) == Plan(16, 32, 32, num_warps=8)
    assert monarch.make_plan(8192, torch.bfloat16) != monarch.make_plan(8192, torch.float32)
    assert monarch.make_plan(8192) == monarch.make_plan(8192, torch.float16) == monarch.make_plan(8192, torch.bfloat16)


def test_bad_plans_are_refused():
    assert "power of two of at least 16" in Plan(1, 8, 32).problem()
    assert "power of two of at least 16" in Plan(12, 16, 16).problem()
    assert "block_m" in Plan(16, 16, 16, block_m=512).problem()
    assert "chunk must be 0 or a power of two from 16 to n2" in Plan(1, 32, 16, chunk=8).problem()
    assert "chunk must be 0 or a power of two from 16 to n2" in Plan(1, 32, 16, chunk=64).problem()
    assert Plan(1, 32, 16, chunk=16).problem() is None and Plan(1, 32, 16).rows_per_pass == 32
    assert "num_stages must be from 1 to 4" in Plan(1, 32, 16, chunk=16, num_stages=0).problem()
    assert "max_registers must be 0 (no cap) or from 24 to 255" in Plan(16, 32, 16, max_registers=300).problem()
    with pytest.raises(ValueError, match="too short"):
        prepare(torch.zeros(1, 4), 300, torch.float32, Plan(1, 16, 16))


@pytest.mark.parametrize("N", [monarch.MAX_N + 1, 1 << 22])
def test_unsupported_lengths_give_a_one_line_reason(N):
    reason = monarch.unsupported_reason(N, torch.bfloat16)
    assert reason and "\n" not in reason and f"N={N}" in reason and str(monarch.MAX_N) in reason
    with pytest.raises(ValueError, match=f"N={N}"):
        monarch.make_plan(N)
    with pytest.raises(ValueError, match=f"N={N}"):
        prepare(torch.zeros(1, 4), N, torch.bfloat16)
    assert monarch.unsupported_reason(monarch.MAX_N, torch.bfloat16) is None
    assert monarch.unsupported_reason(monarch.FP32_MAX_N, torch.float32) is None
    reason = monarch.unsupported_reason(monarch.FP32_MAX_N + 1, torch.float32)
    assert reason and "\n" not in reason and f"float32 kernels' {monarch.FP32_MAX_N}" in reason
    assert monarch.unsupported_reason(monarch.FP32_MAX_N + 1, torch.bfloat16) is None
    assert monarch.unsupported_reason(8, torch.float64) == \
        "dtype torch.float64 is not supported (accepted: bfloat16, float16, float32)"


@pytest.mark.parametrize("n", [16, 32, 128])
def test_dft_factor_is_the_unitary_dft(n):
    f = monarch.dft_factor(n, torch.float32, torch.device("cpu")).double()
    want = np.fft.fft(np.eye(n)) / np.sqrt(n)  # column j: the DFT of e_j, i.e. F[k, j]
    np.testing.assert_allclose(f[0].numpy() + 1j * f[1].numpy(), want, atol=1e-7)
    assert monarch.dft_factor(n, torch.float16, torch.device("cpu")).dtype == torch.float16


def test_twiddles():
    t = monarch.twiddles(16, 32, 512, torch.device("cpu")).double().numpy()
    r, c = np.arange(16)[:, None], np.arange(32)[None, :]
    np.testing.assert_allclose(t[0] + 1j * t[1], np.exp(-2j * np.pi * r * c / 512), atol=1e-7)
    half = monarch.twiddles(16, 32, 512, torch.device("cpu"), torch.float16)  # 16-bit inputs' tables
    assert half.dtype == torch.float16
    np.testing.assert_allclose(half.double().numpy(), t, atol=2 ** -11)


def test_filter_spectrum_is_in_digit_reversed_order(seed):
    """Element [c, :, k1, k2, k3] is bin k1 + N1 (k2 + N2 k3) of the filter's L-point DFT."""
    plan = Plan(16, 32, 16)
    k = torch.randn(3, 100, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    got = monarch.filter_spectrum(k, plan, torch.float64).numpy()
    full = np.fft.fft(k.numpy(), plan.length)
    for k1, k2, k3 in [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (5, 17, 9), (15, 31, 15)]:
        bin_ = k1 + 16 * (k2 + 32 * k3)
        np.testing.assert_allclose(got[:, 0, k1, k2, k3] + 1j * got[:, 1, k1, k2, k3], full[:, bin_], atol=1e-9)
