from __future__ import annotations

import torch
import triton
import triton.language as tl

from harness import interpreter
from harness.needs import TRITON, interpreting


@triton.jit
def _bf16_dot(a_ptr, b_ptr, c_ptr, M: tl.constexpr, K: tl.constexpr, N: tl.constexpr):
    m = tl.arange(0, M)
    k = tl.arange(0, K)
    n = tl.arange(0, N)
    a = tl.load(a_ptr + m[:, None] * K + k[None, :])
    b = tl.load(b_ptr + k[:, None] * N + n[None, :])
    tl.store(c_ptr + m[:, None] * N + n[None, :], tl.dot(a, b))


@triton.jit
def _to_bf16(x_ptr, y_ptr, N: tl.constexpr):
    i = tl.arange(0, N)
    tl.store(y_ptr + i, tl.load(x_ptr + i).to(tl.bfloat16))


def test_tests_run_in_tritons_interpreter_and_triton_kernels_are_available():
    assert interpreting()
    assert TRITON.check() is None


def test_the_probes_pass_after_conftest_enabled_the_interpreter():
    assert interpreter._dot_error() < 1e-3
    assert interpreter._cast_mismatches() == 0


def test_a_bf16_dot_in_a_jit_kernel_matches_torch_in_float32():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(16, 32, generator=generator).to(torch.bfloat16)
    b = torch.randn(32, 16, generator=generator).to(torch.bfloat16)
    c = torch.empty(16, 16)
    _bf16_dot[(1,)](a, b, c, 16, 32, 16)
    assert (c - a.float() @ b.float()).abs().max().item() < 1e-3


def test_a_fp32_to_bf16_cast_in_a_jit_kernel_rounds_to_nearest_even_like_torch():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1024, generator=generator) * 100
    # halfway cases, where truncation and round-to-nearest-even differ
    x[:4] = torch.tensor([1.0 + 2**-8, 1.0 + 3 * 2**-8, -(1.0 + 3 * 2**-8), 1.0 + 2**-7 - 2**-20])
    x[4] = float("nan")
    y = torch.empty(1024, dtype=torch.bfloat16)
    _to_bf16[(1,)](x, y, 1024)
    expected = x.to(torch.bfloat16)
    assert torch.equal(y[5:].view(torch.int16), expected[5:].view(torch.int16))
    assert torch.equal(y[:4].float(), expected[:4].float())
    assert torch.isnan(y[4])


def test_fix_bfloat16_installs_nothing_more_once_fixed():
    assert interpreter.fix_bfloat16() == []
