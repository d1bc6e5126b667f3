"""What a user would otherwise call for a long convolution: torch.fft (cuFFT) in float32, the
formula of reference.py with the inputs upcast, and, for short filters, cuDNN's depthwise
conv1d. Both get the same head start as flashsuite's kernel: whatever depends on the filter
alone (its spectrum; the flipped weight) is computed in the builder, outside the timing,
except in fwd+bwd rows, where the filter is trained (it requires grad) and is part of the
step, as it is in flashsuite's."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from harness.cases import Case
from harness.needs import CUDA
from harness.registry import implementation

LOW_AND_SINGLE = (torch.bfloat16, torch.float16, torch.float32)
CONV1D_MAX_K = 1024  # a direct convolution costs 2 N K a sequence: past this, no contender


def _filter_once(k: torch.Tensor, of_filter: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """of_filter(k) computed now (forward rows), or at every call when k is trained."""
    if k.requires_grad:
        return lambda: of_filter(k)
    done = of_filter(k)
    return lambda: done


@implementation("fftconv", "torch-fft", role="peer", dtypes=LOW_AND_SINGLE, features=("gated", "backward"),
                needs=(CUDA,))
def build_torch_fft(case: Case, u, k, v=None, w=None):
    """torch.fft (cuFFT) in float32: rfft of u (or u * w), the product with the filter's spectrum, irfft."""
    length = case["N"]
    n = 2 * length
    spectrum = _filter_once(k, lambda k: torch.fft.rfft(k.float(), n=n))  # [C, N + 1]

    def call() -> torch.Tensor:
        x = u.float() * w.float() if w is not None else u.float()
        y = torch.fft.irfft(torch.fft.rfft(x, n=n) * spectrum(), n=n)[..., :length]
        return (v.float() * y if v is not None else y).to(u.dtype)

    return call


def _conv1d_unsupported(case: Case, dtype: torch.dtype) -> str | None:
    if case["K"] > CONV1D_MAX_K:
        return (f"conv1d is a direct convolution (2 N K a sequence): offered for filters up to K={CONV1D_MAX_K}, "
                f"got K={case['K']}")
    return None


@implementation("fftconv", "conv1d", role="peer", dtypes=LOW_AND_SINGLE, features=("gated", "backward"),
                needs=(CUDA,), unsupported=_conv1d_unsupported)
def build_conv1d(case: Case, u, k, v=None, w=None):
    """cuDNN's depthwise conv1d (F.conv1d, groups = channels), K - 1 zeros of causal padding on the left."""
    length, channels, taps = case["N"], case["C"], case["K"]
    weight = _filter_once(k, lambda k: k.flip(-1).unsqueeze(1).contiguous())  # conv1d correlates: [C, 1, K], reversed

    def call() -> torch.Tensor:
        x = u * w if w is not None else u
        y = F.conv1d(x, weight(), padding=taps - 1, groups=channels)[..., :length]
        return v * y if v is not None else y

    return call
