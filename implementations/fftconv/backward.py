"""The Monarch convolution with a backward pass (fwd+bwd rows). The gradient of a causal
convolution is the anti-causal correlation with the same filter, which is the causal
convolution of the time-reversed gradient, reversed back (flip: along time):

    grad_x[b, c, j] = sum_{n >= j} grad_c[b, c, n] k[c, n - j] = flip(conv(flip(grad_c), k))[b, c, j]

so the input's gradient runs the forward kernel (triton_fftconv.fftconv) again, on the same
prepared filter. The filter's gradient, each channel's correlation summed over the batch,

    grad_k[c, j] = sum_b sum_n grad_c[b, c, n] x[b, c, n - j]        (j < K)

is computed with torch.fft in float32 (no Triton kernel for it yet). Gated (y = v * c with
c = conv(u * w)): grad_v = grad_y * c, grad_c = grad_y * v, grad_u = grad_x * w and
grad_w = grad_x * u. The forward keeps c, so its gates are applied outside the kernel.
"""

from __future__ import annotations

import torch

from implementations.fftconv import reference
from implementations.fftconv.triton_fftconv import fftconv, prepare


class _MonarchConvolution(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None, w: torch.Tensor | None):
        prepared = prepare(k.detach(), u.shape[-1], u.dtype)  # a new filter every step, as in training
        x = u * w if w is not None else u
        c = fftconv(x, prepared)
        ctx.prepared = prepared
        ctx.save_for_backward(u, k, v, w, c)
        return v * c if v is not None else c

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        u, k, v, w, c = ctx.saved_tensors
        needs_u, needs_k, needs_v, needs_w = ctx.needs_input_grad  # a frozen filter skips its correlation
        grad_c = grad_y * v if v is not None else grad_y
        grad_x = fftconv(grad_c.flip(-1), ctx.prepared).flip(-1) if needs_u or needs_w else None
        grad_k = None
        if needs_k:
            x = u * w if w is not None else u
            grad_k = _filter_gradient(grad_c, x, k.shape[-1]).to(k.dtype)
        if v is None:
            return grad_x, grad_k, None, None
        return (grad_x * w if needs_u else None, grad_k, grad_y * c if needs_v else None,
                grad_x * u if needs_w else None)


def _filter_gradient(grad_c: torch.Tensor, x: torch.Tensor, taps: int) -> torch.Tensor:
    """sum_b of each channel's correlation of grad_c with x, lags 0 to taps - 1, in float32:
    irfft(sum_b conj(rfft(x)) rfft(grad_c)), padded to 2N so no lag wraps around."""
    n = 2 * x.shape[-1]
    spectrum = (torch.fft.rfft(x.float(), n=n).conj() * torch.fft.rfft(grad_c.float(), n=n)).sum(dim=0)
    return torch.fft.irfft(spectrum, n=n)[..., :taps]


def monarch_fftconv_trainable(u: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None = None,
                              w: torch.Tensor | None = None) -> torch.Tensor:
    """y = conv(u) or v * conv(u * w) (reference.fftconv), differentiable in u, k, v and w."""
    problem = reference.shape_problem(u, k, v, w)
    if problem:
        raise ValueError(problem)
    return _MonarchConvolution.apply(u, k, v, w)
