"""Shared pieces of the fftconv tests: seeded inputs, an independent float64 truth (NumPy: a
direct O(N K) convolution, or numpy.fft where that is too slow), and the harness's tolerance
rule as an assertion that says what failed and how to reproduce it."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from harness.registry import Tolerance
from implementations.fftconv import reference
from tests.implementations.shared import verdict

TOL = Tolerance(multiple=2.0, floor=1e-5)
DIRECT_BUDGET = 1 << 26  # multiply-adds of the direct convolution before numpy.fft takes over


@dataclass(frozen=True)
class Conv:
    """One call's inputs: u [B, C, N], k [C, K], and v, w [B, C, N] when gated (else None)."""

    u: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor | None = None
    w: torch.Tensor | None = None

    @property
    def args(self) -> tuple:
        return self.u, self.k, self.v, self.w

    @property
    def dtype(self) -> torch.dtype:
        return self.u.dtype

    @property
    def gated(self) -> bool:
        return self.v is not None

    def with_(self, **changes) -> Conv:
        return replace(self, **changes)

    def to(self, dtype: torch.dtype) -> Conv:
        return Conv(*(None if t is None else t.to(dtype) for t in self.args))


def make_conv(seed: int, B: int, C: int, N: int, K: int, gated: bool, dtype: torch.dtype,
              u_scale: float = 1.0, k_scale: float | None = None) -> Conv:
    """u (and v, w) ~ N(0, u_scale^2), k ~ N(0, k_scale^2) with k_scale = 1/sqrt(K) by default,
    drawn in float32 and cast."""
    g = torch.Generator().manual_seed(seed)
    k_scale = 1.0 / math.sqrt(K) if k_scale is None else k_scale
    u = torch.randn(B, C, N, generator=g) * u_scale
    k = torch.randn(C, K, generator=g) * k_scale
    v = torch.randn(B, C, N, generator=g) if gated else None
    w = torch.randn(B, C, N, generator=g) if gated else None
    return Conv(u, k, v, w).to(dtype)


def _numpy(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().to(torch.float64).numpy()


def truth_direct(conv: Conv) -> torch.Tensor:
    """y in float64 by the definition: each row's full linear convolution (np.convolve, a
    direct sum) cut to its first N outputs, gated by hand."""
    u, k, v, w = map(_numpy, conv.args)
    x = u * w if conv.gated else u
    B, C, N = x.shape
    y = np.empty_like(x)
    for b in range(B):
        for c in range(C):
            y[b, c] = np.convolve(x[b, c], k[c])[:N]
    return torch.from_numpy(y * v if conv.gated else y)


def truth_fft(conv: Conv) -> torch.Tensor:
    """y in float64 by numpy.fft (for long filters, where the direct sum is slow); checked
    against truth_direct in test_reference.py."""
    u, k, v, w = map(_numpy, conv.args)
    x = u * w if conv.gated else u
    N = x.shape[-1]
    n = 1 << (2 * N - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, n) * np.fft.rfft(k, n)[None], n)[..., :N]
    return torch.from_numpy(y * v if conv.gated else y)


def truth(conv: Conv) -> torch.Tensor:
    B, C, N = conv.u.shape
    return truth_direct(conv) if B * C * N * conv.k.shape[1] <= DIRECT_BUDGET else truth_fft(conv)


def rule_verdict(out: torch.Tensor, conv: Conv, want: torch.Tensor | None = None) -> tuple[bool, str]:
    """The harness rule: the error against the float64 truth within 2x the reference's own
    error at the same dtype, plus the floor. Returns (passes, a line with the numbers)."""
    want = truth(conv) if want is None else want
    return verdict(out, reference.fftconv(*conv.args), want, conv.dtype, TOL)


def assert_rule(out: torch.Tensor, conv: Conv, context: str, want: torch.Tensor | None = None) -> None:
    assert out.dtype == conv.dtype and out.shape == conv.u.shape, \
        f"out is {out.dtype} {tuple(out.shape)}, expected {conv.dtype} {tuple(conv.u.shape)}; {context}"
    ok, line = rule_verdict(out, conv, want)
    assert ok, f"out outside the tolerance rule for {context}\n  {line}"


def describe(conv: Conv) -> str:
    B, C, N = conv.u.shape
    return f"{conv.dtype}, B={B}, C={C}, N={N}, K={conv.k.shape[1]}, gated={conv.gated}"
