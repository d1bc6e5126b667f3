"""What a user would otherwise call for a long convolution: torch.fft (cuFFT) in float32, the
formula of reference.py with the inputs upcast, and, for short filters, cuDNN's depthwise
conv1d. Both get the same head start as flashsuite's kernel: whatever depends on the filter
alone (its spectrum; the flipped weight) is computed in the builder, outside the timing."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.cases import Case
from harness.needs import CUDA
from harness.registry import implementation

LOW_AND_SINGLE = (torch.bfloat16, torch.float16, torch.float32)
CONV1D_MAX_K = 1024  # a direct convolution costs 2 N K a sequence: past this, no contender


@implementation("fftconv", "torch-fft", role="peer", dtypes=LOW_AND_SINGLE, features=("gated",), needs=(CUDA,))
def build_torch_fft(case: Case, u, k, v=None, w=None):
    """torch.fft (cuFFT) in float32: rfft of u (or u * w), the product with the filter's spectrum, irfft."""
    length = case["N"]
    n = 2 * length
    k_f = torch.fft.rfft(k.float(), n=n)  # [C, N + 1]

    def call() -> torch.Tensor:
        x = u.float() * w.float() if w is not None else u.float()
        y = torch.fft.irfft(torch.fft.rfft(x, n=n) * k_f, n=n)[..., :length]
        return (v.float() * y if v is not None else y).to(u.dtype)

    return call


def _conv1d_unsupported(case: Case, dtype: torch.dtype) -> str | None:
    if case["K"] > CONV1D_MAX_K:
        return (f"conv1d is a direct convolution (2 N K a sequence): offered for filters up to K={CONV1D_MAX_K}, "
                f"got K={case['K']}")
    return None


@implementation("fftconv", "conv1d", role="peer", dtypes=LOW_AND_SINGLE, features=("gated",), needs=(CUDA,),
                unsupported=_conv1d_unsupported)
def build_conv1d(case: Case, u, k, v=None, w=None):
    """cuDNN's depthwise conv1d (F.conv1d, groups = channels), K - 1 zeros of causal padding on the left."""
    length, channels, taps = case["N"], case["C"], case["K"]
    weight = k.flip(-1).unsqueeze(1).contiguous()  # conv1d correlates: [C, 1, K], reversed

    def call() -> torch.Tensor:
        x = u * w if w is not None else u
        y = F.conv1d(x, weight, padding=taps - 1, groups=channels)[..., :length]
        return v * y if v is not None else y

    return call
