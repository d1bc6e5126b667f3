"""The fused reverse-time kernel (implementations/rnn/triton_rnn_backward.py) through the
differentiable op `fused_rnn`, in Triton's interpreter: dWx, dR and db against the float64
truth under the harness's rule, determinism, coverage of every gradient element, what is
saved for the backward, and wrong gradients rejected by the same rule."""

from __future__ import annotations

import pytest
import torch

from harness.correctness import bitwise_equal, poisoned_allocations
from implementations.rnn import triton_rnn_backward as trb
from implementations.rnn import triton_rnn_forward as trf
from implementations.rnn.triton_rnn import fused_rnn
from tests.implementations.rnn._support import (
    assert_grads_rule, assert_rule, describe, grad_verdicts, gradients, make_rnn, true_gradients, upstream)
from tests.implementations.shared import reproduce

# NumPy's overflow warnings from the interpreter are expected: tl.sigmoid is 1 / (1 + e^-x),
# and e^-x overflows to inf (giving the right 0) for saturated gates.
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# --- the backward (reverse-time kernel, then one batched GEMM for dR and db) ----------------------

BACKWARD_SHAPES = [(17, 7, 2, 16), (5, 9, 3, 32), (1, 7, 1, 64)]  # (B, T, H, D), cycled over the cases
BACKWARD_CASES = [(cell, dtype_name, BACKWARD_SHAPES[(i + j) % 3])
                  for i, cell in enumerate(("lstm", "gru", "slstm")) for j, dtype_name in enumerate(DTYPES)]


@pytest.mark.parametrize("cell,dtype_name,shape", BACKWARD_CASES,
                         ids=[f"{c}-{d}-B{s[0]}-T{s[1]}-H{s[2]}-D{s[3]}" for c, d, s in BACKWARD_CASES])
def test_backward_within_rule(seed, cell, dtype_name, shape):
    """dWx, dR and db for a seeded upstream gradient, each within the rule against float64
    autograd through the reference (the reference's own gradients at the dtype the yardstick)."""
    r = make_rnn(seed, cell, *shape, DTYPES[dtype_name])
    dy = upstream(seed, r)
    y, grads = gradients(fused_rnn, r, dy)
    context = f"backward, {describe(r)}; {reproduce(seed)}"
    assert_rule(y, r, context)
    assert_grads_rule(grads, r, dy, context)


@pytest.mark.parametrize("cell", ["lstm", "gru", "slstm"])
def test_backward_single_step(seed, cell):
    """T = 1: no recurrence to go back through; dR is zero (y_0 = 0) and the rest is the cell's
    pointwise derivative (the saved buffers' before-the-first-step defaults)."""
    r = make_rnn(seed, cell, 17, 1, 2, 16, torch.float32)
    dy = upstream(seed, r)
    _, grads = gradients(fused_rnn, r, dy)
    assert torch.equal(grads[1], torch.zeros_like(grads[1])), f"dR nonzero with one step; {reproduce(seed)}"
    assert_grads_rule(grads, r, dy, f"backward, {describe(r)}; {reproduce(seed)}")


@pytest.mark.parametrize("cell", ["lstm", "gru", "slstm"])
def test_backward_long_sequence_fp32(seed, cell):
    """64 steps back through the recurrence in float32: the gradients stay within the rule."""
    r = make_rnn(seed, cell, 2, 64, 1, 16, torch.float32)
    dy = upstream(seed, r)
    _, grads = gradients(fused_rnn, r, dy)
    assert_grads_rule(grads, r, dy, f"backward, {describe(r)}; {reproduce(seed)}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_backward_slstm_huge_gate_preactivations(seed, dtype):
    """Wx x 50: the backward recomputes e^{i - m} and the forget gate from the saved m, with
    m_0 = -inf before the first step; the gradients are finite and within the rule."""
    r = make_rnn(seed, "slstm", 5, 7, 2, 16, dtype, wx_scale=50.0)
    dy = upstream(seed, r)
    _, grads = gradients(fused_rnn, r, dy)
    for name, g in zip(("dWx", "dR", "db"), grads):
        assert torch.isfinite(g).all(), f"{name} not finite; {reproduce(seed)}"
    assert_grads_rule(grads, r, dy, f"backward, Wx x 50, {describe(r)}; {reproduce(seed)}")


def test_forward_is_the_same_when_saving_for_backward(seed):
    """With inputs that need gradients the kernel also writes its saved buffers; y is bitwise
    the inference call's."""
    r = make_rnn(seed, "gru", 17, 5, 2, 16, torch.bfloat16)
    y, _ = gradients(fused_rnn, r, upstream(seed, r))
    assert torch.equal(y, fused_rnn(*r.args)), reproduce(seed)


def test_backward_deterministic_and_layout_independent(seed):
    """Two backward calls give the same bits; so do strided Wx, R (rows D + 8 apart), b, a
    transposed R (copied by the launcher) and a non-contiguous upstream gradient."""
    r = make_rnn(seed, "slstm", 5, 5, 2, 16, torch.bfloat16)
    dy = upstream(seed, r)
    y, grads = gradients(fused_rnn, r, dy)
    _, again = gradients(fused_rnn, r, dy)
    assert bitwise_equal(grads, again), f"two backward runs differ; {reproduce(seed)}"
    Wx = r.Wx.permute(0, 2, 3, 1, 4).contiguous().permute(0, 3, 1, 2, 4)
    R = torch.cat([r.R, torch.zeros_like(r.R[..., :8])], dim=-1)[..., :16]
    b = torch.cat([r.b, torch.zeros_like(r.b)], dim=-1)[..., :16]
    R_t = r.R.transpose(-1, -2).contiguous().transpose(-1, -2)
    dy_t = dy.transpose(0, 1).contiguous().transpose(0, 1)
    for label, args, upstream_grad in (("strided", (Wx, R, b), dy), ("transposed R", (r.Wx, R_t, r.b), dy_t)):
        leaves = [t.detach().requires_grad_(True) for t in args]  # detach keeps the strides
        fused_rnn(r.cell, *leaves).backward(upstream_grad)
        assert bitwise_equal([leaf.grad for leaf in leaves], grads), f"{label}: gradients differ; {reproduce(seed)}"


@pytest.mark.parametrize("cell", ["lstm", "gru", "slstm"])
def test_every_gradient_element_written(seed, cell):
    """With every torch.empty* NaN-filled (the saved buffers, dWx, the recurrent gradients),
    no NaN reaches a gradient: a batch one row into its second program, three heads."""
    r = make_rnn(seed, cell, 17, 3, 3, 16, torch.float16)
    with poisoned_allocations():
        _, grads = gradients(fused_rnn, r, upstream(seed, r))
    for name, g in zip(("dWx", "dR", "db"), grads):
        assert not g.isnan().any(), f"{name}: {int(g.isnan().sum())} NaN elements; {reproduce(seed)}"


def test_no_saved_buffers_without_grad_mode(monkeypatch):
    """Under torch.no_grad() no gradient can be wanted, so the forward should not write its
    float32 saved buffers ([B, T, 4, H, D] + [B, T, 3, H, D], 14x y's bytes in bf16), even when
    the inputs require grad (weights as nn.Parameters in inference)."""
    saves = []
    original = trf.forward

    def spy(cell, Wx, R, b, save):
        saves.append(save)
        return original(cell, Wx, R, b, save)

    monkeypatch.setattr(trf, "forward", spy)
    r = make_rnn(0, "lstm", 2, 2, 1, 16, torch.float32)
    leaves = [t.clone().requires_grad_(True) for t in (r.Wx, r.R, r.b)]
    with torch.no_grad():
        fused_rnn(r.cell, *leaves)
    assert saves == [False], f"the forward saved for backward under no_grad: save={saves}"


def test_only_some_inputs_need_gradients(seed):
    """Only Wx needs a gradient: it is the one the full backward gives, and R, b get none."""
    r = make_rnn(seed, "lstm", 5, 5, 2, 16, torch.float32)
    dy = upstream(seed, r)
    _, grads = gradients(fused_rnn, r, dy)
    Wx = r.Wx.clone().requires_grad_(True)
    fused_rnn(r.cell, Wx, r.R, r.b).backward(dy)
    assert torch.equal(Wx.grad, grads[0]), reproduce(seed)


def test_rule_rejects_wrong_gradients(seed):
    """dR with each block transposed, and gradients for an upstream gradient missing its
    last step, fail the check the right gradients pass."""
    r = make_rnn(seed, "gru", 5, 7, 2, 16, torch.bfloat16)
    dy = upstream(seed, r)
    want = true_gradients(r, dy)
    _, grads = gradients(fused_rnn, r, dy)
    assert all(ok for _, ok, _ in grad_verdicts(grads, r, dy, want)), f"the right gradients fail; {reproduce(seed)}"
    transposed = (grads[0], grads[1].transpose(-1, -2), grads[2])
    verdicts = {name: (ok, line) for name, ok, line in grad_verdicts(transposed, r, dy, want)}
    assert not verdicts["dR"][0], f"transposed dR passed ({verdicts['dR'][1]}); {reproduce(seed)}"
    short = dy.clone()
    short[:, -1] = 0
    _, wrong = gradients(fused_rnn, r, short)
    failed = [name for name, ok, _ in grad_verdicts(wrong, r, dy, want) if not ok]
    assert failed == ["dWx", "dR", "db"], f"only {failed} caught the missing last step; {reproduce(seed)}"
    with pytest.raises(AssertionError, match="outside the tolerance rule"):
        assert_grads_rule(wrong, r, dy, "missing last step", want)


@pytest.mark.parametrize("cell", ["lstm", "gru", "slstm"])
def test_launch_shapes_change_nothing(seed, cell, monkeypatch):
    """R kept on chip or re-read each step, inputs loaded a step ahead or not: the same y and
    gradients, bitwise. The launch shape is a speed choice only."""
    r = make_rnn(seed, cell, 17, 5, 2, 16, torch.bfloat16)
    dy = upstream(seed, r)
    results = {}
    for config in (trf.RnnConfig(hoist_r=False, prefetch=False), trf.RnnConfig(hoist_r=False, prefetch=True),
                   trf.RnnConfig(hoist_r=True, prefetch=True)):
        monkeypatch.setitem(trf.CONFIGS, "interpreter", config)
        monkeypatch.setitem(trb.CONFIGS, "interpreter", config)
        results[config] = gradients(fused_rnn, r, dy)
    (base, (y0, g0)), *others = results.items()
    for config, (y1, g1) in others:
        assert torch.equal(y0, y1), f"y differs between {base} and {config}; {describe(r)}; {reproduce(seed)}"
        for name, a, b in zip(("dWx", "dR", "db"), g0, g1):
            assert torch.equal(a, b), f"{name} differs between {base} and {config}; {describe(r)}; {reproduce(seed)}"
