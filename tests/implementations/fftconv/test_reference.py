"""The plain-PyTorch reference (implementations/fftconv/reference.py): the truth every kernel is
judged by (in float64) and the yardstick of the tolerance rule (at the kernel's dtype), so it is
checked against an independent float64 computation (_support.truth_direct: np.convolve, a
direct sum, row by row), for causality, for its block-wise processing of channels, and for what
it rounds at 16-bit precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from implementations.fftconv import reference
from tests.implementations.fftconv._support import describe, make_conv, truth_direct, truth_fft
from tests.implementations.shared import reproduce

F64 = dict(rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("B,C,N,K,gated", [
    (2, 3, 37, 37, False), (1, 5, 64, 1, True), (3, 1, 1, 1, False), (2, 2, 300, 7, True), (1, 3, 513, 500, True),
], ids=["odd-K=N", "K=1-gated", "N=1", "short-K-gated", "N=513"])
def test_matches_direct_convolution(seed, B, C, N, K, gated):
    conv = make_conv(seed, B, C, N, K, gated, torch.float64)
    got = reference.fftconv(*conv.args)
    assert got.dtype == torch.float64 and got.shape == (B, C, N)
    torch.testing.assert_close(got, truth_direct(conv), **F64, msg=lambda m: f"{m}\n{describe(conv)}; {reproduce(seed)}")


def test_long_sequence_matches_numpy_fft(seed):
    """64K tokens: torch.fft against numpy.fft (itself checked against the direct sum below)."""
    conv = make_conv(seed, 1, 2, 65536, 65536, True, torch.float64)
    torch.testing.assert_close(reference.fftconv(*conv.args), truth_fft(conv), **F64)


def test_numpy_fft_truth_matches_direct_sum(seed):
    conv = make_conv(seed, 2, 2, 1000, 999, True, torch.float64)
    torch.testing.assert_close(truth_fft(conv), truth_direct(conv), **F64)


def test_causal(seed):
    """Changing u at step 50 leaves y[:50] unchanged (no wrap-around of the FFT's circular
    convolution) and changes y[50:]."""
    conv = make_conv(seed, 1, 2, 128, 128, False, torch.float64)
    u = conv.u.clone()
    u[..., 50] += 10.0
    before, after = reference.fftconv(*conv.args), reference.fftconv(u, conv.k)
    torch.testing.assert_close(after[..., :50], before[..., :50], **F64)
    assert (after[..., 50:] - before[..., 50:]).abs().max() > 0.1


def test_channel_blocks_do_not_change_the_result(seed, monkeypatch):
    """A spectrum budget of one channel a block gives what one block gives."""
    conv = make_conv(seed, 2, 5, 100, 60, True, torch.float64)
    whole = reference.fftconv(*conv.args)
    monkeypatch.setattr(reference, "SPECTRUM_BUDGET", 1)
    torch.testing.assert_close(reference.fftconv(*conv.args), whole, **F64)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float16, 2e-3), (torch.bfloat16, 1.5e-2)])
@pytest.mark.parametrize("gated", [False, True])
def test_low_precision_keeps_dtype_and_is_close(seed, dtype, tol, gated):
    """The yardstick at a kernel's dtype: that dtype out, and near the truth."""
    conv = make_conv(seed, 2, 3, 1000, 1000, gated, dtype)
    got = reference.fftconv(*conv.args)
    want = truth_direct(conv)
    rel = ((got.double() - want).norm() / want.norm()).item()
    assert got.dtype == dtype and rel < tol, f"relative error {rel:.3e}, {describe(conv)}; {reproduce(seed)}"


def test_16bit_spectra_are_rounded(seed):
    """At bfloat16 the spectra are stored rounded (real and imaginary parts): the reference is
    not just the float32 computation with its output rounded."""
    z = torch.randn(7, 5, dtype=torch.complex64)
    stored = reference._stored(z, torch.bfloat16)
    assert torch.equal(stored.real, z.real.to(torch.bfloat16).float())
    assert torch.equal(stored.imag, z.imag.to(torch.bfloat16).float())
    assert reference._stored(z, torch.float32) is z
    conv = make_conv(seed, 1, 2, 512, 512, False, torch.bfloat16)
    float32_then_rounded = reference.fftconv(*conv.to(torch.float32).args).to(torch.bfloat16)
    assert not torch.equal(reference.fftconv(*conv.args), float32_then_rounded)


@pytest.mark.parametrize("shapes,gated,match", [
    (((2, 3, 8), (3, 9)), False, r"1 <= K <= N"),
    (((2, 3, 8), (2, 4)), False, r"takes u \[B, C, N\] and k \[C, K\]"),
    (((3, 8), (3, 4)), False, r"takes u \[B, C, N\]"),
    (((2, 3, 8), (3, 4)), "v-only", r"both v and w"),
    (((2, 3, 8), (3, 4)), "bad-v", r"v and w must have u's shape"),
], ids=["K>N", "channels", "2-d-u", "v-only", "v-shape"])
def test_bad_inputs_raise_value_error(shapes, gated, match):
    u, k = torch.zeros(shapes[0]), torch.zeros(shapes[1])
    v = w = None
    if gated == "v-only":
        v = torch.zeros_like(u)
    elif gated == "bad-v":
        v, w = torch.zeros(2, 3, 7), torch.zeros_like(u)
    with pytest.raises(ValueError, match=match):
        reference.fftconv(u, k, v, w)


def test_direct_truth_is_the_definition():
    """The truth by hand on a tiny case: y[n] = sum_j k[j] u[n - j] for j <= n."""
    u = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]], dtype=torch.float64)
    k = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    from tests.implementations.fftconv._support import Conv

    want = np.array([1.0, 2.5, 4.0, 5.5])
    assert np.allclose(truth_direct(Conv(u, k)).numpy().ravel(), want)
    assert np.allclose(reference.fftconv(u, k).numpy().ravel(), want)
