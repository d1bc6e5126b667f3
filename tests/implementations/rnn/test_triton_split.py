"""The split recurrence (implementations/rnn/triton_rnn_split.py): each head's hidden units
spread over programs that meet at a barrier every step, for heads too big for one program.
Checked in the interpreter (one program a group walks every column tile) against the
independent float64 truth with the harness's rule; the launcher's refusals without a launch.
Head sizes are multiples of the 64-unit reduction chunk: 64 (one chunk), 128 and 192 (a size
no power of two, three chunks)."""

from __future__ import annotations

import pytest
import torch

from harness import registry
from harness.cases import Case
from harness.errors import Unsupported
from implementations.rnn import triton_rnn_split as trs
from implementations.rnn.triton_rnn import split_rnn
from tests.implementations.rnn._support import assert_rule, describe, make_rnn, rule_verdict, truth
from tests.implementations.shared import reproduce

pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")

CASES = [  # cell, dtype, B, T, H, D
    ("lstm", torch.bfloat16, 17, 4, 1, 192),
    ("gru", torch.bfloat16, 3, 5, 2, 128),
    ("slstm", torch.bfloat16, 1, 3, 1, 192),
    ("lstm", torch.float32, 2, 6, 2, 64),
    ("gru", torch.float16, 17, 2, 1, 64),
    ("slstm", torch.float32, 5, 4, 2, 128),
    ("slstm", torch.float16, 2, 1, 1, 64),
]


@pytest.mark.parametrize("cell,dtype,B,T,H,D", CASES,
                         ids=[f"{c}-{str(d)[6:]}-B{B}-T{T}-H{H}-D{D}" for c, d, B, T, H, D in CASES])
def test_split_within_rule(seed, cell, dtype, B, T, H, D):
    r = make_rnn(seed, cell, B, T, H, D, dtype)
    assert_rule(split_rnn(*r.args), r, f"{describe(r)}; {reproduce(seed)}")


def test_split_matches_the_fused_kernel_closely(seed):
    """Where both run (D = 64), the two kernels do the same math in a different summation
    order: their outputs agree to float32 rounding in fp32."""
    from implementations.rnn.triton_rnn import fused_rnn

    r = make_rnn(seed, "slstm", 5, 6, 2, 64, torch.float32)
    torch.testing.assert_close(split_rnn(*r.args), fused_rnn(*r.args), rtol=1e-5, atol=1e-6,
                               msg=lambda m: f"{m}\n{reproduce(seed)}")


def test_rule_rejects_a_split_kernel_that_reads_a_stale_step(seed):
    """Must fail: a kernel whose programs read y two steps back instead of one (what a
    missing barrier would let through) is outside the rule."""
    r = make_rnn(seed, "lstm", 3, 6, 1, 64, torch.float32)
    good = split_rnn(*r.args)
    stale = torch.cat([torch.zeros_like(good[:, :1]), good[:, :-1]], dim=1)  # y_t replaced by y_{t-1}
    ok, line = rule_verdict(stale, r, truth(r))
    assert not ok, f"a time-shifted output passed the rule: {line}"


def test_head_size_not_a_multiple_of_the_chunk_is_refused():
    r = make_rnn(0, "lstm", 2, 2, 1, 48, torch.float32)
    with pytest.raises(ValueError, match=r"^head size 48 is not a multiple of 64 \(the split kernel's reduction chunk\)$"):
        split_rnn(*r.args)


def test_a_grid_that_cannot_be_resident_is_refused_before_launch(monkeypatch):
    """On a GPU every program must be resident for the step barrier to open."""
    monkeypatch.setattr(trs, "architecture", lambda: "sm90")
    monkeypatch.setattr(trs, "_split_forward_kernel", None)  # a launch would raise TypeError
    r = make_rnn(0, "gru", 33, 2, 2, 128, torch.bfloat16)
    assert trs.grid_programs(33, 2, 128) == 3 * 2 * 8
    with pytest.raises(ValueError, match=r"^48 programs \(B=33, H=2, D=128\) cannot all be resident on 40 SMs"):
        trs.split_forward("gru", *r.args[1:], sm_count=40)


def test_registered_forward_only_and_refusing_oversized_grids(monkeypatch):
    registry.load_all()
    tech = registry.technique("rnn")
    impl = {i.name: i for i in registry.implementations("rnn")}["triton-split"]
    case = Case.of(cell="lstm", B=16, T=1024, H=1, D=768)
    assert impl.role == "triton" and impl.why_not(tech, case, torch.bfloat16, "fwd") is None
    assert impl.why_not(tech, case, torch.bfloat16, "fwd+bwd") == "triton-split has no backward pass"
    assert impl.unsupported(Case.of(cell="gru", B=16, T=8, H=1, D=100), torch.bfloat16).startswith("head size 100")
    import implementations.rnn as rnn_package

    monkeypatch.setattr(rnn_package, "architecture", lambda: "sm90")
    monkeypatch.setattr(rnn_package, "sm_count", lambda device: 132)
    big = Case.of(cell="lstm", B=64, T=8, H=1, D=768)  # 4 batch blocks x 48 column tiles
    z = torch.zeros(1)
    with pytest.raises(Unsupported, match=r"needs its 192 programs resident at once; this GPU has 132 SMs"):
        rnn_package.build_triton_split(big, z, z, z)
