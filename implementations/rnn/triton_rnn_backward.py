"""The fused reverse-time recurrence in Triton: FlashRNN's backward, the time loop inside one
kernel, walking from the last step to the first.

Per step t, with the forward's saved gate pre-activations and cell states, one program
(a block of sequences of one head) turns dy_t (the output's gradient plus what step t + 1
sends back through the recurrence) into the gates' pre-activation gradients, writes them,
and sends dy_{t-1} += sum_g dpre_g R[g, h]^T back in registers. The weight gradients are
sums over every sequence and step, so they are left to one batched GEMM after the kernel
(dR[g, h] = sum_{b,t} y_{t-1}^T dpre_g, db = sum dpre_g): deterministic, no atomics.

sLSTM's stabilizer m is held fixed: y = o c / n does not depend on it (c and n both carry
exp(-m)), so its gradient paths cancel exactly and the backward need not follow them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from implementations.rnn.triton_rnn_forward import RnnConfig, _head_weights, _tanh, launch_config
from implementations.triton_support import dot_precision

# Launch shapes by architecture (see triton_rnn_forward.RnnConfig); sm90 from the same sweep.
# Loading ahead is off until a sweep shows it pays here: a step's reads are 7 to 11 register
# tiles, and holding the next step's too may spill (`python -m implementations.rnn.tune` times both).
_MEASURED = RnnConfig(16, 8, 2, True, prefetch=False)
CONFIGS = {"interpreter": RnnConfig(prefetch=False), "sm90": _MEASURED, "sm100": _MEASURED, "sm80": _MEASURED,
           "sm8x": _MEASURED, "other": _MEASURED}


@triton.jit
def _saved(PTR, rows, live, dims, t, slot, head, stride_b, stride_t, stride_slot, other: tl.constexpr):
    """[BLOCK_B, D] of a saved float32 buffer [B, T, slots, H, D] at step t (`other` before step 0)."""
    mask = live[:, None] & (rows[:, None] * 0 + t >= 0)  # a tensor even where t is a Python int
    return tl.load(PTR + rows[:, None] * stride_b + t * stride_t + slot * stride_slot + head * dims.shape[0]
                   + dims[None, :], mask=mask, other=other)


@triton.jit
def _step_upstream(DY, PRE, rows, live, dims, t, head, stride_yb, stride_yt, stride_yh, stride_pb, stride_pt,
                   stride_pg):
    """Step t's output gradient from outside and its four saved pre-activations (zeros before step 0)."""
    mask = live[:, None] & (rows[:, None] * 0 + t >= 0)
    dy = tl.load(DY + rows[:, None] * stride_yb + t * stride_yt + head * stride_yh + dims[None, :], mask=mask,
                 other=0.0).to(tl.float32)
    p0 = _saved(PRE, rows, live, dims, t, 0, head, stride_pb, stride_pt, stride_pg, 0.0)
    p1 = _saved(PRE, rows, live, dims, t, 1, head, stride_pb, stride_pt, stride_pg, 0.0)
    p2 = _saved(PRE, rows, live, dims, t, 2, head, stride_pb, stride_pt, stride_pg, 0.0)
    p3 = _saved(PRE, rows, live, dims, t, 3, head, stride_pb, stride_pt, stride_pg, 0.0)
    return dy, p0, p1, p2, p3


@triton.jit
def _cell_states(STATES, rows, live, dims, t, head, stride_sb, stride_st, stride_sg, CELL: tl.constexpr):
    """(c, c_prev, n, m, n_prev, m_prev): the cell states after steps t and t - 1 (the LSTM
    keeps only c: its n and m slots repeat c, unused)."""
    c = _saved(STATES, rows, live, dims, t, 0, head, stride_sb, stride_st, stride_sg, 0.0)
    c_prev = _saved(STATES, rows, live, dims, t - 1, 0, head, stride_sb, stride_st, stride_sg, 0.0)
    n, m, n_prev, m_prev = c, c, c, c
    if CELL == "slstm":
        n = _saved(STATES, rows, live, dims, t, 1, head, stride_sb, stride_st, stride_sg, 1.0)
        m = _saved(STATES, rows, live, dims, t, 2, head, stride_sb, stride_st, stride_sg, 0.0)
        n_prev = _saved(STATES, rows, live, dims, t - 1, 1, head, stride_sb, stride_st, stride_sg, 1.0)
        m_prev = _saved(STATES, rows, live, dims, t - 1, 2, head, stride_sb, stride_st, stride_sg, float("-inf"))
    return c, c_prev, n, m, n_prev, m_prev


@triton.jit
def _output(Y, rows, live, dims, t, head, stride_yb, stride_yt, stride_yh):
    """y_t as the forward rounded it (zeros before step 0)."""
    return tl.load(Y + rows[:, None] * stride_yb + t * stride_yt + head * stride_yh + dims[None, :],
                   mask=live[:, None] & (rows[:, None] * 0 + t >= 0), other=0.0).to(tl.float32)


@triton.jit
def _send_back(DWX, DREC, weights, drec, dwx, rows, live, dims, t, g, head, stride_db, stride_dt, stride_dg,
               DOT_PRECISION: tl.constexpr):
    """Write gate g's gradients at step t; return its recurrent term for dy_{t-1}: drec R[g, head]^T."""
    offsets = rows[:, None] * stride_db + t * stride_dt + g * stride_dg + head * dims.shape[0] + dims[None, :]
    tl.store(DWX + offsets, dwx.to(DWX.dtype.element_ty), mask=live[:, None])
    tl.store(DREC + offsets, drec, mask=live[:, None])
    return tl.dot(drec.to(weights.dtype), tl.trans(weights), input_precision=DOT_PRECISION)


@triton.jit
def _backward_kernel(DY, Y, R, PRE, STATES, DWX, DREC, batch, steps,
                     stride_yb, stride_yt, stride_yh, stride_rg, stride_rh, stride_rd,
                     stride_pb, stride_pt, stride_pg, stride_sb, stride_st, stride_sg,
                     stride_db, stride_dt, stride_dg,
                     CELL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_B: tl.constexpr,
                     DOT_PRECISION: tl.constexpr, HOIST_R: tl.constexpr, PREFETCH: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    head = tl.program_id(1)
    live = rows < batch
    dims = tl.arange(0, HEAD_DIM)
    dy_next = tl.zeros([BLOCK_B, HEAD_DIM], dtype=tl.float32)  # what step t + 1 sends back to y_t
    dc = tl.zeros([BLOCK_B, HEAD_DIM], dtype=tl.float32)
    dn = tl.zeros([BLOCK_B, HEAD_DIM], dtype=tl.float32)
    if HOIST_R:  # as in the forward: the head's recurrent blocks kept on chip for all T steps
        r_0, r_1, r_2, r_3 = _head_weights(R, head, dims, stride_rg, stride_rh, stride_rd, CELL)
    # What a step reads does not depend on the recurrence: with PREFETCH each step issues the
    # next one's loads (step t - 1's, and the states two back) before its own math, and the
    # states it loaded as "previous" become the next step's current ones.
    if PREFETCH:
        dy_in, p0, p1, p2, p3 = _step_upstream(DY, PRE, rows, live, dims, steps - 1, head, stride_yb, stride_yt,
                                               stride_yh, stride_pb, stride_pt, stride_pg)
        if CELL == "gru":
            y_prev = _output(Y, rows, live, dims, steps - 2, head, stride_yb, stride_yt, stride_yh)
        else:
            c, c_prev, n, m, n_prev, m_prev = _cell_states(STATES, rows, live, dims, steps - 1, head, stride_sb,
                                                           stride_st, stride_sg, CELL)
    for step in range(steps):
        t = steps - 1 - step
        if not HOIST_R:
            r_0, r_1, r_2, r_3 = _head_weights(R, head, dims, stride_rg, stride_rh, stride_rd, CELL)
        if PREFETCH:
            next_dy, next_p0, next_p1, next_p2, next_p3 = _step_upstream(
                DY, PRE, rows, live, dims, t - 1, head, stride_yb, stride_yt, stride_yh, stride_pb, stride_pt, stride_pg)
            if CELL == "gru":
                next_y_prev = _output(Y, rows, live, dims, t - 2, head, stride_yb, stride_yt, stride_yh)
            else:
                next_c_prev = _saved(STATES, rows, live, dims, t - 2, 0, head, stride_sb, stride_st, stride_sg, 0.0)
                if CELL == "slstm":
                    next_n_prev = _saved(STATES, rows, live, dims, t - 2, 1, head, stride_sb, stride_st, stride_sg, 1.0)
                    next_m_prev = _saved(STATES, rows, live, dims, t - 2, 2, head, stride_sb, stride_st, stride_sg,
                                         float("-inf"))
        else:
            dy_in, p0, p1, p2, p3 = _step_upstream(DY, PRE, rows, live, dims, t, head, stride_yb, stride_yt,
                                                   stride_yh, stride_pb, stride_pt, stride_pg)
            if CELL == "gru":
                y_prev = _output(Y, rows, live, dims, t - 1, head, stride_yb, stride_yt, stride_yh)
            else:
                c, c_prev, n, m, n_prev, m_prev = _cell_states(STATES, rows, live, dims, t, head, stride_sb,
                                                               stride_st, stride_sg, CELL)
        dy = dy_in + dy_next
        if CELL == "gru":  # p0, p1: r and u pre-activations; p2, p3: the candidate's input and recurrent terms
            r, u = tl.sigmoid(p0), tl.sigmoid(p1)
            cand = _tanh(p2 + r * p3)
            d_cand = dy * (1.0 - u) * (1.0 - cand * cand)
            d_r = d_cand * p3 * r * (1.0 - r)
            d_u = dy * (y_prev - cand) * u * (1.0 - u)
            dy_next = dy * u
            dy_next += _send_back(DWX, DREC, r_0, d_r, d_r, rows, live, dims, t, 0, head, stride_db, stride_dt,
                                  stride_dg, DOT_PRECISION)
            dy_next += _send_back(DWX, DREC, r_1, d_u, d_u, rows, live, dims, t, 1, head, stride_db, stride_dt,
                                  stride_dg, DOT_PRECISION)
            dy_next += _send_back(DWX, DREC, r_2, d_cand * r, d_cand, rows, live, dims, t, 2, head, stride_db,
                                  stride_dt, stride_dg, DOT_PRECISION)
        else:  # p0..p3: the i, f, z, o pre-activations
            z, o = _tanh(p2), tl.sigmoid(p3)
            if CELL == "lstm":
                i, f = tl.sigmoid(p0), tl.sigmoid(p1)
                tanh_c = _tanh(c)
                d_o = dy * tanh_c * o * (1.0 - o)
                dc += dy * o * (1.0 - tanh_c * tanh_c)
                d_i = dc * z * i * (1.0 - i)
                d_f = dc * c_prev * f * (1.0 - f)
                d_z = dc * i * (1.0 - z * z)
                dc = dc * f
            else:  # slstm, with m fixed: i' = exp(i - m), f' = exp(logsigmoid(f) + m_prev - m)
                i_gate = tl.exp(p0 - m)
                f_gate = tl.exp(tl.minimum(p1, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(p1))) + m_prev - m)
                d_o = dy * (c / n) * o * (1.0 - o)
                dc += dy * o / n
                dn += -dy * o * c / (n * n)
                d_i = (dc * z + dn) * i_gate
                d_f = (dc * c_prev + dn * n_prev) * f_gate * tl.sigmoid(-p1)
                d_z = dc * i_gate * (1.0 - z * z)
                dc = dc * f_gate
                dn = dn * f_gate
            dy_next = _send_back(DWX, DREC, r_0, d_i, d_i, rows, live, dims, t, 0, head, stride_db, stride_dt,
                                 stride_dg, DOT_PRECISION)
            dy_next += _send_back(DWX, DREC, r_1, d_f, d_f, rows, live, dims, t, 1, head, stride_db, stride_dt,
                                  stride_dg, DOT_PRECISION)
            dy_next += _send_back(DWX, DREC, r_2, d_z, d_z, rows, live, dims, t, 2, head, stride_db, stride_dt,
                                  stride_dg, DOT_PRECISION)
            dy_next += _send_back(DWX, DREC, r_3, d_o, d_o, rows, live, dims, t, 3, head, stride_db, stride_dt,
                                  stride_dg, DOT_PRECISION)
        if PREFETCH:
            dy_in, p0, p1, p2, p3 = next_dy, next_p0, next_p1, next_p2, next_p3
            if CELL == "gru":
                y_prev = next_y_prev
            else:
                c, c_prev = c_prev, next_c_prev
                if CELL == "slstm":
                    n, n_prev, m, m_prev = n_prev, next_n_prev, m_prev, next_m_prev


def backward(cell: str, dy: torch.Tensor, y: torch.Tensor, R: torch.Tensor, pre: torch.Tensor,
             states: torch.Tensor, config: RnnConfig | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dWx, dR, db) from the output's gradient and the forward's y and saved buffers."""
    batch, steps, heads, head_dim = y.shape
    gates = R.shape[0]
    dy = dy.contiguous()
    dwx = torch.empty(batch, steps, gates, heads, head_dim, device=y.device, dtype=y.dtype)
    drec = torch.empty(batch, steps, gates, heads, head_dim, device=y.device, dtype=torch.float32)
    config = config or launch_config(CONFIGS, R)
    _backward_kernel[(triton.cdiv(batch, config.block_b), heads)](
        dy, y, R, pre, states, dwx, drec, batch, steps,
        y.stride(0), y.stride(1), y.stride(2), R.stride(0), R.stride(1), R.stride(2),
        pre.stride(0), pre.stride(1), pre.stride(2), states.stride(0), states.stride(1), states.stride(2),
        drec.stride(0), drec.stride(1), drec.stride(2),
        CELL=cell, HEAD_DIM=head_dim, BLOCK_B=config.block_b, DOT_PRECISION=dot_precision(y.dtype),
        HOIST_R=config.hoist_r, PREFETCH=config.prefetch, num_warps=config.warps, num_stages=config.stages,
    )
    # The recurrent term of step t multiplied y_{t-1} (zero before the first step), as rounded then.
    y_prev = torch.cat([torch.zeros_like(y[:, :1]), y[:, :-1]], dim=1).to(torch.float32)
    d_r = torch.einsum("bthd,btghe->ghde", y_prev, drec).to(R.dtype)
    d_b = drec.sum(dim=(0, 1)).to(R.dtype)
    return dwx, d_r, d_b
