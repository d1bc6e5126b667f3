"""The fused Triton recurrence's forward (implementations/rnn/triton_rnn_forward.py, through
fused_rnn in triton_rnn.py), run in Triton's interpreter against the independent float64
truth (_support.truth) under the harness's rule; the backward is test_triton_backward.py's.

The interpreter's tiling is BLOCK_B = 16 sequences a program. Batch sizes below are one
sequence (1), a partial block (5), and one past a block boundary (17 = 16 + 1, 33 = 32 + 1:
two and three programs, the last nearly empty); time steps are one (the cell from zero
state), a few (7) and enough for the recurrence to matter (33), plus long fp32 runs (300
forward, 64 backward). Each program-step costs the interpreter about 12 ms whatever D is, so
the forward grid is a pairwise covering array, cheapest-first among equally good cases.

"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from harness.correctness import ErrorStats, bitwise_equal, poisoned_allocations
from implementations.rnn import reference
from implementations.rnn import triton_rnn as tr
from implementations.rnn import triton_rnn_forward as trf
from implementations.rnn.triton_rnn import fused_rnn
from tests.implementations.rnn._support import GATES, assert_rule, describe, make_rnn, rule_verdict, truth
from tests.implementations.shared import pairwise_cases, reproduce, stub_kernel, uncovered_pairs

# NumPy's overflow warnings from the interpreter are expected: tl.sigmoid is 1 / (1 + e^-x),
# and e^-x overflows to inf (giving the right 0) for saturated gates.
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")

BLOCK_B = trf.CONFIGS["interpreter"].block_b

CELLS = {"lstm": "lstm", "gru": "gru", "slstm": "slstm"}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
HEAD_DIMS = {"D16": 16, "D32": 32, "D64": 64}
STEPS = {"T1": 1, "T7": 7, "T33": 33}
BATCHES = {"B1": 1, "B5": 5, "B17": 17, "B33": 33}
HEADS = {"H1": 1, "H3": 3}
AXES = {"cell": CELLS, "dtype": DTYPES, "D": HEAD_DIMS, "T": STEPS, "B": BATCHES, "H": HEADS}


def _cost(c: dict[str, str]) -> int:
    """Program-steps the interpreter runs: programs (batch blocks x heads) times steps."""
    return math.ceil(BATCHES[c["B"]] / 16) * HEADS[c["H"]] * STEPS[c["T"]]


CASES = pairwise_cases(AXES, cost=_cost)  # the cheapest of the equally covering cases


def _case_id(c) -> str:
    return "-".join(c[a] for a in AXES)


def _case_inputs(seed: int, c: dict[str, str]):
    return make_rnn(seed, c["cell"], BATCHES[c["B"]], STEPS[c["T"]], HEADS[c["H"]], HEAD_DIMS[c["D"]], DTYPES[c["dtype"]])


def test_interpreter_block_is_16_sequences():
    assert BLOCK_B == 16, "the batch sizes in this file are chosen around 16-sequence programs"


def test_case_list_is_pairwise():
    assert not uncovered_pairs(CASES, AXES), f"value pairs never tested: {uncovered_pairs(CASES, AXES)}"
    assert len(CASES) <= 16, f"{len(CASES)} cases: the greedy covering array grew"
    assert sum(map(_cost, CASES)) <= 600, f"{sum(map(_cost, CASES))} program-steps: the grid got slow"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_within_rule(seed, case):
    """Every cell, dtype, head size 16..64, T 1/7/33, batches around the 16-row block, one or
    three heads (pairwise): within the rule."""
    r = _case_inputs(seed, case)
    out = fused_rnn(*r.args)
    assert_rule(out, r, f"{describe(r)}; {reproduce(seed)}")


@pytest.mark.parametrize("cell,dtype", [("lstm", torch.bfloat16), ("gru", torch.float32), ("slstm", torch.float16)],
                         ids=["lstm-bf16", "gru-fp32", "slstm-fp16"])
def test_head_size_128(seed, cell, dtype):
    """The largest head a program holds (a 128 x 128 block per gate), kept tiny in B and T."""
    r = make_rnn(seed, cell, 3, 3, 2, 128, dtype)
    assert_rule(fused_rnn(*r.args), r, f"{describe(r)}; {reproduce(seed)}")


@pytest.mark.parametrize("cell", ["lstm", "gru", "slstm"])
def test_long_sequence_fp32_error_does_not_grow(seed, cell):
    """300 steps in float32: within the rule overall, and the last 30 steps judged alone
    are within it too (an error compounding along the sequence would fail there first)."""
    r = make_rnn(seed, cell, 3, 300, 1, 16, torch.float32)
    out, want = fused_rnn(*r.args), truth(r)
    context = f"{describe(r)}; {reproduce(seed)}"
    assert_rule(out, r, context, want)
    assert_rule(out, r, f"the last 30 steps, {context}", want, steps=slice(-30, None))
    # The rule's floor (1e-5) is ~100x float32's error, so also without it: the kernel's error
    # over the last 30 steps stays within 5x the reference's (about 2x is typical: tanh is
    # 2 sigmoid(2x) - 1 in the kernel).
    late, ref = out[:, -30:], reference.rnn(*r.args)[:, -30:]
    err, ref_err = ErrorStats.between(late, want[:, -30:]), ErrorStats.between(ref, want[:, -30:])
    assert err.rel_err <= 5 * ref_err.rel_err, \
        f"last 30 steps: rel_err {err.rel_err:.3e} vs reference {ref_err.rel_err:.3e}; {context}"


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
def test_slstm_huge_gate_preactivations(seed, dtype):
    """Wx x 50: pre-activations in the hundreds, where e^i overflows. The stabilizer keeps
    every output finite, and the result is within the rule."""
    r = make_rnn(seed, "slstm", 5, 7, 2, 16, dtype, wx_scale=50.0)
    out = fused_rnn(*r.args)
    assert torch.isfinite(out).all(), f"{int((~torch.isfinite(out)).sum())} non-finite outputs; {reproduce(seed)}"
    assert_rule(out, r, f"Wx x 50, {describe(r)}; {reproduce(seed)}")


@pytest.mark.parametrize("cell", ["lstm", "gru", "slstm"])
def test_strong_recurrence(seed, cell):
    """R drawn 3x larger and a unit bias: the recurrent product dominates each gate (a
    transposed R block or another head's block would be far outside the rule)."""
    r = make_rnn(seed, cell, 17, 9, 2, 32, torch.bfloat16, r_scale=3.0 / math.sqrt(32), b_scale=1.0)
    assert_rule(fused_rnn(*r.args), r, f"strong R, {describe(r)}; {reproduce(seed)}")


# --- structure: heads, strides, determinism, coverage of the output ------------------------------


def test_heads_are_independent(seed):
    """Changing head 1's recurrent block and bias leaves heads 0 and 2 bitwise unchanged."""
    r = make_rnn(seed, "lstm", 5, 5, 3, 16, torch.float16)
    R, b = r.R.clone(), r.b.clone()
    R[:, 1] = torch.randn_like(R[:, 1].float()).to(R.dtype)
    b[:, 1] += 1.0
    before, after = fused_rnn(*r.args), fused_rnn(r.cell, r.Wx, R, b)
    assert torch.equal(before[:, :, 0], after[:, :, 0]) and torch.equal(before[:, :, 2], after[:, :, 2]), \
        f"head 0 or 2 saw head 1's weights; {reproduce(seed)}"
    assert not torch.equal(before[:, :, 1], after[:, :, 1]), "head 1's weights made no difference"


def test_strided_views_match_contiguous(seed):
    """Wx a permuted [B, G, H, T, D] tensor, R blocks sliced out of wider rows (stride D + 8
    between rows), b sliced from a wider tensor, and R as a transposed view (last stride
    not 1, which the launcher copies): bitwise the contiguous result."""
    r = make_rnn(seed, "gru", 17, 5, 2, 16, torch.bfloat16)
    Wx = r.Wx.permute(0, 2, 3, 1, 4).contiguous().permute(0, 3, 1, 2, 4)
    R = torch.cat([r.R, torch.zeros_like(r.R[..., :8])], dim=-1)[..., :16]
    b = torch.cat([r.b, torch.zeros_like(r.b)], dim=-1)[..., :16]
    assert not any(t.is_contiguous() for t in (Wx, R, b)) and torch.equal(Wx, r.Wx) and torch.equal(R, r.R)
    want = fused_rnn(*r.args)
    assert torch.equal(fused_rnn("gru", Wx, R, b), want), f"strided views differ; {reproduce(seed)}"
    R_t = r.R.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert R_t.stride(-1) != 1
    assert torch.equal(fused_rnn("gru", r.Wx, R_t, r.b), want), f"transposed R differs; {reproduce(seed)}"


def test_deterministic(seed):
    """Two calls give the same bits (two programs along the batch, two heads)."""
    r = make_rnn(seed, "slstm", 17, 7, 2, 32, torch.bfloat16)
    assert bitwise_equal([fused_rnn(*r.args)], [fused_rnn(*r.args)]), f"two runs differ; {reproduce(seed)}"


@pytest.mark.parametrize("cell", ["lstm", "gru", "slstm"])
def test_every_output_element_written(seed, cell):
    """With every torch.empty* NaN-filled, no NaN survives: every (sequence, step, head)
    of a batch ending one row into its second program is written."""
    r = make_rnn(seed, cell, 17, 3, 3, 16, torch.float16)
    with poisoned_allocations():
        assert torch.empty(4).isnan().all(), "poisoned_allocations() did not poison torch.empty"
        out = fused_rnn(*r.args)
    assert not out.isnan().any(), f"{int(out.isnan().sum())} elements never written; {reproduce(seed)}"


def test_zero_steps_gives_an_empty_output():
    r = make_rnn(0, "lstm", 3, 0, 2, 16, torch.float32)
    out = fused_rnn(*r.args)
    assert out.shape == (3, 0, 2, 16) and out.dtype == torch.float32


# --- the checks can fail ------------------------------------------------------------------------


def _swap_gates(r, g0: int, g1: int):
    order = list(range(GATES[r.cell]))
    order[g0], order[g1] = g1, g0
    return r.with_(Wx=r.Wx[:, :, order], R=r.R[order], b=r.b[order])


@pytest.mark.parametrize("cell,dtype,wrong", [
    ("lstm", torch.bfloat16, "swap-i-f"), ("gru", torch.float16, "swap-r-u"), ("slstm", torch.float32, "swap-z-o"),
    ("lstm", torch.float32, "no-bias"), ("gru", torch.bfloat16, "no-bias"), ("slstm", torch.float16, "no-bias"),
])
def test_rule_rejects_a_wrong_variant(seed, cell, dtype, wrong):
    """The kernel handed swapped gates or no bias fails the check the right call passes."""
    r = make_rnn(seed, cell, 5, 7, 2, 16, dtype)
    want = truth(r)
    right = fused_rnn(*r.args)
    assert rule_verdict(right, r, want)[0], f"the right call fails; {reproduce(seed)}"
    if wrong == "no-bias":
        bad = r.with_(b=torch.zeros_like(r.b))
    else:
        bad = _swap_gates(r, *{"swap-i-f": (0, 1), "swap-r-u": (0, 1), "swap-z-o": (2, 3)}[wrong])
    out = fused_rnn(*bad.args)
    ok, line = rule_verdict(out, r, want)
    assert not ok, f"{wrong} passed ({line}); {reproduce(seed)}"
    with pytest.raises(AssertionError, match="outside the tolerance rule"):
        assert_rule(out, r, wrong, want)


def test_rule_rejects_a_result_one_step_late(seed):
    """y shifted one step in time (the state stored before the update) is rejected."""
    r = make_rnn(seed, "lstm", 5, 9, 1, 16, torch.bfloat16)
    out = fused_rnn(*r.args)
    late = torch.cat([torch.zeros_like(out[:, :1]), out[:, :-1]], dim=1)
    assert not rule_verdict(late, r)[0], reproduce(seed)


# --- bad inputs -----------------------------------------------------------------------------------


@pytest.fixture
def no_launch(monkeypatch):
    """The kernel replaced by a stub that launches nothing, so an unvalidated input that
    would read out of bounds never runs."""
    return stub_kernel(monkeypatch, trf, "_forward_kernel")


def _z(*shape, dtype=torch.float16):
    return torch.zeros(*shape, dtype=dtype)


@pytest.mark.parametrize("D", [48, 256, 8, 24, 1])
def test_unsupported_head_size(no_launch, D):
    with pytest.raises(ValueError, match=rf"head size {D} is not supported \(accepted: 16, 32, 64, 128"):
        fused_rnn("lstm", _z(2, 3, 4, 1, D), _z(4, 1, D, D), _z(4, 1, D))
    assert tr.unsupported_reason("lstm", D, torch.float16).startswith(f"head size {D} is not supported")
    assert not no_launch


@pytest.mark.parametrize("dtype", [torch.float64, torch.int32, torch.float8_e4m3fn], ids=["fp64", "int32", "fp8"])
def test_unsupported_dtype(no_launch, dtype):
    with pytest.raises(ValueError, match=r"is not supported \(accepted: bfloat16, float16, float32\)"):
        fused_rnn("gru", _z(2, 3, 3, 1, 16, dtype=dtype), _z(3, 1, 16, 16, dtype=dtype), _z(3, 1, 16, dtype=dtype))
    assert not no_launch


def test_supported_combinations_have_no_reason():
    for cell, D, dtype in itertools.product(("lstm", "gru", "slstm"), (16, 32, 64, 128), DTYPES.values()):
        assert tr.unsupported_reason(cell, D, dtype) is None, (cell, D, dtype)


@pytest.mark.parametrize("cell,shapes,match", [
    pytest.param("rnn", ((2, 3, 4, 1, 16), (4, 1, 16, 16), (4, 1, 16)), r"unknown cell 'rnn' \(accepted: lstm, gru, slstm\)",
                 id="unknown-cell"),
    pytest.param("lstm", ((2, 3, 3, 1, 16), (3, 1, 16, 16), (3, 1, 16)), r"lstm takes Wx \[B, T, 4, H, D\]",
                 id="lstm-with-3-gates"),
    pytest.param("gru", ((2, 3, 4, 1, 16), (4, 1, 16, 16), (4, 1, 16)), r"gru takes Wx \[B, T, 3, H, D\]",
                 id="gru-with-4-gates"),
    pytest.param("slstm", ((2, 3, 4, 2, 16), (4, 1, 16, 16), (4, 2, 16)), r"slstm takes", id="R-fewer-heads"),
    pytest.param("lstm", ((2, 3, 4, 2, 16), (4, 2, 16, 16), (4, 1, 16)), r"lstm takes", id="b-fewer-heads"),
    pytest.param("lstm", ((2, 3, 4, 1, 16), (4, 1, 32, 32), (4, 1, 32)), r"lstm takes", id="R-other-head-size"),
    pytest.param("gru", ((2, 3, 3, 1, 16), (3, 1, 16, 16), (4, 1, 16)), r"gru takes", id="b-other-gates"),
    pytest.param("gru", ((2, 3, 3, 1, 16), (3, 1, 16, 16, 1), (3, 1, 16)), r"gru takes", id="R-5d"),
    pytest.param("lstm", ((2, 3, 4, 16), (4, 1, 16, 16), (4, 1, 16)), r"expected Wx \[B, T, G, H, D\]", id="Wx-4d"),
])
def test_bad_shapes_raise_value_error(no_launch, cell, shapes, match):
    Wx, R, b = (_z(*s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        fused_rnn(cell, Wx, R, b)
    assert not no_launch


@pytest.mark.parametrize("dtypes", [(torch.float16, torch.bfloat16, torch.float16),
                                    (torch.float32, torch.float32, torch.float16),
                                    (torch.bfloat16, torch.float32, torch.float32)],
                         ids=["R-bf16", "b-fp16", "Wx-bf16"])
def test_mixed_dtypes_raise_value_error(no_launch, dtypes):
    Wx, R, b = _z(2, 3, 4, 1, 16, dtype=dtypes[0]), _z(4, 1, 16, 16, dtype=dtypes[1]), _z(4, 1, 16, dtype=dtypes[2])
    with pytest.raises(ValueError, match=r"Wx, R, b must share a dtype"):
        fused_rnn("slstm", Wx, R, b)
    assert not no_launch


def test_a_good_call_launches_one_program_per_batch_block_and_head(no_launch):
    """The grid: ceil(B / BLOCK_B) programs along the batch, one per head."""
    fused_rnn("lstm", _z(33, 2, 4, 3, 16), _z(4, 3, 16, 16), _z(4, 3, 16))
    assert no_launch == [(3, 3)]


@pytest.mark.parametrize("dtype,dim,gates,hoisted", [(torch.bfloat16, 128, 4, True), (torch.float32, 128, 4, False),
                                                     (torch.float32, 64, 4, True), (torch.float32, 128, 3, False)])
def test_r_is_kept_on_chip_only_where_it_fits(monkeypatch, dtype, dim, gates, hoisted):
    """4 gates of float32 128 x 128 blocks (256 KiB) cannot stay in one SM's shared memory:
    those launches re-read R each step, with one stage."""
    monkeypatch.setitem(trf.CONFIGS, "interpreter", trf.RnnConfig(16, 8, 2, True))
    config = trf.launch_config(trf.CONFIGS, torch.empty(gates, 2, dim, dim, dtype=dtype))
    assert config.hoist_r is hoisted
    assert config == (trf.RnnConfig(16, 8, 2, True) if hoisted else trf.RnnConfig(16, 8, 1, False))
