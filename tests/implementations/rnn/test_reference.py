"""The plain-PyTorch reference (implementations/rnn/reference.py): it is the truth every kernel
is judged by (in float64) and the yardstick of the tolerance rule (at the kernel's dtype), so
it is checked against an independent float64 computation (_support.truth: one sequence and
head at a time in NumPy, sLSTM's first step by hand), for its block-diagonal heads, for
sLSTM's stabilizer under huge gate pre-activations, and for its autograd backward."""

from __future__ import annotations

import pytest
import torch

from implementations.rnn import reference
from tests.implementations.rnn._support import GATES, describe, make_rnn, truth
from tests.implementations.shared import reproduce

F64 = dict(rtol=1e-10, atol=1e-12)
CELLS = ("lstm", "gru", "slstm")


def test_cells_and_gate_counts():
    assert reference.CELLS == CELLS
    assert reference.GATES == GATES


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B,T,H,D", [(3, 9, 3, 5), (1, 1, 2, 4), (2, 13, 4, 8)], ids=["H3-T9", "T1", "H4-T13"])
def test_matches_independent_float64(seed, cell, B, T, H, D):
    """Several heads, odd T (one step: the closed form of a cell from zero state)."""
    r = make_rnn(seed, cell, B, T, H, D, torch.float64)
    got = reference.rnn(*r.args)
    assert got.dtype == torch.float64 and tuple(got.shape) == r.out_shape
    torch.testing.assert_close(got, truth(r), **F64, msg=lambda m: f"{m}\n{describe(r)}; {reproduce(seed)}")


@pytest.mark.parametrize("cell", CELLS)
def test_strong_recurrence_matches_the_truth(seed, cell):
    """R four times larger than make_inputs draws it: the recurrent term dominates, so a
    transposed R block or a wrong head's block would show."""
    r = make_rnn(seed, cell, 2, 11, 3, 6, torch.float64, r_scale=4.0 / 6 ** 0.5, b_scale=1.0)
    torch.testing.assert_close(reference.rnn(*r.args), truth(r), **F64, msg=lambda m: f"{m}\n{reproduce(seed)}")


@pytest.mark.parametrize("cell", CELLS)
def test_heads_are_block_diagonal(seed, cell):
    """Changing head 1's recurrent block and bias leaves head 0's (and head 2's) output
    bitwise unchanged, and does change head 1's."""
    r = make_rnn(seed, cell, 2, 7, 3, 8, torch.float64)
    R, b = r.R.clone(), r.b.clone()
    R[:, 1] = torch.randn_like(R[:, 1])
    b[:, 1] += 1.0
    before, after = reference.rnn(*r.args), reference.rnn(cell, r.Wx, R, b)
    assert torch.equal(before[:, :, 0], after[:, :, 0]), f"head 0 saw head 1's weights; {reproduce(seed)}"
    assert torch.equal(before[:, :, 2], after[:, :, 2]), f"head 2 saw head 1's weights; {reproduce(seed)}"
    assert not torch.allclose(before[:, :, 1], after[:, :, 1]), "head 1's weights made no difference"


def test_sequences_are_independent(seed):
    """Each sequence of the batch is its own recurrence: the batch equals its rows run alone."""
    r = make_rnn(seed, "slstm", 3, 7, 2, 8, torch.float64)
    together = reference.rnn(*r.args)
    for s in range(3):
        alone = reference.rnn(r.cell, r.Wx[s:s + 1], r.R, r.b)
        torch.testing.assert_close(alone, together[s:s + 1], **F64)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_slstm_stays_finite_for_huge_gate_preactivations(seed, dtype):
    """Wx x 50 puts the gate pre-activations in the hundreds: e^i overflows float32 (and
    float16) where a naive exponential gate is used, but the stabilized cell stays finite,
    and (in float64 and float32) matches the stabilized truth."""
    r = make_rnn(seed, "slstm", 2, 9, 2, 8, torch.float32, wx_scale=50.0)
    assert torch.isinf(torch.exp(r.Wx[:, :, 0].float())).any(), "the test's inputs would not overflow a naive exp"
    r = r.to(dtype)
    got = reference.rnn(*r.args)
    assert torch.isfinite(got).all(), f"{int((~torch.isfinite(got)).sum())} non-finite outputs at {dtype}; {reproduce(seed)}"
    assert got.abs().max() <= 1.0 + 1e-2, "|y| = |sigmoid(o) c / n| is at most 1 (c / n averages tanh values)"
    if dtype in (torch.float64, torch.float32):
        want = truth(r)
        tol = F64 if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got.double(), want, **tol, msg=lambda m: f"{m}\n{reproduce(seed)}")


def test_slstm_first_step_by_hand():
    """One step from zero state: y = sigmoid(o) tanh(z) whatever i and f are (i' / n = 1)."""
    Wx = torch.tensor([[[[[300.0]], [[-40.0]], [[0.5]], [[1.0]]]]], dtype=torch.float64)  # [1, 1, 4, 1, 1]
    R, b = torch.zeros(4, 1, 1, 1, dtype=torch.float64), torch.zeros(4, 1, 1, dtype=torch.float64)
    got = reference.rnn("slstm", Wx, R, b)
    want = torch.sigmoid(torch.tensor(1.0, dtype=torch.float64)) * torch.tanh(torch.tensor(0.5, dtype=torch.float64))
    torch.testing.assert_close(got.flatten(), want.reshape(1), **F64)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("cell", CELLS)
def test_low_precision_keeps_dtype_and_is_close(seed, cell, dtype):
    """The yardstick at a kernel's dtype: that dtype out, and near the truth."""
    r = make_rnn(seed, cell, 3, 21, 2, 16, dtype)
    got = reference.rnn(*r.args)
    want = truth(r)
    rel = ((got.double() - want).norm() / want.norm()).item()
    tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 6e-2}[dtype]
    assert got.dtype == dtype and rel < tol, f"relative error {rel:.3e}, {describe(r)}; {reproduce(seed)}"


@pytest.mark.parametrize("cell", CELLS)
def test_backward_matches_finite_differences(seed, cell):
    """Autograd through the per-step loop (the reference's backward, what fwd+bwd rows time)
    against central differences, in float64 on a tiny case with two heads."""
    r = make_rnn(seed, cell, 2, 3, 2, 3, torch.float64, r_scale=0.8, b_scale=0.5)
    inputs = tuple(t.clone().requires_grad_(True) for t in (r.Wx, r.R, r.b))
    assert torch.autograd.gradcheck(lambda Wx, R, b: reference.rnn(cell, Wx, R, b), inputs, eps=1e-6, atol=1e-6,
                                    rtol=1e-5), reproduce(seed)


def test_slstm_backward_is_finite_for_huge_preactivations(seed):
    """The stabilizer's -inf start and saturated gates leave no NaN or inf in the gradients."""
    r = make_rnn(seed, "slstm", 2, 5, 2, 4, torch.float64, wx_scale=50.0)
    inputs = [t.clone().requires_grad_(True) for t in (r.Wx, r.R, r.b)]
    reference.rnn("slstm", *inputs).sum().backward()
    for name, t in zip(("Wx", "R", "b"), inputs):
        assert torch.isfinite(t.grad).all(), f"d{name} not finite; {reproduce(seed)}"


@pytest.mark.parametrize("cell,shapes,match", [
    ("rnn", ((1, 2, 4, 1, 8), (4, 1, 8, 8), (4, 1, 8)), r"unknown cell 'rnn' \(accepted: lstm, gru, slstm\)"),
    ("gru", ((1, 2, 4, 1, 8), (4, 1, 8, 8), (4, 1, 8)), r"gru takes Wx \[B, T, 3, H, D\]"),
    ("lstm", ((1, 2, 4, 2, 8), (4, 1, 8, 8), (4, 2, 8)), r"lstm takes Wx"),
    ("slstm", ((1, 2, 4, 1, 8), (4, 1, 8, 8), (4, 1, 4)), r"slstm takes Wx"),
], ids=["unknown-cell", "gate-count", "R-heads", "b-size"])
def test_bad_inputs_raise_value_error(cell, shapes, match):
    Wx, R, b = (torch.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        reference.rnn(cell, Wx, R, b)
