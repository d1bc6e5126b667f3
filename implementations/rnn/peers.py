"""The recurrences a user would otherwise call: cuDNN's LSTM and GRU through nn.LSTM and
nn.GRU, for the single-head case (a dense recurrent matrix), and the flashrnn package's
triton, fused-CUDA and alternating-CUDA backends, head-wise, when flashrnn imports.

nn.LSTM and nn.GRU take the layer input, not its projections, so the adapter hands them
Wx as the input with an identity input matrix: the cells' math is then exactly
reference.py's (PyTorch's gate orders are i, f, g, o and r, z, n; b is b_hh), at the cost
of one extra [B T, G D] x [G D, G D] GEMM inside the timed call, which nn.LSTM would run
on the real input anyway."""

from __future__ import annotations

import torch

from harness.cases import Case
from harness.needs import CUDA, package
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
    # Forward only: in training mode cuDNN also writes the reserve space a backward would read.
    return rnn.eval().requires_grad_(False)


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


# flashrnn (FlashRNN's own package). Its recurrent matrices are [G, H, D_out, D_in] (column
# vectors), and its GRU splits the candidate gate: R's gates are (n, r, z) and b has four
# rows (n's recurrent bias, r, z, n's input bias); reference.py's GRU has no separate input bias.
FLASHRNN_BACKENDS = {"flashrnn-triton": "triton_fused", "flashrnn-cuda-fused": "cuda_fused", "flashrnn-cuda": "cuda"}
FLASHRNN_CELLS = {"triton_fused": ("lstm", "slstm"), "cuda_fused": ("lstm", "slstm"), "cuda": ("lstm", "gru", "slstm")}


def flashrnn_arguments(cell: str, R: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """R and b in flashrnn's layout (differentiable views, so gradients reach the originals)."""
    if cell == "gru":
        R = torch.stack([R[2], R[0], R[1]])
        b = torch.stack([b[2], b[0], b[1], torch.zeros_like(b[0])])
    return R.transpose(-1, -2), b


def _flashrnn(backend: str):
    def unsupported(case: Case, dtype: torch.dtype) -> str | None:
        if case["cell"] not in FLASHRNN_CELLS[backend]:
            return f"flashrnn's {backend} backend has no {case['cell']} cell (it offers {', '.join(FLASHRNN_CELLS[backend])})"
        dim = case["D"]
        if backend == "triton_fused" and (dim < 16 or dim & (dim - 1)):
            return f"flashrnn's triton backend takes power-of-two head sizes from 16, got D={dim}"
        return None

    def build(case: Case, Wx, R, b):
        from flashrnn import flashrnn

        dtype_name = str(Wx.dtype).removeprefix("torch.")

        def call() -> torch.Tensor:
            R_, b_ = flashrnn_arguments(case["cell"], R, b)
            states, _ = flashrnn(Wx, R_, b_, function=case["cell"], backend=backend, dtype=dtype_name)
            return states[0]  # states [S, B, T, H, D]; S = 0 is the output y

        return call

    build.__doc__ = f"flashrnn's {backend} backend (flashrnn.flashrnn(..., backend={backend!r}))"
    return build, unsupported


for _name, _backend in FLASHRNN_BACKENDS.items():
    _build, _unsupported_case = _flashrnn(_backend)
    implementation("rnn", _name, role="peer", dtypes=(torch.bfloat16, torch.float16, torch.float32),
                   features=(*FLASHRNN_CELLS[_backend], "multi-head", "backward"),
                   needs=(CUDA, package("flashrnn")), unsupported=_unsupported_case)(_build)
