"""The peer registered beside the fused recurrence (implementations/rnn/peers.py): cuDNN's
LSTM and GRU through nn.LSTM / nn.GRU, handed Wx as the layer input with an identity input
matrix. nn.LSTM and nn.GRU also run on the CPU (PyTorch's own kernels, not cuDNN), so the
adapter's weight layout is checked there in float64 against the independent truth."""

from __future__ import annotations

import pytest
import torch

from harness import registry
from harness.cases import Case
from implementations.rnn import peers
from tests.implementations.rnn._support import make_rnn, truth
from tests.implementations.shared import reproduce

F64 = dict(rtol=1e-10, atol=1e-12)


def _case(cell: str, B: int, T: int, H: int, D: int) -> Case:
    return Case.of(cell=cell, B=B, T=T, H=H, D=D)


@pytest.fixture(scope="module")
def cudnn() -> registry.Implementation:
    registry.load_all()
    return {impl.name: impl for impl in registry.implementations("rnn")}["cudnn"]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("B,T,D", [(3, 7, 5), (1, 1, 3), (2, 13, 16)], ids=["B3-T7-D5", "B1-T1-D3", "B2-T13-D16"])
def test_torch_rnn_matches_the_truth(seed, cell, B, T, D):
    """One head, odd sizes: nn.LSTM / nn.GRU with the adapter's weights on x = Wx flattened
    over gates is the head-wise cell (gate orders i, f, g, o and r, z, n; b as b_hh)."""
    r = make_rnn(seed, cell, B, T, 1, D, torch.float64, b_scale=1.0)  # a large bias, so b_ih vs b_hh matters
    module = peers.torch_rnn(_case(cell, B, T, 1, D), r.Wx, r.R, r.b)
    assert isinstance(module, {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]) and module.batch_first
    with torch.no_grad():
        out, _ = module(r.Wx.reshape(B, T, -1))
    torch.testing.assert_close(out.reshape(B, T, 1, D), truth(r), **F64,
                               msg=lambda m: f"{m}\n{cell}, B={B}, T={T}, D={D}; {reproduce(seed)}")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_builder_closure_matches_the_truth(seed, cell):
    """The registered builder's closure (the timed call), on the CPU: y [B, T, 1, D]."""
    r = make_rnn(seed, cell, 3, 9, 1, 7, torch.float64)
    with torch.no_grad():
        out = peers.build_cudnn(_case(cell, 3, 9, 1, 7), r.Wx, r.R, r.b)()
    assert out.shape == (3, 9, 1, 7) and out.dtype == torch.float64
    torch.testing.assert_close(out, truth(r), **F64, msg=lambda m: f"{m}\n{reproduce(seed)}")


def test_torch_rnn_weight_layout(seed):
    """Identity input weights, no input bias, W_hh's rows gate-major [R_g^T]_g, b_hh = b flattened."""
    r = make_rnn(seed, "lstm", 2, 3, 1, 4, torch.float64)
    module = peers.torch_rnn(_case("lstm", 2, 3, 1, 4), r.Wx, r.R, r.b)
    assert torch.equal(module.weight_ih_l0, torch.eye(16, dtype=torch.float64))
    assert torch.equal(module.bias_ih_l0, torch.zeros(16, dtype=torch.float64))
    for g in range(4):
        assert torch.equal(module.weight_hh_l0[4 * g:4 * (g + 1)], r.R[g, 0].T)
    assert torch.equal(module.bias_hh_l0, r.b[:, 0].reshape(-1))


def test_refuses_slstm_with_a_reason(cudnn):
    tech = registry.technique("rnn")
    c = _case("slstm", 2, 8, 1, 16)
    assert cudnn.unsupported(c, torch.bfloat16) == "cuDNN has no slstm cell (it offers lstm and gru)"
    assert cudnn.why_not(tech, c, torch.bfloat16, "fwd") == "cudnn does not support slstm"


def test_refuses_multi_head(cudnn):
    tech = registry.technique("rnn")
    assert cudnn.why_not(tech, _case("lstm", 2, 8, 6, 128), torch.bfloat16, "fwd") == "cudnn does not support multi-head"
    assert cudnn.why_not(tech, _case("gru", 2, 8, 2, 16), torch.float32, "fwd") == "cudnn does not support multi-head"


@pytest.mark.parametrize("cell,D", [("lstm", 768), ("gru", 128), ("lstm", 5)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_accepts_one_head_lstm_and_gru(cudnn, cell, D, dtype):
    tech = registry.technique("rnn")
    assert cudnn.why_not(tech, _case(cell, 16, 1024, 1, D), dtype, "fwd") is None


def test_has_no_backward_row(cudnn):
    """The adapter's R and b live in the module, not in the harness's leaves, so it offers no backward."""
    tech = registry.technique("rnn")
    assert cudnn.why_not(tech, _case("lstm", 2, 8, 1, 16), torch.float32, "fwd+bwd") == "cudnn has no backward pass"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what is reported on a machine without CUDA")
def test_says_it_needs_cuda_on_a_cpu(cudnn):
    assert cudnn.role == "peer" and "CUDA" in cudnn.missing_needs()


def test_cudnn_adapter_runs_cudnns_inference_path(seed):
    """The adapter offers the forward only, so cuDNN must not run its training path (which
    also writes the reserve space for a backward) while flashsuite's kernels save nothing."""
    r = make_rnn(seed, "lstm", 2, 3, 1, 4, torch.float32)
    module = peers.torch_rnn(_case("lstm", 2, 3, 1, 4), r.Wx, r.R, r.b)
    assert not module.training
    assert not any(p.requires_grad for p in module.parameters())
