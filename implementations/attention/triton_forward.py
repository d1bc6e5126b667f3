"""FlashAttention-2 forward in Triton: one program per (query block, batch x head), an
online softmax over key tiles, the causal mask computed from tile indices (FastAttention's
point: no mask tensor is ever materialized).

The key loop is split so that only tiles that need a mask pay for it: for causal
attention, the tiles left of the diagonal run unmasked and only the diagonal tiles are
masked; without causality every tile runs unmasked except a final partial tile when N is
not a multiple of BLOCK_N. Tiles are read through TMA tensor descriptors built per head
(zero-filled past the sequence end), so any N works and GQA heads share K and V.
Softmax runs in base 2 with the scale folded into one multiply (exp2 is one instruction).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from implementations.attention.triton_common import prune_configs, tiling
from implementations.triton_support import architecture, dot_precision, use_descriptor_scratch

LOG2E = 1.4426950408889634


# Candidate tilings per architecture (block_m, block_n, warps, stages); the autotuner picks per
# shape. Hopper's won `python -m implementations.attention.tune` on an H100 (bf16, of 11 tilings):
# D128 N4096 128x128x8x3 462 TFLOP/s and 128x64x8x4 452 non-causal, 64x64x4x3 406 causal;
# D64 N2048 128x64x4x3 378 non-causal (and 284 causal, against 64x64x4x3's 286).
FORWARD_CONFIGS = {
    "interpreter": [tiling(32, 16, 4, 1)],
    "sm90": [tiling(128, 128, 8, 3), tiling(128, 64, 8, 4), tiling(128, 64, 4, 3), tiling(64, 64, 4, 3)],
    "sm100": [tiling(128, 64, 8, 3), tiling(128, 128, 8, 2), tiling(64, 64, 4, 3)],
    "sm80": [tiling(128, 64, 4, 3), tiling(128, 32, 4, 3), tiling(64, 64, 4, 3)],
    "sm8x": [tiling(64, 64, 4, 2), tiling(128, 32, 4, 2), tiling(64, 32, 4, 2)],
    "other": [tiling(64, 64, 4, 2), tiling(64, 32, 4, 1)],
}


@triton.jit
def _forward_tiles(acc, l_i, m_i, q, k_desc, v_desc, key_start, key_stop, offs_m, N_CTX, qk_scale,
                   BLOCK_N: tl.constexpr, CAUSAL_MASK: tl.constexpr, BOUND_MASK: tl.constexpr,
                   DOT_PRECISION: tl.constexpr):
    """Online softmax over key tiles [key_start, key_stop); returns the updated state."""
    for start_n in range(key_start, key_stop, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        k = k_desc.load([start_n, 0])
        qk = tl.dot(q, k.T, input_precision=DOT_PRECISION)
        if CAUSAL_MASK or BOUND_MASK:
            offs_n = start_n + tl.arange(0, BLOCK_N)
            if CAUSAL_MASK:
                keep = offs_n[None, :] <= offs_m[:, None]
            else:
                keep = offs_n[None, :] < N_CTX
            qk = tl.where(keep, qk * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            qk -= m_new[:, None]
        else:
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            qk = qk * qk_scale - m_new[:, None]
        p = tl.math.exp2(qk)
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = v_desc.load([start_n, 0])
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attention_forward(Q, K, V, O, LSE, qk_scale,
                       stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
                       stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_on,
                       H, GROUP, N_CTX,
                       HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    tl.static_assert(BLOCK_M % BLOCK_N == 0)
    i_m = tl.program_id(0)
    if CAUSAL:  # the longest rows (most key tiles) start first, for a balanced tail
        i_m = tl.num_programs(0) - 1 - i_m
    i_bh = tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_hkv = i_h // GROUP
    start_m = i_m * BLOCK_M

    q_desc = tl.make_tensor_descriptor(Q + i_b.to(tl.int64) * stride_qb + i_h.to(tl.int64) * stride_qh,
                                       shape=[N_CTX, HEAD_DIM], strides=[stride_qn, 1], block_shape=[BLOCK_M, HEAD_DIM])
    k_desc = tl.make_tensor_descriptor(K + i_b.to(tl.int64) * stride_kb + i_hkv.to(tl.int64) * stride_kh,
                                       shape=[N_CTX, HEAD_DIM], strides=[stride_kn, 1], block_shape=[BLOCK_N, HEAD_DIM])
    v_desc = tl.make_tensor_descriptor(V + i_b.to(tl.int64) * stride_vb + i_hkv.to(tl.int64) * stride_vh,
                                       shape=[N_CTX, HEAD_DIM], strides=[stride_vn, 1], block_shape=[BLOCK_N, HEAD_DIM])
    o_desc = tl.make_tensor_descriptor(O + i_b.to(tl.int64) * stride_ob + i_h.to(tl.int64) * stride_oh,
                                       shape=[N_CTX, HEAD_DIM], strides=[stride_on, 1], block_shape=[BLOCK_M, HEAD_DIM])

    offs_m = start_m + tl.arange(0, BLOCK_M)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    q = q_desc.load([start_m, 0])

    if CAUSAL:
        # Left of the diagonal every key is visible; on it, keys past the query are masked.
        # Rows past N_CTX are never stored, so the diagonal's bound needs no mask of its own.
        acc, l_i, m_i = _forward_tiles(acc, l_i, m_i, q, k_desc, v_desc, 0, start_m, offs_m, N_CTX, qk_scale,
                                       BLOCK_N, False, False, DOT_PRECISION)
        acc, l_i, m_i = _forward_tiles(acc, l_i, m_i, q, k_desc, v_desc, start_m,
                                       tl.minimum(start_m + BLOCK_M, N_CTX), offs_m, N_CTX, qk_scale,
                                       BLOCK_N, True, False, DOT_PRECISION)
    else:
        # Zero-filled keys past N_CTX would still add exp2(0 - m) to the sum: mask that tile.
        full = (N_CTX // BLOCK_N) * BLOCK_N
        acc, l_i, m_i = _forward_tiles(acc, l_i, m_i, q, k_desc, v_desc, 0, full, offs_m, N_CTX, qk_scale,
                                       BLOCK_N, False, False, DOT_PRECISION)
        if full < N_CTX:
            acc, l_i, m_i = _forward_tiles(acc, l_i, m_i, q, k_desc, v_desc, full, N_CTX, offs_m, N_CTX, qk_scale,
                                           BLOCK_N, False, True, DOT_PRECISION)

    # log-sum-exp in base 2 of the scaled scores, for the backward pass
    tl.store(LSE + i_bh.to(tl.int64) * N_CTX + offs_m, m_i + tl.math.log2(l_i), mask=offs_m < N_CTX)
    o_desc.store([start_m, 0], (acc / l_i[:, None]).to(O.dtype.element_ty))


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, sm_scale: float,
            config: triton.Config | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """O [B, H, N, D] and the base-2 log-sum-exp [B, H, N] (float32) of the scaled scores.
    `config` forces a tiling (for tuning tools); by default the autotuner picks one."""
    batch, heads, n_ctx, head_dim = q.shape
    out = torch.empty_like(q)
    lse = torch.empty((batch, heads, n_ctx), device=q.device, dtype=torch.float32)
    use_descriptor_scratch(q.device)
    kernel, meta = (_tuned_forward(architecture()), {}) if config is None else (_attention_forward, config.all_kwargs())

    def grid(launch):
        return (triton.cdiv(n_ctx, launch["BLOCK_M"]), batch * heads)

    kernel[grid](
        q, k, v, out, lse, sm_scale * LOG2E,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        heads, heads // k.shape[1], n_ctx,
        HEAD_DIM=head_dim, CAUSAL=causal, DOT_PRECISION=dot_precision(q.dtype), **meta,
    )
    return out, lse


@functools.cache
def _tuned_forward(arch: str):
    """The kernel autotuned over this architecture's candidates (tuned once per shape key,
    during the harness's warm-up, never inside a timed region)."""
    return triton.autotune(FORWARD_CONFIGS[arch], key=["N_CTX", "HEAD_DIM", "CAUSAL"],
                           prune_configs_by={"early_config_prune": prune_configs})(_attention_forward)
