"""Reference head-wise recurrences (FlashRNN's interface): LSTM, GRU and sLSTM as a plain
per-time-step PyTorch loop, at whatever precision the inputs have (float64 for the truth),
differentiable through autograd.

The hidden state is split into H heads of size D with block-diagonal recurrent weights:
head h's gates see only head h's previous output. The input projections are precomputed
(`Wx`, as FlashRNN takes them), so one step is

    pre[g] = Wx[:, t, g, h] + y_{t-1}[h] @ R[g, h] + b[g, h]        for each gate g

Shapes: Wx [B, T, G, H, D], R [G, H, D, D] (R[g, h] maps a D-vector to a D-vector,
row-vector convention), b [G, H, D]; initial states zero; returns y [B, T, H, D].

Gates, in order:
- lstm  (i, f, z, o): c = sigmoid(f) c + sigmoid(i) tanh(z); y = sigmoid(o) tanh(c).
- gru   (r, u, n): r = sigmoid(.), u = sigmoid(.), and the candidate's recurrent term is
        gated before the input's: n = tanh(Wx_n + r * (y R_n + b_n)); y = (1 - u) n + u y
        (PyTorch's nn.GRU with Wx = x W_ih^T + b_ih and b = b_hh).
- slstm (i, f, z, o), xLSTM's exponential gating with a normalizer n and a stabilizer m:
        m' = max(logsigmoid(f) + m, i); i' = exp(i - m'); f' = exp(logsigmoid(f) + m - m');
        c = f' c + i' tanh(z); n = f' n + i'; y = sigmoid(o) c / n; m starts at -inf.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CELLS = ("lstm", "gru", "slstm")
GATES = {"lstm": 4, "gru": 3, "slstm": 4}


def _lstm(pre: list[torch.Tensor], rec: list[torch.Tensor], state: dict) -> torch.Tensor:
    i, f, z, o = (p + r for p, r in zip(pre, rec))
    state["c"] = torch.sigmoid(f) * state["c"] + torch.sigmoid(i) * torch.tanh(z)
    return torch.sigmoid(o) * torch.tanh(state["c"])


def _gru(pre: list[torch.Tensor], rec: list[torch.Tensor], state: dict) -> torch.Tensor:
    r = torch.sigmoid(pre[0] + rec[0])
    u = torch.sigmoid(pre[1] + rec[1])
    n = torch.tanh(pre[2] + r * rec[2])
    return (1 - u) * n + u * state["y"]


def _slstm(pre: list[torch.Tensor], rec: list[torch.Tensor], state: dict) -> torch.Tensor:
    i, f, z, o = (p + r for p, r in zip(pre, rec))
    log_f_plus_m = F.logsigmoid(f) + state["m"]
    m = torch.maximum(log_f_plus_m, i)
    i_gate, f_gate = torch.exp(i - m), torch.exp(log_f_plus_m - m)
    state["c"] = f_gate * state["c"] + i_gate * torch.tanh(z)
    state["n"] = f_gate * state["n"] + i_gate
    state["m"] = m
    return torch.sigmoid(o) * state["c"] / state["n"]


STEPS = {"lstm": _lstm, "gru": _gru, "slstm": _slstm}


def shape_problem(cell: str, Wx: torch.Tensor, R: torch.Tensor, b: torch.Tensor) -> str | None:
    """Why Wx, R, b do not fit together for `cell`, or None."""
    gates = GATES[cell]
    if Wx.dim() == 5:
        heads, dim = Wx.shape[3:]
        if Wx.shape[2] == gates and R.shape == (gates, heads, dim, dim) and b.shape == (gates, heads, dim):
            return None
    return (f"{cell} takes Wx [B, T, {gates}, H, D], R [{gates}, H, D, D], b [{gates}, H, D]; "
            f"got {tuple(Wx.shape)}, {tuple(R.shape)}, {tuple(b.shape)}")


def rnn(cell: str, Wx: torch.Tensor, R: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """y [B, T, H, D] of the head-wise recurrence `cell` (see the module docstring)."""
    if cell not in STEPS:
        raise ValueError(f"unknown cell {cell!r} (accepted: {', '.join(CELLS)})")
    problem = shape_problem(cell, Wx, R, b)
    if problem:
        raise ValueError(problem)
    batch, steps, gates, heads, dim = Wx.shape
    zeros = Wx.new_zeros(batch, heads, dim)
    state = {"y": zeros, "c": zeros, "n": zeros, "m": torch.full_like(zeros, float("-inf"))}
    outputs = []
    for t in range(steps):
        # [B, H, D] x [H, D, D] -> [B, H, D] per gate: each head multiplies by its own block.
        rec = [torch.einsum("bhd,hde->bhe", state["y"], R[g]) + b[g] for g in range(gates)]
        pre = [Wx[:, t, g] for g in range(gates)]
        state["y"] = STEPS[cell](pre, rec, state)
        outputs.append(state["y"])
    return torch.stack(outputs, dim=1)
