"""Reference attention: softmax(Q K^T * scale) V with a dense causal mask and grouped-query
heads, in plain PyTorch, at whatever precision its inputs have (float64 for the truth).

Shapes: q [B, H, N, D]; k, v [B, H_KV, N, D] with H a multiple of H_KV (GQA; H_KV = 1 is MQA).
Long sequences are processed in query chunks, so the float64 reference of a 16K-token
case fits on a GPU; the backward recomputes each chunk (plain autograd on the chunk).
"""

from __future__ import annotations

import math

import torch

SCORE_BUDGET = 1 << 27  # elements of one chunk's score matrix (1 GiB in float64)


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float,
                    q_offset: int = 0) -> torch.Tensor:
    """The textbook formula on (a chunk of) queries starting at position q_offset."""
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale
    if causal:
        rows = torch.arange(q.shape[2], device=q.device)[:, None] + q_offset
        cols = torch.arange(k.shape[2], device=q.device)[None, :]
        scores = scores.masked_fill(cols > rows, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              scale: float | None = None) -> torch.Tensor:
    """Reference attention, differentiable; q [B, H, N, D], k/v [B, H_KV, N, D] -> [B, H, N, D]."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    batch, heads, n_q, _ = q.shape
    chunk = max(1, min(n_q, SCORE_BUDGET // max(1, batch * heads * k.shape[2])))
    if chunk >= n_q:
        return naive_attention(q, k, v, causal, scale)
    return _ChunkedAttention.apply(q, k, v, causal, scale, chunk)


class _ChunkedAttention(torch.autograd.Function):
    """The same formula, computed a chunk of queries at a time to bound memory."""

    @staticmethod
    def forward(ctx, q, k, v, causal, scale, chunk):
        ctx.save_for_backward(q, k, v)
        ctx.causal, ctx.scale, ctx.chunk = causal, scale, chunk
        return torch.cat([naive_attention(q[:, :, s:s + chunk], k, v, causal, scale, s)
                          for s in range(0, q.shape[2], chunk)], dim=2)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v = ctx.saved_tensors
        # Partial dK, dV are summed over chunks in float32 at least, so chunking adds no
        # rounding of its own to a low-precision reference.
        acc_dtype = torch.promote_types(k.dtype, torch.float32)
        dq = torch.empty_like(q)
        dk = torch.zeros(k.shape, dtype=acc_dtype, device=k.device)
        dv = torch.zeros(v.shape, dtype=acc_dtype, device=v.device)
        for s in range(0, q.shape[2], ctx.chunk):
            with torch.enable_grad():
                q_c = q[:, :, s:s + ctx.chunk].detach().requires_grad_()
                k_c, v_c = k.detach().requires_grad_(), v.detach().requires_grad_()
                out = naive_attention(q_c, k_c, v_c, ctx.causal, ctx.scale, s)
                g_q, g_k, g_v = torch.autograd.grad(out, (q_c, k_c, v_c), grad_out[:, :, s:s + ctx.chunk])
            dq[:, :, s:s + ctx.chunk] = g_q
            dk += g_k
            dv += g_v
        return dq, dk.to(k.dtype), dv.to(v.dtype), None, None, None
