"""The Monarch convolution's backward (backward.py): the gradients of u, k, v and w against
the float64 reference's autograd, by the harness's rule (the reference's own gradients at the
same dtype the yardstick), through the fused kernel and the three-pass one, gated and not,
filters shorter than the sequence, and every dtype the kernel takes."""

from __future__ import annotations

import pytest
import torch

from implementations.fftconv import monarch, reference
from implementations.fftconv.backward import monarch_fftconv_trainable
from tests.implementations.fftconv._support import TOL, describe, make_conv
from tests.implementations.shared import reproduce, verdict


def _gradients(function, conv, grad_y: torch.Tensor, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    names = ("u", "k", "v", "w") if conv.gated else ("u", "k")
    leaves = {name: getattr(conv, name).detach().to(dtype).requires_grad_() for name in names}
    y = function(*(leaves.get(name) for name in ("u", "k", "v", "w")))
    y.backward(grad_y.to(dtype))
    return {name: leaf.grad for name, leaf in leaves.items()}


@pytest.mark.parametrize("N,K,gated,dtype", [
    (300, 300, True, torch.bfloat16),    # fused: 1024 = 32 x 32
    (300, 7, False, torch.float32),      # a short filter
    (1000, 999, True, torch.float16),    # fused: 2048 = 64 x 32
    (1500, 1500, True, torch.float32),   # float32 in three passes: 4096 = 16 x 16 x 16
    (333, 100, False, torch.bfloat16),
], ids=["N300-gated-bf16", "N300-K7-fp32", "N1000-gated-fp16", "N1500-gated-fp32-3pass", "N333-K100-bf16"])
def test_gradients_within_rule(seed, N, K, gated, dtype):
    conv = make_conv(seed, 2, 3, N, K, gated, dtype)
    grad_y = torch.randn(conv.u.shape, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    got = _gradients(monarch_fftconv_trainable, conv, grad_y, dtype)
    truth = _gradients(reference.fftconv, conv, grad_y, torch.float64)
    yardstick = _gradients(reference.fftconv, conv, grad_y, dtype)
    levels = monarch.make_plan(N, dtype).levels
    for name, grad in got.items():
        assert grad.dtype == dtype and grad.shape == getattr(conv, name).shape, f"grad {name}: {grad.dtype} {grad.shape}"
        ok, line = verdict(grad, yardstick[name], truth[name], dtype, TOL)
        assert ok, f"grad {name} outside the rule, {describe(conv)}, {levels} levels; {reproduce(seed)}\n  {line}"


def test_the_forward_is_the_kernels(seed):
    """fwd+bwd rows time the same convolution as fwd rows: equal outputs, bit for bit in fp32."""
    conv = make_conv(seed, 2, 2, 500, 500, True, torch.float32)
    from implementations.fftconv.triton_fftconv import fftconv, prepare

    x = conv.u * conv.w
    assert torch.equal(monarch_fftconv_trainable(*conv.args), conv.v * fftconv(x, prepare(conv.k, 500, torch.float32)))


def test_a_half_gated_call_is_refused():
    conv = make_conv(0, 1, 1, 64, 64, True, torch.float32)
    with pytest.raises(ValueError, match="both v and w"):
        monarch_fftconv_trainable(conv.u, conv.k, conv.v, None)


def test_only_the_gradients_asked_for_are_computed(seed, monkeypatch):
    """A frozen filter (k without requires_grad) skips its correlation, and the gradients that
    are asked for are the ones computed with every input trainable."""
    from implementations.fftconv import backward

    conv = make_conv(seed, 2, 2, 300, 300, True, torch.float32)
    grad_y = torch.randn(conv.u.shape, generator=torch.Generator().manual_seed(seed + 1))
    everything = _gradients(monarch_fftconv_trainable, conv, grad_y, torch.float32)

    def refuse(*args):
        raise AssertionError("the filter's gradient was computed for a frozen filter")

    monkeypatch.setattr(backward, "_filter_gradient", refuse)
    u, v = conv.u.clone().requires_grad_(), conv.v.clone().requires_grad_()
    monarch_fftconv_trainable(u, conv.k, v, conv.w).backward(grad_y)
    assert torch.equal(u.grad, everything["u"]) and torch.equal(v.grad, everything["v"])
