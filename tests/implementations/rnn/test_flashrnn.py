"""The flashrnn adapter (implementations/rnn/peers.py): flashrnn's layout (R as [G, H, D_out,
D_in], GRU's gates reordered and its bias split in four) checked against flashrnn itself.
flashrnn ships a pure-PyTorch backend ("vanilla") that runs on the CPU with the same
interface as its triton and cuda backends, so the layout is checked there in float64 against
the independent NumPy truth; the GPU backends are checked by the harness on a GPU run."""

from __future__ import annotations

import pytest
import torch

from harness import registry
from harness.cases import Case
from implementations.rnn import peers
from tests.implementations.rnn._support import gradients, make_rnn, true_gradients, truth, upstream
from tests.implementations.shared import reproduce

flashrnn = pytest.importorskip("flashrnn", reason="flashrnn is a test dependency: pip install -e '.[test]'")
F64 = dict(rtol=1e-10, atol=1e-12)


def _vanilla(cell: str, Wx: torch.Tensor, R: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    R_, b_ = peers.flashrnn_arguments(cell, R, b)
    states, _ = flashrnn.flashrnn(Wx, R_, b_, function=cell, backend="vanilla", dtype="float64")
    return states[0]


@pytest.mark.parametrize("cell", ["lstm", "gru", "slstm"])
@pytest.mark.parametrize("B,T,H,D", [(2, 7, 3, 5), (1, 1, 1, 4), (3, 12, 2, 16)], ids=["B2-T7-H3-D5", "B1-T1", "B3-T12-H2-D16"])
def test_flashrnn_layout_matches_the_truth(seed, cell, B, T, H, D):
    r = make_rnn(seed, cell, B, T, H, D, torch.float64, b_scale=1.0)  # a large bias, so the GRU's bias split matters
    torch.testing.assert_close(_vanilla(cell, r.Wx, r.R, r.b), truth(r), **F64,
                               msg=lambda m: f"{m}\n{cell}, B={B}, T={T}, H={H}, D={D}; {reproduce(seed)}")


@pytest.mark.parametrize("cell", ["lstm", "gru", "slstm"])
def test_gradients_reach_our_layout(seed, cell):
    """The adapter's reordering is differentiable: dR and db arrive in reference.py's layout."""
    r = make_rnn(seed, cell, 2, 6, 2, 4, torch.float64, b_scale=1.0)
    dy = upstream(seed, r)
    _, got = gradients(_vanilla, r, dy)
    for name, g, want in zip(("dWx", "dR", "db"), got, true_gradients(r, dy)):
        torch.testing.assert_close(g, want, **F64, msg=lambda m: f"{m}\n{name} of {cell}; {reproduce(seed)}")


def test_backends_and_their_refusals():
    registry.load_all()
    tech = registry.technique("rnn")
    impls = {impl.name: impl for impl in registry.implementations("rnn")}
    assert {"flashrnn-triton", "flashrnn-cuda-fused", "flashrnn-cuda"} <= set(impls)
    gru = Case.of(cell="gru", B=16, T=64, H=4, D=64)
    assert impls["flashrnn-triton"].why_not(tech, gru, torch.bfloat16, "fwd") == "flashrnn-triton does not support gru"
    assert impls["flashrnn-cuda"].why_not(tech, gru, torch.bfloat16, "fwd") is None
    odd = Case.of(cell="slstm", B=16, T=64, H=4, D=48)
    assert impls["flashrnn-triton"].unsupported(odd, torch.bfloat16) == \
        "flashrnn's triton backend takes power-of-two head sizes from 16, got D=48"
    assert impls["flashrnn-cuda-fused"].why_not(tech, odd, torch.bfloat16, "fwd+bwd") is None
