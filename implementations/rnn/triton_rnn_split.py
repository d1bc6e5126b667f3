"""A recurrence whose head is too big for one program (FlashRNN's multi-block kernels): the
head's hidden units are split across programs that meet at a grid-wide barrier every step.

The fused kernel (triton_rnn_forward.py) keeps a head's four D x D blocks of R in one
program, which stops at D = 128. A single dense head of 768 (cuDNN's LSTM with hidden 768)
needs 4.5 MiB of R in bf16. Here program j owns BLOCK_N of the head's hidden units for every
gate: each step it multiplies the whole previous output y_{t-1} [BLOCK_B, D] by its columns
of R (R[g, h][:, cols], read from L2, which holds all of R), updates its units' cell states
and writes its slice of y_t. The other programs need that slice for step t + 1, so each
program then counts itself in on its group's arrival counter and waits until every program
of the group has arrived: a barrier across programs, which requires them all to be resident
at once (the launcher refuses a grid larger than the GPU's SM count).

Cell states live in a float32 scratch buffer, not in registers, so one program can also
walk several column tiles in turn: Triton's interpreter runs programs one after another (a
barrier between them would never open), so there the launcher gives each group one program
that walks all its tiles; the kernel is the same. Forward only.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from implementations.rnn.triton_rnn_forward import _gru_cell, _lstm_cell, _slstm_cell
from implementations.triton_support import architecture, dot_precision

BLOCK_B = 16  # sequences per program (tl.dot's minimum)
BLOCK_N = 16  # hidden units per program: more programs share the reading of R
BLOCK_K = 64  # the reduction over y_{t-1}, in chunks
WARPS = 4


@triton.jit
def _recurrent_chunk(acc, y_prev, R, g, head, k, cols, stride_rg, stride_rh, stride_rd, DOT_PRECISION: tl.constexpr):
    weights = tl.load(R + g * stride_rg + head * stride_rh + k[:, None] * stride_rd + cols[None, :])
    return acc + tl.dot(y_prev, weights, input_precision=DOT_PRECISION)


@triton.jit
def _arrive_and_wait(COUNTER, target):
    """Count this program in; return once `target` programs of its group have arrived."""
    tl.debug_barrier()  # every thread's stores of this step issued before the release below
    tl.atomic_add(COUNTER, 1, sem="release")
    arrived = tl.atomic_add(COUNTER, 0, sem="acquire")
    while arrived < target:
        arrived = tl.atomic_add(COUNTER, 0, sem="acquire")
    tl.debug_barrier()


@triton.jit
def _split_forward_kernel(WX, R, BIAS, Y, STATE, COUNTER, batch, steps,
                          stride_wb, stride_wt, stride_wg, stride_wh, stride_rg, stride_rh, stride_rd,
                          stride_bg, stride_bh, stride_yb, stride_yt, stride_yh, stride_sb, stride_sg, stride_sh,
                          CELL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_B: tl.constexpr,
                          BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, TILES_PER_PROGRAM: tl.constexpr,
                          DOT_PRECISION: tl.constexpr):
    block = tl.program_id(0)
    head = tl.program_id(1)
    rows = block * BLOCK_B + tl.arange(0, BLOCK_B)
    live = rows < batch
    group = COUNTER + block * tl.num_programs(1) + head
    programs_in_group = tl.num_programs(2)
    for t in range(steps):
        for i in range(TILES_PER_PROGRAM):
            cols = (tl.program_id(2) * TILES_PER_PROGRAM + i) * BLOCK_N + tl.arange(0, BLOCK_N)
            acc_0 = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
            acc_1 = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
            acc_2 = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
            acc_3 = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
            for k0 in range(0, HEAD_DIM, BLOCK_K):
                k = k0 + tl.arange(0, BLOCK_K)
                # y_{t-1} as every program wrote it (rounded to the input dtype, as the fused
                # kernel rounds it for its dot); ".cg" reads L2, never a stale L1 line.
                y_prev = tl.load(Y + rows[:, None] * stride_yb + (t - 1) * stride_yt + head * stride_yh + k[None, :],
                                 mask=live[:, None] & (rows[:, None] * 0 + t > 0), other=0.0, cache_modifier=".cg")
                acc_0 = _recurrent_chunk(acc_0, y_prev, R, 0, head, k, cols, stride_rg, stride_rh, stride_rd, DOT_PRECISION)
                acc_1 = _recurrent_chunk(acc_1, y_prev, R, 1, head, k, cols, stride_rg, stride_rh, stride_rd, DOT_PRECISION)
                acc_2 = _recurrent_chunk(acc_2, y_prev, R, 2, head, k, cols, stride_rg, stride_rh, stride_rd, DOT_PRECISION)
                if CELL != "gru":
                    acc_3 = _recurrent_chunk(acc_3, y_prev, R, 3, head, k, cols, stride_rg, stride_rh, stride_rd,
                                             DOT_PRECISION)
            x = WX + rows[:, None] * stride_wb + t * stride_wt + head * stride_wh + cols[None, :]
            b = BIAS + head * stride_bh + cols
            pre_0 = tl.load(x, mask=live[:, None], other=0.0).to(tl.float32)
            pre_1 = tl.load(x + stride_wg, mask=live[:, None], other=0.0).to(tl.float32)
            pre_2 = tl.load(x + 2 * stride_wg, mask=live[:, None], other=0.0).to(tl.float32)
            rec_0 = acc_0 + tl.load(b).to(tl.float32)[None, :]
            rec_1 = acc_1 + tl.load(b + stride_bg).to(tl.float32)[None, :]
            rec_2 = acc_2 + tl.load(b + 2 * stride_bg).to(tl.float32)[None, :]
            state = STATE + rows[:, None] * stride_sb + head * stride_sh + cols[None, :]
            first = rows[:, None] * 0 + t == 0
            if CELL == "gru":  # slot 0 holds y in float32, for the u * y_{t-1} term
                y_old = tl.where(first, 0.0, tl.load(state, mask=live[:, None], other=0.0))
                y = _gru_cell(pre_0 + rec_0, pre_1 + rec_1, pre_2, rec_2, y_old)
                tl.store(state, y, mask=live[:, None])
            else:
                pre_3 = tl.load(x + 3 * stride_wg, mask=live[:, None], other=0.0).to(tl.float32)
                rec_3 = acc_3 + tl.load(b + 3 * stride_bg).to(tl.float32)[None, :]
                i, f, z, o = pre_0 + rec_0, pre_1 + rec_1, pre_2 + rec_2, pre_3 + rec_3
                c = tl.where(first, 0.0, tl.load(state, mask=live[:, None], other=0.0))
                if CELL == "lstm":
                    y, c = _lstm_cell(i, f, z, o, c)
                else:  # slstm; m starts at -inf
                    n = tl.where(first, 0.0, tl.load(state + stride_sg, mask=live[:, None], other=0.0))
                    m = tl.where(first, float("-inf"), tl.load(state + 2 * stride_sg, mask=live[:, None], other=0.0))
                    y, c, n, m = _slstm_cell(i, f, z, o, c, n, m)
                    tl.store(state + stride_sg, n, mask=live[:, None])
                    tl.store(state + 2 * stride_sg, m, mask=live[:, None])
                tl.store(state, c, mask=live[:, None])
            tl.store(Y + rows[:, None] * stride_yb + t * stride_yt + head * stride_yh + cols[None, :],
                     y.to(Y.dtype.element_ty), mask=live[:, None])
        _arrive_and_wait(group, (t + 1) * programs_in_group)


def grid_programs(batch: int, heads: int, head_dim: int) -> int:
    """Programs a GPU launch needs at once: batch blocks x heads x column tiles."""
    return triton.cdiv(batch, BLOCK_B) * heads * (head_dim // BLOCK_N)


def unsupported_reason(head_dim: int) -> str | None:
    if head_dim % BLOCK_K:
        return f"head size {head_dim} is not a multiple of {BLOCK_K} (the split kernel's reduction chunk)"
    return None


def split_forward(cell: str, Wx: torch.Tensor, R: torch.Tensor, b: torch.Tensor, sm_count: int) -> torch.Tensor:
    """y [B, T, H, D] (forward only). Inputs validated by the caller, last dims contiguous.
    Raises ValueError when the grid cannot be resident at once on `sm_count` SMs."""
    batch, steps, _, heads, head_dim = Wx.shape
    reason = unsupported_reason(head_dim)
    if reason:
        raise ValueError(reason)
    tiles = head_dim // BLOCK_N
    if architecture() == "interpreter":
        tiles_per_program = tiles  # one program per group: the interpreter runs programs in turn
    else:
        tiles_per_program = 1
        if grid_programs(batch, heads, head_dim) > sm_count:
            raise ValueError(f"{grid_programs(batch, heads, head_dim)} programs (B={batch}, H={heads}, D={head_dim}) "
                             f"cannot all be resident on {sm_count} SMs, which the split kernel's step barrier needs")
    y = torch.empty(batch, steps, heads, head_dim, device=Wx.device, dtype=Wx.dtype)
    state = torch.empty(batch, 3, heads, head_dim, device=Wx.device, dtype=torch.float32)
    blocks = triton.cdiv(batch, BLOCK_B)
    counter = torch.zeros(blocks * heads, device=Wx.device, dtype=torch.int32)
    _split_forward_kernel[(blocks, heads, tiles // tiles_per_program)](
        Wx, R, b, y, state, counter, batch, steps,
        Wx.stride(0), Wx.stride(1), Wx.stride(2), Wx.stride(3), R.stride(0), R.stride(1), R.stride(2),
        b.stride(0), b.stride(1), y.stride(0), y.stride(1), y.stride(2),
        state.stride(0), state.stride(1), state.stride(2),
        CELL=cell, HEAD_DIM=head_dim, BLOCK_B=BLOCK_B, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K,
        TILES_PER_PROGRAM=tiles_per_program, DOT_PRECISION=dot_precision(Wx.dtype), num_warps=WARPS,
    )
    return y
