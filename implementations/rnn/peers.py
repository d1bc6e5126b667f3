"""The recurrences a user would otherwise call: cuDNN's LSTM and GRU through nn.LSTM and
nn.GRU, for the single-head case (a dense recurrent matrix).

nn.LSTM and nn.GRU take the layer input, not its projections, so the adapter hands them
Wx as the input with an identity input matrix: the cells' math is then exactly
reference.py's (PyTorch's gate orders are i, f, g, o and r, z, n; b is b_hh), at the cost
of one extra [B T, G D] x [G D, G D] GEMM inside the timed call, which nn.LSTM would run
on the real input anyway."""

from __future__ import annotations

import torch

from harness.cases import Case
from harness.needs import CUDA
from harness.registry import implementation
from implementations.rnn.reference import GATES

ALL = (torch.bfloat16, torch.float16, torch.float32, torch.float64)


def torch_rnn(case: Case, Wx: torch.Tensor, R: torch.Tensor, b: torch.Tensor) -> torch.nn.Module:
    """nn.LSTM or nn.GRU (batch first) computing reference.rnn on x = Wx flattened over gates."""
    gates, dim = GATES[case["cell"]], case["D"]
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[case["cell"]]
    rnn = module(gates * dim, dim, batch_first=True, device=Wx.device, dtype=Wx.dtype)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.eye(gates * dim, dtype=Wx.dtype, device=Wx.device))
        rnn.bias_ih_l0.zero_()
        rnn.weight_hh_l0.copy_(torch.cat([R[g, 0].T for g in range(gates)]))  # h @ W_hh^T = [h R_g]_g
        rnn.bias_hh_l0.copy_(b[:, 0].reshape(-1))
    return rnn


def _unsupported(case: Case, dtype: torch.dtype) -> str | None:
    if case["cell"] not in ("lstm", "gru"):
        return f"cuDNN has no {case['cell']} cell (it offers lstm and gru)"
    return None


@implementation("rnn", "cudnn", role="peer", dtypes=ALL, features=("lstm", "gru"), needs=(CUDA,),
                unsupported=_unsupported)
def build_cudnn(case: Case, Wx, R, b):
    """cuDNN's LSTM or GRU through nn.LSTM / nn.GRU, one head (a dense recurrent matrix)."""
    rnn = torch_rnn(case, Wx.detach(), R.detach(), b.detach())
    batch, steps = case["B"], case["T"]
    flat = Wx.reshape(batch, steps, -1)  # [B, T, G * D], gate-major like W_ih's rows
    return lambda: rnn(flat)[0].reshape(batch, steps, 1, case["D"])
