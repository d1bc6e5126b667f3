"""Reference long convolution (Hyena, M2, SGConv): a causal depthwise convolution of each
channel with its own filter, computed with torch.fft, optionally gated as in Hyena, in plain
PyTorch at whatever precision its inputs have (float64 for the truth).

Shapes: u [B, C, N] (C channels, called H in FlashFFTConv), k [C, K] with K <= N (a filter
shorter than the sequence is zero-padded); gated, also v, w [B, C, N]. Returns y [B, C, N]:

    conv(x)[b, c, n] = sum_{j <= min(n, K-1)} k[c, j] x[b, c, n - j]
    y = conv(u)                      not gated
    y = v * conv(u * w)              gated (Hyena's gates around the long convolution)

computed as irfft(rfft(x, 2N) * rfft(k, 2N))[..., :N]: padding to 2N makes the FFT's circular
convolution the causal one. torch.fft takes no bfloat16 (and float16 only on a GPU), so for
16-bit inputs each transform runs in float32 and its result, a spectrum, is rounded to the
inputs' dtype, as every other op here stores its result in that dtype (u * w, the product of
spectra, v * y): the formula evaluated with every tensor it materialises at the inputs'
precision. Rows are transformed a block of channels at a time, so the float64 reference of
a 64K-long case fits on a GPU. Differentiable through autograd.
"""

from __future__ import annotations

import torch

SPECTRUM_BUDGET = 1 << 26  # complex elements of one block's spectrum (1 GiB in complex128)


def shape_problem(u: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None, w: torch.Tensor | None) -> str | None:
    """Why u, k, v, w do not fit together, or None."""
    if (v is None) != (w is None):
        return "the gated form takes both v and w (or neither)"
    if u.dim() != 3 or k.dim() != 2 or k.shape[0] != u.shape[1] or not 1 <= k.shape[1] <= max(u.shape[2], 1):
        return f"takes u [B, C, N] and k [C, K] with 1 <= K <= N; got {tuple(u.shape)}, {tuple(k.shape)}"
    if v is not None and (v.shape != u.shape or w.shape != u.shape):
        return f"v and w must have u's shape {tuple(u.shape)}; got {tuple(v.shape)}, {tuple(w.shape)}"
    return None


def _stored(z: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A complex spectrum as it would be stored in `dtype`: real and imaginary parts rounded."""
    if dtype in (torch.float32, torch.float64):
        return z
    parts = torch.view_as_real(z)
    return torch.view_as_complex(parts.to(dtype).to(parts.dtype).contiguous())


def fftconv(u: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None = None,
            w: torch.Tensor | None = None) -> torch.Tensor:
    """y [B, C, N] = conv(u), or v * conv(u * w) when v and w are given (module docstring)."""
    problem = shape_problem(u, k, v, w)
    if problem:
        raise ValueError(problem)
    dtype = u.dtype
    work = torch.float64 if dtype == torch.float64 else torch.float32
    batch, channels, length = u.shape
    n = 2 * length
    x = u * w if w is not None else u
    k_f = _stored(torch.fft.rfft(k.to(work), n=n), dtype)  # [C, N + 1]
    block = max(1, SPECTRUM_BUDGET // max(1, batch * (length + 1)))
    outputs = []
    for c0 in range(0, channels, block):
        x_f = _stored(torch.fft.rfft(x[:, c0:c0 + block].to(work), n=n), dtype)
        product = _stored(x_f * k_f[c0:c0 + block], dtype)
        outputs.append(torch.fft.irfft(product, n=n)[..., :length].to(dtype))
    y = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
    return v * y if v is not None else y
