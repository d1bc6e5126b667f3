"""FlashRNN's fused LSTM, GRU and sLSTM as a differentiable PyTorch op: the forward kernel
(triton_rnn_forward.py) keeps the time loop on chip and, when a gradient is wanted, saves
what the reverse-time kernel (triton_rnn_backward.py) reads. Heads too big for one program
run forward only, split across programs (triton_rnn_split.py)."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from implementations.rnn import triton_rnn_backward, triton_rnn_forward, triton_rnn_split
from implementations.rnn.reference import CELLS, shape_problem
from implementations.triton_support import sm_count

HEAD_DIMS = (16, 32, 64, 128)
DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def unsupported_reason(cell: str, head_dim: int, dtype: torch.dtype) -> str | None:
    """Why the fused kernel cannot run this cell, head size and dtype; None when it can."""
    reason = _cell_or_dtype_reason(cell, dtype)
    if reason is None and head_dim not in HEAD_DIMS:
        reason = (f"head size {head_dim} is not supported (accepted: {', '.join(map(str, HEAD_DIMS))}: powers of two "
                  f"from tl.dot's minimum of 16 up to what a head's recurrent block keeps on chip)")
    return reason


def _cell_or_dtype_reason(cell: str, dtype: torch.dtype) -> str | None:
    if cell not in CELLS:
        return f"unknown cell {cell!r} (accepted: {', '.join(CELLS)})"
    if dtype not in DTYPES:
        return f"dtype {dtype} is not supported (accepted: bfloat16, float16, float32)"
    return None


class _FusedRNN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell, Wx, R, b, save):
        y, pre, states = triton_rnn_forward.forward(cell, Wx, R, b, save)
        if save:
            ctx.save_for_backward(y, R, pre, states)
            ctx.cell = cell
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        y, R, pre, states = ctx.saved_tensors
        d_wx, d_r, d_b = triton_rnn_backward.backward(ctx.cell, dy, y, R, pre, states)
        return None, d_wx, d_r, d_b, None


def _checked(cell: str, Wx: torch.Tensor, R: torch.Tensor, b: torch.Tensor, reason: str | None):
    """Wx, R, b with unit-stride last dims, or ValueError naming what is wrong."""
    if reason:
        raise ValueError(reason)
    problem = shape_problem(cell, Wx, R, b)
    if problem:
        raise ValueError(problem)
    if not (Wx.dtype == R.dtype == b.dtype):
        raise ValueError(f"Wx, R, b must share a dtype, got {Wx.dtype}, {R.dtype}, {b.dtype}")
    return (t if t.stride(-1) == 1 else t.contiguous() for t in (Wx, R, b))


def _head_dim(Wx: torch.Tensor) -> int:
    if Wx.dim() != 5:
        raise ValueError(f"expected Wx [B, T, G, H, D], got {tuple(Wx.shape)}")
    return Wx.shape[-1]


def fused_rnn(cell: str, Wx: torch.Tensor, R: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """y [B, T, H, D] of the head-wise recurrence `cell`, fused over time, differentiable in
    Wx, R and b (shapes as in reference.rnn: Wx [B, T, G, H, D], R [G, H, D, D], b [G, H, D])."""
    Wx, R, b = _checked(cell, Wx, R, b, unsupported_reason(cell, _head_dim(Wx), Wx.dtype))
    # Decided here: inside forward() grad mode is always off, so no_grad could not be told apart.
    save = torch.is_grad_enabled() and any(t.requires_grad for t in (Wx, R, b))
    return _FusedRNN.apply(cell, Wx, R, b, save)


def split_unsupported_reason(cell: str, head_dim: int, dtype: torch.dtype) -> str | None:
    """Why the split kernel cannot run this cell, head size and dtype; None when it can."""
    return _cell_or_dtype_reason(cell, dtype) or triton_rnn_split.unsupported_reason(head_dim)


def split_rnn(cell: str, Wx: torch.Tensor, R: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The same recurrence with each head split across programs that meet every step
    (triton_rnn_split.py): any head size that is a multiple of 64, forward only."""
    Wx, R, b = _checked(cell, Wx, R, b, split_unsupported_reason(cell, _head_dim(Wx), Wx.dtype))
    return triton_rnn_split.split_forward(cell, Wx, R, b, sm_count(Wx.device))
