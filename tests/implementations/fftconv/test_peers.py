"""The peers registered beside the Monarch kernel (implementations/fftconv/peers.py): torch.fft in
float32 and cuDNN's depthwise conv1d. Both run on the CPU too (PyTorch's own FFT and
convolution), so the adapters' arithmetic (the filter's flip and causal padding, the gates,
the precomputed spectrum) is checked there against the independent truth."""

from __future__ import annotations

import pytest
import torch

from harness import registry
from harness.cases import Case
from implementations.fftconv import peers
from tests.implementations.fftconv._support import assert_rule, describe, make_conv, truth, truth_direct
from tests.implementations.shared import reproduce

F64 = dict(rtol=1e-10, atol=1e-12)


def _case(B: int, C: int, N: int, K: int, gated: bool) -> Case:
    return Case.of(B=B, C=C, N=N, K=K, gated=gated)


@pytest.fixture(scope="module")
def impls() -> dict[str, registry.Implementation]:
    registry.load_all()
    return {impl.name: impl for impl in registry.implementations("fftconv")}


@pytest.mark.parametrize("B,C,N,K,gated", [(2, 3, 37, 5, True), (1, 1, 1, 1, False), (2, 5, 300, 300, False),
                                           (1, 2, 1000, 1024 - 24, True)], ids=["short", "N1", "K=N", "long-K"])
def test_conv1d_matches_the_direct_sum(seed, B, C, N, K, gated):
    """In float64: the flipped weight, K - 1 zeros on the left and the first N outputs are the
    causal convolution; the gates around it."""
    conv = make_conv(seed, B, C, N, K, gated, torch.float64)
    out = peers.build_conv1d(_case(B, C, N, K, gated), *conv.args)()
    assert out.shape == (B, C, N) and out.dtype == torch.float64
    torch.testing.assert_close(out, truth_direct(conv), **F64, msg=lambda m: f"{m}\n{describe(conv)}; {reproduce(seed)}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("gated", [False, True])
def test_torch_fft_within_rule(seed, dtype, gated):
    """The float32 FFT with the inputs upcast: the inputs' dtype out, within the rule (at
    bf16, far inside it: only the output is rounded)."""
    conv = make_conv(seed, 2, 3, 500, 400, gated, dtype)
    out = peers.build_torch_fft(_case(2, 3, 500, 400, gated), *conv.args)()
    assert_rule(out, conv, f"{describe(conv)}; {reproduce(seed)}")


def test_torch_fft_computes_in_float32(seed):
    """float64 inputs would still be computed in float32: the adapter is the float32 peer."""
    conv = make_conv(seed, 1, 2, 256, 256, False, torch.float64)
    out = peers.build_torch_fft(_case(1, 2, 256, 256, False), *conv.args)()
    err = (out - truth(conv)).abs().max().item()
    assert out.dtype == torch.float64 and 1e-12 < err < 1e-5, err


def test_torch_fft_spectrum_is_precomputed(seed, monkeypatch):
    """The filter's spectrum is taken in the builder: the timed call transforms u only."""
    conv = make_conv(seed, 1, 2, 128, 16, False, torch.float32)
    call = peers.build_torch_fft(_case(1, 2, 128, 16, False), *conv.args)
    shapes = []
    rfft = torch.fft.rfft
    monkeypatch.setattr(torch.fft, "rfft", lambda x, n: shapes.append(tuple(x.shape)) or rfft(x, n=n))
    call()
    assert shapes == [(1, 2, 128)]


def test_conv1d_refuses_long_filters(impls):
    tech = registry.technique("fftconv")
    conv1d = impls["conv1d"]
    assert conv1d.why_not(tech, _case(16, 768, 8192, 1024, True), torch.bfloat16, "fwd") is None
    reason = conv1d.why_not(tech, _case(16, 768, 8192, 1025, False), torch.bfloat16, "fwd")
    assert reason == "conv1d is a direct convolution (2 N K a sequence): offered for filters up to K=1024, got K=1025"


@pytest.mark.parametrize("name", ["torch-fft", "conv1d"])
def test_peer_registration(impls, name):
    impl = impls[name]
    tech = registry.technique("fftconv")
    assert impl.role == "peer" and impl.summary
    assert impl.dtypes == {torch.bfloat16, torch.float16, torch.float32}
    assert impl.features == {"gated"}
    reason = impl.why_not(tech, _case(2, 3, 256, 16, True), torch.float64, "fwd")
    assert reason.startswith(f"{name} does not support dtype float64")
    assert impl.why_not(tech, _case(2, 3, 256, 16, True), torch.float16, "fwd+bwd") == f"{name} has no backward pass"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what is reported on a machine without CUDA")
@pytest.mark.parametrize("name", ["torch-fft", "conv1d"])
def test_says_it_needs_cuda_on_a_cpu(impls, name):
    assert "CUDA" in impls[name].missing_needs()
