"""Fused attention (FlashAttention-2 forward and backward) as a differentiable PyTorch op."""

from __future__ import annotations

import math

import torch

from implementations.attention import triton_backward, triton_forward
from implementations.triton_support import tma_compatible

HEAD_DIMS = (16, 32, 64, 128, 256)
DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def unsupported_reason(head_dim: int, dtype: torch.dtype) -> str | None:
    if head_dim not in HEAD_DIMS:
        return f"head dim {head_dim} is not supported (accepted: {', '.join(map(str, HEAD_DIMS))})"
    if dtype not in DTYPES:
        return f"dtype {dtype} is not supported (accepted: bfloat16, float16, float32)"
    return None


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, sm_scale):
        out, lse = triton_forward.forward(q, k, v, causal, sm_scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal, ctx.sm_scale = causal, sm_scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = triton_backward.backward(grad_out, q, k, v, out, lse, ctx.causal, ctx.sm_scale)
        return dq, dk, dv, None, None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              sm_scale: float | None = None) -> torch.Tensor:
    """softmax(Q K^T * sm_scale) V, fused; differentiable in q, k and v.

    q: [B, H, N, D]; k, v: [B, H_KV, N, D] with H a multiple of H_KV (GQA; H_KV = 1 is MQA).
    D in 16, 32, 64, 128, 256; bfloat16, float16 or float32 (run as true float32).
    Causal masking aligns query i with key i. sm_scale defaults to 1/sqrt(D).
    """
    if q.dim() != 4 or k.shape != v.shape or k.dim() != 4:
        raise ValueError(f"expected q [B, H, N, D] and k, v [B, H_KV, N, D], got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    batch, heads, n_ctx, head_dim = q.shape
    if k.shape[0] != batch or k.shape[2] != n_ctx or k.shape[3] != head_dim or heads % k.shape[1]:
        raise ValueError(f"k, v {tuple(k.shape)} do not match q {tuple(q.shape)} (H must be a multiple of H_KV)")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    reason = unsupported_reason(head_dim, q.dtype)
    if reason:
        raise ValueError(reason)
    q, k, v = (tma_compatible(t) for t in (q, k, v))
    scale = 1.0 / math.sqrt(head_dim) if sm_scale is None else sm_scale
    return _FlashAttention.apply(q, k, v, causal, scale)
