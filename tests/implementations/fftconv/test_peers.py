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


@pytest.mark.parametrize("name", ["torch-fft", "conv1d"])
def test_a_trained_filter_gets_its_gradient_at_every_call(seed, name):
    """fwd+bwd rows: with k requiring grad, its spectrum (or flipped weight) is taken inside the
    call, so two steps both reach k: the gradient doubles, and equals autograd's in float64."""
    conv = make_conv(seed, 2, 3, 100, 20, True, torch.float64)
    leaves = [t.detach().requires_grad_() for t in conv.args]
    call = getattr(peers, f"build_{name.replace('-', '_')}")(_case(2, 3, 100, 20, True), *leaves)
    call().sum().backward()
    once = leaves[1].grad.clone()
    call().sum().backward()
    torch.testing.assert_close(leaves[1].grad, 2 * once, **F64)
    fresh = [t.detach().requires_grad_() for t in conv.args]
    direct = fresh[2] * torch.stack([torch.stack([torch.nn.functional.conv1d(
        (fresh[0] * fresh[3])[b, c][None, None], fresh[1][c].flip(-1)[None, None], padding=19)[0, 0, :100]
        for c in range(3)]) for b in range(2)])
    direct.sum().backward()
    if name == "conv1d":
        torch.testing.assert_close(once, fresh[1].grad, **F64)
    else:  # torch-fft computes in float32: an element near zero can be off by more than rtol
        error = ((once - fresh[1].grad).norm() / fresh[1].grad.norm()).item()
        assert error < 1e-6, f"grad k off by {error:.2e} (relative L2); {reproduce(seed)}"


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
    assert impl.features == {"gated", "backward"}
    reason = impl.why_not(tech, _case(2, 3, 256, 16, True), torch.float64, "fwd")
    assert reason.startswith(f"{name} does not support dtype float64")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what is reported on a machine without CUDA")
@pytest.mark.parametrize("name", ["torch-fft", "conv1d"])
def test_says_it_needs_cuda_on_a_cpu(impls, name):
    assert "CUDA" in impls[name].missing_needs()
