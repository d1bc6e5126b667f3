"""FlashAttention-2 backward in Triton, deterministic (no atomics).

With P = exp2(S * qk_scale - lse) recomputed from the saved base-2 log-sum-exp:
    dV = P^T dO        dP = dO V^T        dS = P * (dP - delta),  delta = rowsum(dO * O)
    dK = dS^T Q * scale                   dQ = dS K * scale
Two kernels share the work: one program per (key block, query head) accumulates dK and dV
over the query blocks that see its keys; one program per (query block, query head)
accumulates dQ over the key blocks its queries see. Each output tile has one writer, so
results are bitwise repeatable. With grouped-query heads, the dK and dV of each query
head land in a float32 buffer that is summed over the group afterwards.

The dK/dV kernel computes S^T directly (K Q^T), so P^T is in registers for dV without a
transpose. Causal masks are applied only on the diagonal blocks, as in the forward.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from implementations.attention.triton_common import prune_configs, tiling
from implementations.triton_support import architecture, dot_precision, tma_compatible, use_descriptor_scratch
from implementations.attention.triton_forward import LOG2E


# Hopper's candidates won `python -m implementations.attention.tune` on an H100 (bf16, TFLOP/s counting
# the kernel's own matmuls): D128 N4096 dK/dV 64x64x4x2 556 and 64x128x8x3 527 non-causal, 64x128x8x3
# 438 causal; dQ 128x32x8x3 590 and 64x64x4x2 565 non-causal. D64 N2048: dK/dV 32x128x4x3 399
# non-causal, 321 causal; dQ 128x64x8x3 533 non-causal, 412 causal.
# dK/dV: BLOCK_N keys stay resident while BLOCK_M-query tiles stream past (BLOCK_N % BLOCK_M == 0).
DKDV_CONFIGS = {
    "interpreter": [tiling(16, 32, 4, 1)],
    "sm90": [tiling(64, 64, 4, 2), tiling(64, 128, 8, 3), tiling(32, 128, 4, 3)],
    "sm100": [tiling(64, 128, 8, 2), tiling(64, 64, 4, 2)],
    "sm80": [tiling(64, 128, 8, 2), tiling(32, 64, 4, 2)],
    "sm8x": [tiling(32, 64, 4, 2), tiling(16, 64, 4, 2)],
    "other": [tiling(32, 64, 4, 1)],
}
# dQ: BLOCK_M queries stay resident while BLOCK_N-key tiles stream past (BLOCK_M % BLOCK_N == 0).
DQ_CONFIGS = {
    "interpreter": [tiling(32, 16, 4, 1)],
    "sm90": [tiling(128, 32, 8, 3), tiling(128, 64, 8, 3), tiling(64, 64, 4, 2)],
    "sm100": [tiling(128, 64, 8, 2), tiling(64, 64, 4, 2)],
    "sm80": [tiling(128, 64, 8, 2), tiling(64, 32, 4, 2)],
    "sm8x": [tiling(64, 32, 4, 2), tiling(64, 16, 4, 2)],
    "other": [tiling(64, 32, 4, 1)],
}


@triton.jit
def _head_descriptor(base, i_b, i_h, stride_b, stride_h, stride_n, N_CTX,
                     HEAD_DIM: tl.constexpr, ROWS: tl.constexpr):
    """A TMA descriptor over one head's [N_CTX, HEAD_DIM] rows (zero-filled past N_CTX)."""
    return tl.make_tensor_descriptor(base + i_b.to(tl.int64) * stride_b + i_h.to(tl.int64) * stride_h,
                                     shape=[N_CTX, HEAD_DIM], strides=[stride_n, 1], block_shape=[ROWS, HEAD_DIM])


@triton.jit
def _delta_kernel(O, DO, DELTA, stride_ob, stride_oh, stride_on, H, N_CTX,
                  HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr):
    """delta = rowsum(dO * O) in float32; dO is contiguous [B, H, N, D]."""
    i_bh = tl.program_id(1)
    offs_m = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, HEAD_DIM)
    m_rows = offs_m[:, None] < N_CTX
    o = tl.load(O + (i_bh // H).to(tl.int64) * stride_ob + (i_bh % H).to(tl.int64) * stride_oh
                + offs_m[:, None] * stride_on + offs_d[None, :], mask=m_rows, other=0.0)
    do = tl.load(DO + i_bh.to(tl.int64) * N_CTX * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :],
                 mask=m_rows, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(DELTA + i_bh.to(tl.int64) * N_CTX + offs_m, delta, mask=offs_m < N_CTX)


@triton.jit
def _dkdv_tiles(dk, dv, k, v, q_desc, do_desc, LSE_row, DELTA_row, query_start, query_stop, offs_n, N_CTX,
                qk_scale, BLOCK_M: tl.constexpr, CAUSAL_MASK: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Accumulate dK, dV of one key block over query tiles [query_start, query_stop).
    Query rows past N_CTX read zeros (q, dO, lse, delta), so they add nothing."""
    for start_m in range(query_start, query_stop, BLOCK_M):
        start_m = tl.multiple_of(start_m, BLOCK_M)
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q = q_desc.load([start_m, 0])
        lse = tl.load(LSE_row + offs_m, mask=offs_m < N_CTX, other=0.0)
        p_t = tl.math.exp2(tl.dot(k, q.T, input_precision=DOT_PRECISION) * qk_scale - lse[None, :])
        if CAUSAL_MASK:
            p_t = tl.where(offs_m[None, :] >= offs_n[:, None], p_t, 0.0)
        do = do_desc.load([start_m, 0])
        dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=DOT_PRECISION)
        delta = tl.load(DELTA_row + offs_m, mask=offs_m < N_CTX, other=0.0)
        dp_t = tl.dot(v, do.T, input_precision=DOT_PRECISION)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=DOT_PRECISION)
    return dk, dv


@triton.jit
def _attention_dkdv(Q, K, V, DO, LSE, DELTA, DK, DV, qk_scale, sm_scale,
                    stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
                    stride_vb, stride_vh, stride_vn, stride_dob, stride_doh, stride_don,
                    stride_dkb, stride_dkh, stride_dkn,
                    H, GROUP, N_CTX,
                    HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    tl.static_assert(BLOCK_N % BLOCK_M == 0)
    start_n = tl.program_id(0) * BLOCK_N
    i_bh = tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_hkv = i_h // GROUP
    k = _head_descriptor(K, i_b, i_hkv, stride_kb, stride_kh, stride_kn, N_CTX, HEAD_DIM, BLOCK_N).load([start_n, 0])
    v = _head_descriptor(V, i_b, i_hkv, stride_vb, stride_vh, stride_vn, N_CTX, HEAD_DIM, BLOCK_N).load([start_n, 0])
    q_desc = _head_descriptor(Q, i_b, i_h, stride_qb, stride_qh, stride_qn, N_CTX, HEAD_DIM, BLOCK_M)
    do_desc = _head_descriptor(DO, i_b, i_h, stride_dob, stride_doh, stride_don, N_CTX, HEAD_DIM, BLOCK_M)
    LSE_row = LSE + i_bh.to(tl.int64) * N_CTX
    DELTA_row = DELTA + i_bh.to(tl.int64) * N_CTX
    offs_n = start_n + tl.arange(0, BLOCK_N)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    if CAUSAL:
        # Queries on the diagonal block see part of these keys; queries below see all of them.
        diagonal_end = tl.minimum(start_n + BLOCK_N, N_CTX)
        dk, dv = _dkdv_tiles(dk, dv, k, v, q_desc, do_desc, LSE_row, DELTA_row, start_n, diagonal_end, offs_n,
                             N_CTX, qk_scale, BLOCK_M, True, DOT_PRECISION)
        dk, dv = _dkdv_tiles(dk, dv, k, v, q_desc, do_desc, LSE_row, DELTA_row, diagonal_end, N_CTX, offs_n,
                             N_CTX, qk_scale, BLOCK_M, False, DOT_PRECISION)
    else:
        dk, dv = _dkdv_tiles(dk, dv, k, v, q_desc, do_desc, LSE_row, DELTA_row, 0, N_CTX, offs_n,
                             N_CTX, qk_scale, BLOCK_M, False, DOT_PRECISION)
    dk_desc = _head_descriptor(DK, i_b, i_h, stride_dkb, stride_dkh, stride_dkn, N_CTX, HEAD_DIM, BLOCK_N)
    dv_desc = _head_descriptor(DV, i_b, i_h, stride_dkb, stride_dkh, stride_dkn, N_CTX, HEAD_DIM, BLOCK_N)
    dk_desc.store([start_n, 0], (dk * sm_scale).to(DK.dtype.element_ty))
    dv_desc.store([start_n, 0], dv.to(DV.dtype.element_ty))


@triton.jit
def _dq_tiles(dq, q, do, lse, delta, k_desc, v_desc, key_start, key_stop, offs_m, qk_scale,
              BLOCK_N: tl.constexpr, CAUSAL_MASK: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Accumulate dQ of one query block over key tiles [key_start, key_stop).
    Keys past N_CTX read zeros, so their dS rows meet zero K rows and add nothing."""
    for start_n in range(key_start, key_stop, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        k = k_desc.load([start_n, 0])
        v = v_desc.load([start_n, 0])
        p = tl.math.exp2(tl.dot(q, k.T, input_precision=DOT_PRECISION) * qk_scale - lse[:, None])
        if CAUSAL_MASK:
            offs_n = start_n + tl.arange(0, BLOCK_N)
            p = tl.where(offs_m[:, None] >= offs_n[None, :], p, 0.0)
        dp = tl.dot(do, v.T, input_precision=DOT_PRECISION)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=DOT_PRECISION)
    return dq


@triton.jit
def _attention_dq(Q, K, V, DO, LSE, DELTA, DQ, qk_scale, sm_scale,
                  stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
                  stride_vb, stride_vh, stride_vn, stride_dob, stride_doh, stride_don,
                  stride_dqb, stride_dqh, stride_dqn,
                  H, GROUP, N_CTX,
                  HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    tl.static_assert(BLOCK_M % BLOCK_N == 0)
    i_m = tl.program_id(0)
    if CAUSAL:  # longest rows first
        i_m = tl.num_programs(0) - 1 - i_m
    start_m = i_m * BLOCK_M
    i_bh = tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_hkv = i_h // GROUP
    q = _head_descriptor(Q, i_b, i_h, stride_qb, stride_qh, stride_qn, N_CTX, HEAD_DIM, BLOCK_M).load([start_m, 0])
    do = _head_descriptor(DO, i_b, i_h, stride_dob, stride_doh, stride_don, N_CTX, HEAD_DIM, BLOCK_M).load([start_m, 0])
    k_desc = _head_descriptor(K, i_b, i_hkv, stride_kb, stride_kh, stride_kn, N_CTX, HEAD_DIM, BLOCK_N)
    v_desc = _head_descriptor(V, i_b, i_hkv, stride_vb, stride_vh, stride_vn, N_CTX, HEAD_DIM, BLOCK_N)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    lse = tl.load(LSE + i_bh.to(tl.int64) * N_CTX + offs_m, mask=offs_m < N_CTX, other=0.0)
    delta = tl.load(DELTA + i_bh.to(tl.int64) * N_CTX + offs_m, mask=offs_m < N_CTX, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    if CAUSAL:
        dq = _dq_tiles(dq, q, do, lse, delta, k_desc, v_desc, 0, start_m, offs_m, qk_scale,
                       BLOCK_N, False, DOT_PRECISION)
        dq = _dq_tiles(dq, q, do, lse, delta, k_desc, v_desc, start_m, tl.minimum(start_m + BLOCK_M, N_CTX), offs_m,
                       qk_scale, BLOCK_N, True, DOT_PRECISION)
    else:
        dq = _dq_tiles(dq, q, do, lse, delta, k_desc, v_desc, 0, N_CTX, offs_m, qk_scale,
                       BLOCK_N, False, DOT_PRECISION)
    dq_desc = _head_descriptor(DQ, i_b, i_h, stride_dqb, stride_dqh, stride_dqn, N_CTX, HEAD_DIM, BLOCK_M)
    dq_desc.store([start_m, 0], (dq * sm_scale).to(DQ.dtype.element_ty))


@functools.cache
def _tuned(kernel, arch: str):
    configs = (DKDV_CONFIGS if kernel is _attention_dkdv else DQ_CONFIGS)[arch]
    return triton.autotune(configs, key=["N_CTX", "HEAD_DIM", "CAUSAL", "GROUP"],
                           prune_configs_by={"early_config_prune": prune_configs})(kernel)


def backward(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
             lse: torch.Tensor, causal: bool, sm_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dQ, dK, dV for attention saved by `triton_forward.forward` (lse in base 2)."""
    do = tma_compatible(do.contiguous())  # the delta kernel reads dO as contiguous
    delta = row_dot(out, do)
    dk, dv = dkdv(q, k, v, do, lse, delta, causal, sm_scale)
    return dq(q, k, v, do, lse, delta, causal, sm_scale), dk, dv


def row_dot(out: torch.Tensor, do: torch.Tensor) -> torch.Tensor:
    """delta = rowsum(dO * O), float32 [B, H, N]; dO contiguous."""
    batch, heads, n_ctx, head_dim = out.shape
    delta = torch.empty((batch, heads, n_ctx), device=out.device, dtype=torch.float32)
    block = 64
    _delta_kernel[(triton.cdiv(n_ctx, block), batch * heads)](
        out, do, delta, out.stride(0), out.stride(1), out.stride(2), heads, n_ctx, HEAD_DIM=head_dim, BLOCK=block)
    return delta


def dkdv(q, k, v, do, lse, delta, causal: bool, sm_scale: float,
         config: triton.Config | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """dK, dV [B, H_KV, N, D]. `config` forces a tiling (for tuning tools)."""
    batch, heads, n_ctx, head_dim = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    # One dK/dV per query head; with GQA they are summed over the group in float32.
    per_head = torch.empty((batch, heads, n_ctx, head_dim), device=q.device,
                           dtype=k.dtype if group == 1 else torch.float32)
    dk, dv = per_head, torch.empty_like(per_head)
    _launch(_attention_dkdv, config, lambda meta: (triton.cdiv(n_ctx, meta["BLOCK_N"]), batch * heads),
            (q, k, v, do, lse, delta), (dk, dv), causal, sm_scale)
    if group > 1:
        dk = dk.view(batch, kv_heads, group, n_ctx, head_dim).sum(2).to(k.dtype)
        dv = dv.view(batch, kv_heads, group, n_ctx, head_dim).sum(2).to(v.dtype)
    return dk, dv


def dq(q, k, v, do, lse, delta, causal: bool, sm_scale: float, config: triton.Config | None = None) -> torch.Tensor:
    """dQ [B, H, N, D]. `config` forces a tiling (for tuning tools)."""
    n_ctx, batch_heads = q.shape[2], q.shape[0] * q.shape[1]
    grad_q = torch.empty_like(q)
    _launch(_attention_dq, config, lambda meta: (triton.cdiv(n_ctx, meta["BLOCK_M"]), batch_heads),
            (q, k, v, do, lse, delta), (grad_q,), causal, sm_scale)
    return grad_q


def _launch(kernel, config, grid, inputs: tuple, outputs: tuple, causal: bool, sm_scale: float) -> None:
    """Launch a backward kernel; its outputs share one layout (strides of the first)."""
    q, k, v, do, lse, delta = inputs
    batch, heads, n_ctx, head_dim = q.shape
    use_descriptor_scratch(q.device)
    launcher, meta = (_tuned(kernel, architecture()), {}) if config is None else (kernel, config.all_kwargs())
    launcher[grid](
        *inputs, *outputs, sm_scale * LOG2E, sm_scale,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), do.stride(0), do.stride(1), do.stride(2),
        outputs[0].stride(0), outputs[0].stride(1), outputs[0].stride(2),
        heads, heads // k.shape[1], n_ctx,
        HEAD_DIM=head_dim, CAUSAL=causal, DOT_PRECISION=dot_precision(q.dtype), **meta)
