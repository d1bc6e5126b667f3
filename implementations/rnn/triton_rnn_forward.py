"""The fused forward recurrence in Triton (FlashRNN): the whole time loop inside one kernel.

A PyTorch loop launches a handful of kernels per time step and reads the states back from
memory each time; here one program owns a block of sequences of one head and walks all T
steps with its states (y, c, n, m) in registers, in float32, reading only the step's input
projections and its head's recurrent block R[g, h] (from L2 after the first step) and
writing y. Heads are independent (block-diagonal R), so they are the grid's second axis.

The recurrent product y_{t-1} @ R[g, h] is a tensor-core dot of [BLOCK_B, D] x [D, D] with
y rounded to the input dtype (as FlashRNN does), so BLOCK_B is at least 16 rows, padded
past the batch. The cells and their gate order are reference.py's. For training the kernel
also saves, per step, the gates' pre-activations and the cell states (float32) that the
reverse-time kernel in triton_rnn_backward.py reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from implementations.triton_support import architecture, dot_precision



@dataclass(frozen=True)
class RnnConfig:
    """A launch shape: sequences per program (16 is tl.dot's minimum; more rows share each
    read of R), warps, software-pipelining stages, whether R stays on chip, and whether each
    step loads the next step's inputs before its own math (by hand: Triton pipelines only
    loads that feed a dot, and the time loop is a serial chain)."""

    block_b: int = 16
    warps: int = 4
    stages: int = 1
    hoist_r: bool = False
    prefetch: bool = True


# sm90 from `python -m implementations.rnn.tune` on an H100 (B16 T1024, bf16; a sweep before
# loading ahead existed): keeping R on chip is 1.2-1.6x re-reading it; 8 warps beat 4 at
# D = 128. Three stages overflow shared memory at D = 128 (R's 4 gates x 32 KiB per stage).
# Others untuned: the same shape.
CONFIGS = {"interpreter": RnnConfig(), "sm90": RnnConfig(16, 8, 2, True), "sm100": RnnConfig(16, 8, 2, True),
           "sm80": RnnConfig(16, 8, 2, True), "sm8x": RnnConfig(16, 8, 2, True), "other": RnnConfig(16, 8, 2, True)}
ON_CHIP_BYTES = 128 * 1024  # the most of R kept on chip: bf16 at D = 128 fits, float32 at D = 128 does not


def launch_config(configs: dict[str, RnnConfig], R: torch.Tensor) -> RnnConfig:
    """The architecture's launch shape, re-reading R each step where its blocks are too big to keep."""
    config = configs[architecture()]
    gates, _, dim, _ = R.shape
    if config.hoist_r and gates * dim * dim * R.element_size() > ON_CHIP_BYTES:
        return RnnConfig(config.block_b, config.warps, 1, hoist_r=False, prefetch=config.prefetch)
    return config
SAVED_GATES = 4  # lstm, slstm: i, f, z, o; gru: r, u pre-activations, then n's input and recurrent terms
SAVED_STATES = 3  # c, n, m after each step


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _log_sigmoid(x):
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _gru_cell(r_pre, u_pre, n_input, n_recurrent, y):
    """nn.GRU's update: the candidate's recurrent term is gated by r before its input's."""
    r = tl.sigmoid(r_pre)
    u = tl.sigmoid(u_pre)
    return (1.0 - u) * _tanh(n_input + r * n_recurrent) + u * y


@triton.jit
def _lstm_cell(i, f, z, o, c):
    """(y, c) after one step."""
    c = tl.sigmoid(f) * c + tl.sigmoid(i) * _tanh(z)
    return tl.sigmoid(o) * _tanh(c), c


@triton.jit
def _slstm_cell(i, f, z, o, c, n, m):
    """(y, c, n, m) after one step: exponential gates, stabilized in log space by m (which
    starts at -inf)."""
    log_f_plus_m = _log_sigmoid(f) + m
    m_new = tl.maximum(log_f_plus_m, i)
    i_gate = tl.exp(i - m_new)
    f_gate = tl.exp(log_f_plus_m - m_new)
    c = f_gate * c + i_gate * _tanh(z)
    n = f_gate * n + i_gate
    return tl.sigmoid(o) * c / n, c, n, m_new


@triton.jit
def _weights(R, g, head, dims, stride_rg, stride_rh, stride_rd):
    """R[g, head], [D, D]."""
    return tl.load(R + g * stride_rg + head * stride_rh + dims[:, None] * stride_rd + dims[None, :])


@triton.jit
def _head_weights(R, head, dims, stride_rg, stride_rh, stride_rd, CELL: tl.constexpr):
    """The head's blocks R[g, head] for every gate (the GRU's three, then its third again as an
    unused fourth, so every cell unpacks four)."""
    r_0 = _weights(R, 0, head, dims, stride_rg, stride_rh, stride_rd)
    r_1 = _weights(R, 1, head, dims, stride_rg, stride_rh, stride_rd)
    r_2 = _weights(R, 2, head, dims, stride_rg, stride_rh, stride_rd)
    if CELL == "gru":
        r_3 = r_2
    else:
        r_3 = _weights(R, 3, head, dims, stride_rg, stride_rh, stride_rd)
    return r_0, r_1, r_2, r_3


@triton.jit
def _input(WX, rows, live, dims, t, steps, g, head, stride_wb, stride_wt, stride_wg, stride_wh):
    """Gate g's input projection at step t, float32 (zeros past the last step)."""
    return tl.load(WX + rows[:, None] * stride_wb + t * stride_wt + g * stride_wg + head * stride_wh + dims[None, :],
                   mask=live[:, None] & (rows[:, None] * 0 + t < steps), other=0.0).to(tl.float32)


@triton.jit
def _recurrent(weights, BIAS, y_in, dims, g, head, stride_bg, stride_bh, DOT_PRECISION: tl.constexpr):
    """Gate g's recurrent term y_{t-1} R[g, head] + b[g, head]."""
    bias = tl.load(BIAS + g * stride_bg + head * stride_bh + dims).to(tl.float32)
    return tl.dot(y_in, weights, input_precision=DOT_PRECISION) + bias[None, :]


@triton.jit
def _forward_kernel(WX, R, BIAS, Y, PRE, STATES, batch, steps,
                    stride_wb, stride_wt, stride_wg, stride_wh, stride_rg, stride_rh, stride_rd,
                    stride_bg, stride_bh, stride_yb, stride_yt, stride_yh,
                    stride_pb, stride_pt, stride_pg, stride_sb, stride_st, stride_sg, stride_sh,
                    CELL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_B: tl.constexpr,
                    DOT_PRECISION: tl.constexpr, SAVE: tl.constexpr, HOIST_R: tl.constexpr,
                    PREFETCH: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    head = tl.program_id(1)
    live = rows < batch
    dims = tl.arange(0, HEAD_DIM)
    y = tl.zeros([BLOCK_B, HEAD_DIM], dtype=tl.float32)
    c = tl.zeros([BLOCK_B, HEAD_DIM], dtype=tl.float32)
    n = tl.zeros([BLOCK_B, HEAD_DIM], dtype=tl.float32)
    m = tl.full([BLOCK_B, HEAD_DIM], float("-inf"), dtype=tl.float32)
    if HOIST_R:  # the head's recurrent blocks read once and kept on chip for all T steps
        r_0, r_1, r_2, r_3 = _head_weights(R, head, dims, stride_rg, stride_rh, stride_rd, CELL)
    # The input projections do not depend on the recurrence: with PREFETCH each step loads the
    # next step's while its dots and cell math run, so their memory latency leaves the chain.
    if PREFETCH:
        x_0 = _input(WX, rows, live, dims, 0, steps, 0, head, stride_wb, stride_wt, stride_wg, stride_wh)
        x_1 = _input(WX, rows, live, dims, 0, steps, 1, head, stride_wb, stride_wt, stride_wg, stride_wh)
        x_2 = _input(WX, rows, live, dims, 0, steps, 2, head, stride_wb, stride_wt, stride_wg, stride_wh)
        if CELL != "gru":
            x_3 = _input(WX, rows, live, dims, 0, steps, 3, head, stride_wb, stride_wt, stride_wg, stride_wh)
    for t in range(steps):
        if not HOIST_R:  # re-read each step (from L2 after the first), for blocks too big to keep
            r_0, r_1, r_2, r_3 = _head_weights(R, head, dims, stride_rg, stride_rh, stride_rd, CELL)
        if not PREFETCH:
            x_0 = _input(WX, rows, live, dims, t, steps, 0, head, stride_wb, stride_wt, stride_wg, stride_wh)
            x_1 = _input(WX, rows, live, dims, t, steps, 1, head, stride_wb, stride_wt, stride_wg, stride_wh)
            x_2 = _input(WX, rows, live, dims, t, steps, 2, head, stride_wb, stride_wt, stride_wg, stride_wh)
        pre_0, pre_1, pre_2 = x_0, x_1, x_2
        if PREFETCH:
            x_0 = _input(WX, rows, live, dims, t + 1, steps, 0, head, stride_wb, stride_wt, stride_wg, stride_wh)
            x_1 = _input(WX, rows, live, dims, t + 1, steps, 1, head, stride_wb, stride_wt, stride_wg, stride_wh)
            x_2 = _input(WX, rows, live, dims, t + 1, steps, 2, head, stride_wb, stride_wt, stride_wg, stride_wh)
        y_in = y.to(R.dtype.element_ty)
        rec_0 = _recurrent(r_0, BIAS, y_in, dims, 0, head, stride_bg, stride_bh, DOT_PRECISION)
        rec_1 = _recurrent(r_1, BIAS, y_in, dims, 1, head, stride_bg, stride_bh, DOT_PRECISION)
        rec_2 = _recurrent(r_2, BIAS, y_in, dims, 2, head, stride_bg, stride_bh, DOT_PRECISION)
        if CELL == "gru":
            y = _gru_cell(pre_0 + rec_0, pre_1 + rec_1, pre_2, rec_2, y)
            if SAVE:
                saved = PRE + rows[:, None] * stride_pb + t * stride_pt + head * stride_sh + dims[None, :]
                tl.store(saved, pre_0 + rec_0, mask=live[:, None])
                tl.store(saved + stride_pg, pre_1 + rec_1, mask=live[:, None])
                tl.store(saved + 2 * stride_pg, pre_2, mask=live[:, None])
                tl.store(saved + 3 * stride_pg, rec_2, mask=live[:, None])
        else:
            if not PREFETCH:
                x_3 = _input(WX, rows, live, dims, t, steps, 3, head, stride_wb, stride_wt, stride_wg, stride_wh)
            pre_3 = x_3
            if PREFETCH:
                x_3 = _input(WX, rows, live, dims, t + 1, steps, 3, head, stride_wb, stride_wt, stride_wg, stride_wh)
            rec_3 = _recurrent(r_3, BIAS, y_in, dims, 3, head, stride_bg, stride_bh, DOT_PRECISION)
            i, f, z, o = pre_0 + rec_0, pre_1 + rec_1, pre_2 + rec_2, pre_3 + rec_3
            if CELL == "lstm":
                y, c = _lstm_cell(i, f, z, o, c)
            else:
                y, c, n, m = _slstm_cell(i, f, z, o, c, n, m)
            if SAVE:
                saved = PRE + rows[:, None] * stride_pb + t * stride_pt + head * stride_sh + dims[None, :]
                tl.store(saved, i, mask=live[:, None])
                tl.store(saved + stride_pg, f, mask=live[:, None])
                tl.store(saved + 2 * stride_pg, z, mask=live[:, None])
                tl.store(saved + 3 * stride_pg, o, mask=live[:, None])
                state = STATES + rows[:, None] * stride_sb + t * stride_st + head * stride_sh + dims[None, :]
                tl.store(state, c, mask=live[:, None])
                tl.store(state + stride_sg, n, mask=live[:, None])
                tl.store(state + 2 * stride_sg, m, mask=live[:, None])
        tl.store(Y + rows[:, None] * stride_yb + t * stride_yt + head * stride_yh + dims[None, :],
                 y.to(Y.dtype.element_ty), mask=live[:, None])


def forward(cell: str, Wx: torch.Tensor, R: torch.Tensor, b: torch.Tensor, save: bool,
            config: RnnConfig | None = None):
    """y [B, T, H, D] in Wx's dtype; with save, also the float32 gate pre-activations
    [B, T, 4, H, D] and cell states [B, T, 3, H, D] the backward reads (else None, None).
    Inputs validated by the caller, last dims contiguous."""
    batch, steps, _, heads, head_dim = Wx.shape
    y = torch.empty(batch, steps, heads, head_dim, device=Wx.device, dtype=Wx.dtype)
    if save:
        pre = torch.empty(batch, steps, SAVED_GATES, heads, head_dim, device=Wx.device, dtype=torch.float32)
        states = torch.empty(batch, steps, SAVED_STATES, heads, head_dim, device=Wx.device, dtype=torch.float32)
    else:
        pre = states = torch.empty(1, 1, 1, 1, 1, device=Wx.device, dtype=torch.float32)  # never written
    config = config or launch_config(CONFIGS, R)
    _forward_kernel[(triton.cdiv(batch, config.block_b), heads)](
        Wx, R, b, y, pre, states, batch, steps,
        Wx.stride(0), Wx.stride(1), Wx.stride(2), Wx.stride(3), R.stride(0), R.stride(1), R.stride(2),
        b.stride(0), b.stride(1), y.stride(0), y.stride(1), y.stride(2),
        pre.stride(0), pre.stride(1), pre.stride(2), states.stride(0), states.stride(1), states.stride(2),
        head_dim,  # both saved buffers are [B, T, slots, H, D]: a head is D elements on
        CELL=cell, HEAD_DIM=head_dim, BLOCK_B=config.block_b, DOT_PRECISION=dot_precision(Wx.dtype), SAVE=save,
        HOIST_R=config.hoist_r, PREFETCH=config.prefetch, num_warps=config.warps, num_stages=config.stages,
    )
    return (y, pre, states) if save else (y, None, None)
