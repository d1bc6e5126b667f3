"""Long convolutions by FFT (FlashFFTConv): a causal depthwise convolution of each channel
with a filter as long as the sequence, optionally gated as in Hyena.

Case parameters: B sequences, C channels (H in FlashFFTConv), N the sequence length, K the
filter length (K <= N; a shorter filter is zero-padded), gated (y = v * conv(u * w) rather
than conv(u)). Inputs u [B, C, N], k [C, K], and when gated v, w [B, C, N]; the output is
y [B, C, N]. See reference.py for the formula, and backward.py for the Triton path's
gradients (fwd+bwd rows: u, k, v and w all differentiable, as in Hyena's training).
"""

from __future__ import annotations

import math

import torch

from harness.cases import Case
from harness.needs import TRITON
from harness.registry import Direction, Inputs, Technique, Tolerance, implementation, register_technique
from implementations.fftconv import reference
from implementations.fftconv.backward import monarch_fftconv_trainable
from implementations.fftconv.monarch import DTYPES as TRITON_DTYPES
from implementations.fftconv.monarch import unsupported_reason
from implementations.fftconv.triton_fftconv import fftconv, prepare

PARAMETERS = ("B", "C", "N", "K", "gated")


def make_inputs(case: Case, dtype: torch.dtype, device: torch.device, seed: int) -> Inputs:
    """Unit-variance u (and v, w when gated), k scaled by 1/sqrt(K) so each output, a sum of up
    to K products, is O(1). Drawn in float32 in the order u, k, v, w, then cast: u and k are
    the same gated or not."""
    generator = torch.Generator(device=device).manual_seed(seed)
    B, C, N, K = case["B"], case["C"], case["N"], case["K"]

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(shape, generator=generator, device=device, dtype=torch.float32) * scale).to(dtype)

    tensors = {"u": randn(B, C, N), "k": randn(C, K, scale=1 / math.sqrt(K))}
    if case["gated"]:
        tensors["v"] = randn(B, C, N)
        tensors["w"] = randn(B, C, N)
    return Inputs(tensors, differentiable=tuple(tensors))


def flops(case: Case, direction: Direction) -> float:
    """The FFT convolution's useful work by the usual count (FFTW's): 5 L log2 L for a complex
    FFT of length L, halved for a real one, with L = 2N; one forward and one inverse real FFT
    per sequence (the filter's spectrum is the filter's, computed once, not counted), 6 per
    bin of the complex product (L/2 + 1 bins) and, gated, the 2N gate multiplies. Whatever the
    filter length and however an implementation computes it (a Monarch FFT does several times
    more arithmetic, a direct convolution 2 N K). The backward counts as two more: the input's
    gradient (a convolution of the gradient) and the filter's (a correlation)."""
    length = 2 * case["N"]
    per_sequence = 2 * 2.5 * length * math.log2(length) + 6 * (length // 2 + 1) + (2 * case["N"] if case["gated"] else 0)
    return float(case["B"] * case["C"] * per_sequence * (3 if direction == "fwd+bwd" else 1))


def min_bytes(case: Case, dtype: torch.dtype, direction: Direction) -> float:
    """u and k (and v, w) read once, y written once; the backward reads them and the output's
    gradient once more and writes one gradient for each."""
    size = torch.finfo(dtype).bits // 8
    B, C, N, K = case["B"], case["C"], case["N"], case["K"]
    inputs = (3 if case["gated"] else 1) * B * C * N + C * K  # u (and v, w), k
    elements = inputs + B * C * N  # and y
    if direction == "fwd+bwd":
        elements += 2 * inputs + B * C * N
    return float(elements * size)


def validate_case(case: Case) -> str | None:
    for name in ("B", "C", "N", "K"):
        if not isinstance(case[name], int) or isinstance(case[name], bool) or case[name] < 1:
            return f"{name} must be a positive integer, got {case[name]!r}"
    if case["K"] > case["N"]:
        return f"the filter must not be longer than the sequence: K={case['K']} > N={case['N']}"
    if not isinstance(case["gated"], bool):
        return f"gated must be true or false, got {case['gated']!r}"
    return None


def required_features(case: Case) -> frozenset[str]:
    return frozenset({"gated"} if case["gated"] else set())


register_technique(Technique(
    name="fftconv",
    summary="causal long convolution per channel by FFT, optionally Hyena-gated (v * conv(u * w))",
    parameters=PARAMETERS,
    make_inputs=make_inputs,
    flops=flops,
    min_bytes=min_bytes,
    required_features=required_features,
    validate_case=validate_case,
    tolerance=Tolerance(multiple=2.0, floor=1e-5),
    directions=("fwd", "fwd+bwd"),
))


@implementation("fftconv", "reference", role="reference",
                dtypes=(torch.float64, torch.float32, torch.float16, torch.bfloat16), features=("gated", "backward"))
def build_reference(case: Case, u, k, v=None, w=None):
    """Plain PyTorch: torch.fft's rfft, the product, irfft; 16-bit spectra rounded to the dtype."""
    return lambda: reference.fftconv(u, k, v, w)


@implementation("fftconv", "triton", role="triton", dtypes=TRITON_DTYPES, features=("gated", "backward"),
                needs=(TRITON,), unsupported=lambda case, dtype: unsupported_reason(case["N"], dtype))
def build_triton(case: Case, u, k, v=None, w=None):
    """flashsuite's Monarch FFT convolution: DFTs as tensor-core matmuls, filter product and gates fused."""
    if k.requires_grad:  # fwd+bwd: the filter changes every step, so its spectrum is part of the step
        return lambda: monarch_fftconv_trainable(u, k, v, w)
    prepared = prepare(k, case["N"], u.dtype)  # the filter's spectrum, factors and twiddles: outside the timing
    return lambda: fftconv(u, prepared, v, w)


from implementations.fftconv import peers  # noqa: E402,F401  (registers the peer libraries)
