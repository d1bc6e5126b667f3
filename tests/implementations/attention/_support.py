"""Shared pieces of the attention tests: seeds, random inputs, an independent float64
truth (forward and a hand-written backward), and the harness's tolerance rule as an
assertion that says what failed and how to reproduce it."""

from __future__ import annotations

import math

import torch

from harness.registry import Tolerance
from tests.implementations.shared import verdict

TOL = Tolerance(multiple=2.0, floor=1e-5)

# Head layouts: name -> (H, H_KV)
LAYOUTS = {"MHA": (4, 4), "GQA": (4, 2), "MQA": (4, 1)}


def make_qkv(seed: int, B: int, H: int, H_KV: int, N: int, D: int, dtype: torch.dtype, with_grad_out: bool = True):
    """q [B, H, N, D], k, v [B, H_KV, N, D] and dO [B, H, N, D], drawn in float32 and cast
    (as the technique's make_inputs does)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, N, D, generator=g).to(dtype)
    k = torch.randn(B, H_KV, N, D, generator=g).to(dtype)
    v = torch.randn(B, H_KV, N, D, generator=g).to(dtype)
    do = torch.randn(B, H, N, D, generator=g).to(dtype) if with_grad_out else None
    return q, k, v, do


def fwd_bwd(fn, q, k, v, do, **kwargs):
    """(out, dq, dk, dv) of fn on fresh leaves sharing q, k, v's memory: same strides,
    same storage offset (a clone would silently make a strided view contiguous)."""
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v, **kwargs)
    out.backward(do)
    return out.detach(), q.grad, k.grad, v.grad


def truth(q, k, v, causal: bool, scale: float | None = None, do=None):
    """Attention in float64 written out directly: einsum, an explicit boolean mask, kv heads
    repeated to the query heads (query head h reads kv head h // (H / H_KV)), and the
    backward by its closed form. Returns out, or (out, dq, dk, dv) when dO is given."""
    q, k, v = (t.detach().to(torch.float64) for t in (q, k, v))
    B, H, N, D = q.shape
    H_KV = k.shape[1]
    group = H // H_KV
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    kv_head = torch.arange(H) // group
    k_r, v_r = k[:, kv_head], v[:, kv_head]
    s = torch.einsum("bhid,bhjd->bhij", q, k_r) * scale
    if causal:
        i = torch.arange(N)[:, None]
        j = torch.arange(k.shape[2])[None, :]
        s = s.masked_fill(j > i, float("-inf"))
    p = torch.exp(s - s.amax(dim=-1, keepdim=True))
    p = p / p.sum(dim=-1, keepdim=True)
    out = torch.einsum("bhij,bhjd->bhid", p, v_r)
    if do is None:
        return out
    do = do.detach().to(torch.float64)
    dv_h = torch.einsum("bhij,bhid->bhjd", p, do)
    dp = torch.einsum("bhid,bhjd->bhij", do, v_r)
    ds = p * (dp - (p * dp).sum(dim=-1, keepdim=True))
    dq = torch.einsum("bhij,bhjd->bhid", ds, k_r) * scale
    dk_h = torch.einsum("bhij,bhid->bhjd", ds, q) * scale
    dk = dk_h.reshape(B, H_KV, group, N, D).sum(2)
    dv = dv_h.reshape(B, H_KV, group, N, D).sum(2)
    return out, dq, dk, dv


def rule_verdict(out, ref_lowp, ref64, dtype, unit_scale=None) -> tuple[bool, str]:
    """The harness rule for one output: (passes, a line with the numbers)."""
    return verdict(out, ref_lowp, ref64, dtype, TOL, unit_scale)


def assert_rule(names, outs, refs_lowp, refs64, dtype, context: str) -> None:
    """Every named output passes the rule; the message lists all of them and the context."""
    unit_scale = max(r64.double().abs().max().item() for r64 in refs64)  # as the harness does per call
    verdicts = [(name, *rule_verdict(o, r, r64, dtype, unit_scale))
                for name, o, r, r64 in zip(names, outs, refs_lowp, refs64)]
    failed = [name for name, ok, _ in verdicts if not ok]
    detail = "\n".join(f"  {'ok  ' if ok else 'FAIL'} {name}: {line}" for name, ok, line in verdicts)
    assert not failed, f"{', '.join(failed)} outside the tolerance rule for {context}\n{detail}"
