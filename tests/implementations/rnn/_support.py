"""Shared pieces of the rnn tests: seeds, a builder of head-wise recurrence inputs, an
independent float64 truth, and the harness's tolerance rule as an assertion that says what
failed and how to reproduce it."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from harness.registry import Tolerance
from implementations.rnn import reference
from tests.implementations.shared import verdict

TOL = Tolerance(multiple=2.0, floor=1e-5)
GATES = {"lstm": 4, "gru": 3, "slstm": 4}  # written out here, not imported from the code under test


@dataclass(frozen=True)
class Rnn:
    """One call's inputs: Wx [B, T, G, H, D], R [G, H, D, D], b [G, H, D]."""

    cell: str
    Wx: torch.Tensor
    R: torch.Tensor
    b: torch.Tensor

    @property
    def args(self) -> tuple:
        return self.cell, self.Wx, self.R, self.b

    @property
    def dtype(self) -> torch.dtype:
        return self.Wx.dtype

    @property
    def out_shape(self) -> tuple[int, ...]:
        B, T, _, H, D = self.Wx.shape
        return (B, T, H, D)

    def with_(self, **changes) -> Rnn:
        return replace(self, **changes)

    def to(self, dtype: torch.dtype) -> Rnn:
        return replace(self, Wx=self.Wx.to(dtype), R=self.R.to(dtype), b=self.b.to(dtype))


def make_rnn(seed: int, cell: str, B: int, T: int, H: int, D: int, dtype: torch.dtype,
             wx_scale: float = 1.0, r_scale: float | None = None, b_scale: float = 0.1) -> Rnn:
    """Random inputs drawn in float32 and cast: Wx ~ N(0, wx_scale^2), R ~ N(0, 1/D) (the
    recurrent term O(1)), b ~ N(0, b_scale^2)."""
    g = torch.Generator().manual_seed(seed)
    G = GATES[cell]
    r_scale = 1.0 / math.sqrt(D) if r_scale is None else r_scale
    Wx = torch.randn(B, T, G, H, D, generator=g) * wx_scale
    R = torch.randn(G, H, D, D, generator=g) * r_scale
    b = torch.randn(G, H, D, generator=g) * b_scale
    return Rnn(cell, Wx.to(dtype), R.to(dtype), b.to(dtype))


# --- the truth: one (sequence, head) at a time in NumPy float64, each gate written out ----------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no exp, so no overflow for any x


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)  # log(1 / (1 + e^-x)), exact for large |x|


def _lstm_sequence(wx: np.ndarray, R: np.ndarray, b: np.ndarray) -> np.ndarray:
    """wx [T, 4, D], R [4, D, D], b [4, D] of one (sequence, head); returns y [T, D]."""
    T, _, D = wx.shape
    y, c, out = np.zeros(D), np.zeros(D), np.zeros((T, D))
    for t in range(T):
        i = wx[t, 0] + y @ R[0] + b[0]
        f = wx[t, 1] + y @ R[1] + b[1]
        z = wx[t, 2] + y @ R[2] + b[2]
        o = wx[t, 3] + y @ R[3] + b[3]
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(z)
        y = _sigmoid(o) * np.tanh(c)
        out[t] = y
    return out


def _gru_sequence(wx: np.ndarray, R: np.ndarray, b: np.ndarray) -> np.ndarray:
    T, _, D = wx.shape
    y, out = np.zeros(D), np.zeros((T, D))
    for t in range(T):
        reset = _sigmoid(wx[t, 0] + y @ R[0] + b[0])
        update = _sigmoid(wx[t, 1] + y @ R[1] + b[1])
        candidate = np.tanh(wx[t, 2] + reset * (y @ R[2] + b[2]))
        y = update * y + (1.0 - update) * candidate
        out[t] = y
    return out


def _slstm_sequence(wx: np.ndarray, R: np.ndarray, b: np.ndarray) -> np.ndarray:
    """xLSTM's sLSTM with the stabilizer's first step taken by hand: with c_0 = n_0 = 0 the
    forget term vanishes, so m_1 = i_1, i'_1 = 1, c_1 = tanh(z_1), n_1 = 1. Later steps:
    m_t = max(log sigmoid(f_t) + m_{t-1}, i_t), i' = e^{i - m}, f' = e^{log sigmoid(f) + m_{t-1} - m_t}."""
    T, _, D = wx.shape
    out = np.zeros((T, D))
    m = c = n = None
    y = np.zeros(D)
    for t in range(T):
        i = wx[t, 0] + y @ R[0] + b[0]
        f = wx[t, 1] + y @ R[1] + b[1]
        z = wx[t, 2] + y @ R[2] + b[2]
        o = wx[t, 3] + y @ R[3] + b[3]
        if t == 0:
            m, c, n = i, np.tanh(z), np.ones(D)
        else:
            decayed = _log_sigmoid(f) + m
            m_new = np.maximum(decayed, i)
            input_gate, forget_gate = np.exp(i - m_new), np.exp(decayed - m_new)
            c = forget_gate * c + input_gate * np.tanh(z)
            n = forget_gate * n + input_gate
            m = m_new
        y = _sigmoid(o) * (c / n)
        out[t] = y
    return out


SEQUENCES = {"lstm": _lstm_sequence, "gru": _gru_sequence, "slstm": _slstm_sequence}


def truth(r: Rnn) -> torch.Tensor:
    """y [B, T, H, D] in float64: every (sequence, head) pair run on its own in NumPy, head
    h reading only R[:, h] and b[:, h] (the block-diagonal structure spelled out)."""
    Wx, R, b = (t.detach().to(torch.float64).numpy() for t in (r.Wx, r.R, r.b))
    B, T, G, H, D = Wx.shape
    assert G == GATES[r.cell], f"{r.cell} has {GATES[r.cell]} gates, Wx has {G}"
    out = np.zeros((B, T, H, D))
    for s in range(B):
        for h in range(H):
            out[s, :, h] = SEQUENCES[r.cell](Wx[s, :, :, h], R[:, h], b[:, h])
    return torch.from_numpy(out)


# --- the harness's rule ------------------------------------------------------------------------


def rule_verdict(out: torch.Tensor, r: Rnn, want: torch.Tensor | None = None,
                 steps: slice = slice(None)) -> tuple[bool, str]:
    """The harness rule for one output: its error against the float64 truth (`want`, computed
    when not given) within 2x the reference's own error at the same dtype, plus the floor.
    `steps` judges only those time steps. Returns (passes, a line with the numbers)."""
    want = truth(r) if want is None else want
    ref = reference.rnn(*r.args)
    out, want, ref = out[:, steps], want[:, steps], ref[:, steps]
    return verdict(out, ref, want, r.dtype, TOL)


def assert_rule(out: torch.Tensor, r: Rnn, context: str, want: torch.Tensor | None = None,
                steps: slice = slice(None)) -> None:
    assert out.dtype == r.dtype and tuple(out.shape) == r.out_shape, \
        f"out is {out.dtype} {tuple(out.shape)}, expected {r.dtype} {r.out_shape}; {context}"
    ok, line = rule_verdict(out, r, want, steps)
    assert ok, f"out outside the tolerance rule for {context}\n  {line}"


def describe(r: Rnn) -> str:
    B, T, G, H, D = r.Wx.shape
    return f"{r.cell}, {r.dtype}, B={B}, T={T}, H={H}, D={D}"


# --- gradients ------------------------------------------------------------------------------------

GRAD_NAMES = ("dWx", "dR", "db")


def upstream(seed: int, r: Rnn) -> torch.Tensor:
    """A seeded upstream gradient dL/dy, drawn in float32 and cast to the inputs' dtype (as the
    harness draws it)."""
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randn(r.out_shape, generator=g).to(r.dtype)


def gradients(fn, r: Rnn, dy: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """y and (dWx, dR, db) of fn(cell, Wx, R, b) for the upstream gradient dy."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (r.Wx, r.R, r.b)]
    y = fn(r.cell, *leaves)
    torch.autograd.backward(y, dy.to(y.dtype))
    return y.detach(), tuple(t.grad for t in leaves)


def true_gradients(r: Rnn, dy: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(dWx, dR, db) in float64: autograd through the float64 reference (itself checked
    against finite differences in test_reference.py)."""
    return gradients(reference.rnn, r.to(torch.float64), dy.to(torch.float64))[1]


def grad_verdicts(grads, r: Rnn, dy: torch.Tensor, want=None) -> list[tuple[str, bool, str]]:
    """The harness rule for each gradient, the reference's own gradients at r's dtype the yardstick."""
    want = true_gradients(r, dy) if want is None else want
    ref = gradients(reference.rnn, r, dy)[1]
    verdicts = []
    for name, got, w, yard in zip(GRAD_NAMES, grads, want, ref):
        ok, line = verdict(got, yard, w, r.dtype, TOL)
        verdicts.append((name, ok, f"{name}: {line}"))
    return verdicts


def assert_grads_rule(grads, r: Rnn, dy: torch.Tensor, context: str, want=None) -> None:
    for name, got, source in zip(GRAD_NAMES, grads, (r.Wx, r.R, r.b)):
        assert got is not None, f"no gradient for {name}; {context}"
        assert got.dtype == source.dtype and got.shape == source.shape, \
            f"{name} is {got.dtype} {tuple(got.shape)}, expected {source.dtype} {tuple(source.shape)}; {context}"
    failed = [line for _, ok, line in grad_verdicts(grads, r, dy, want) if not ok]
    assert not failed, f"gradients outside the tolerance rule for {context}\n  " + "\n  ".join(failed)
