"""Split-KV decoding attention in Triton: FlashDecoding, and FlashDecoding++'s asynchronized
softmax with a unified maximum, as two variants of one kernel.

At decode time each sequence brings 1 to 8 new queries and a long KV cache; parallelizing
over batch and heads alone leaves most SMs idle at batch 1. FlashDecoding splits each
sequence's cache into `num_splits` chunks, one program per (sequence, KV head, chunk), each
writing a partial output and its log-sum-exp; the last chunk of each (sequence, KV head)
to finish combines them in the same launch.

The program for KV head g loads every query that reads that head (the GROUP = H / H_KV query
heads times the Q new tokens) as the rows of one tile, so GQA reads K and V once and the
scores are a tensor-core dot even for a single query.

Variants of the chunk loop:
- "split-kv" (FlashDecoding): the online softmax; every tile updates a running maximum and
  rescales the accumulator by it.
- "async-softmax" (FlashDecoding++): every score is exponentiated against one fixed value phi
  (the unified maximum, chosen from the scores' statistics rather than computed), so tiles
  and chunks never rescale. It is exact whenever exp(score - phi) neither overflows nor
  underflows for the row's largest score; a chunk whose largest score leaves the safe window
  [phi + LOWER, phi + UPPER] recomputes itself with the online softmax (the paper's fallback),
  and says so in `fallbacks`.

Softmax runs in base 2 with the scale folded into one multiply (exp2 is one instruction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from implementations.triton_support import architecture, dot_precision

LOG2E = 1.4426950408889634
HEAD_DIMS = (16, 32, 64, 128, 256)
DTYPES = (torch.bfloat16, torch.float16, torch.float32)
VARIANTS = ("split-kv", "async-softmax")
MAX_SPLITS = 128
# exp(score - phi) must stay a normal number of the dtype p is rounded to for the P.V dot:
# float16 holds e^-9.7 .. e^11; bfloat16 and float32 hold e^-87 .. e^88, less headroom for
# summing up to 2^20 terms. Natural-log units.
SAFE_WINDOW = {torch.float16: (-8.0, 10.0), torch.bfloat16: (-60.0, 60.0), torch.float32: (-60.0, 60.0)}


@dataclass(frozen=True)
class DecodeConfig:
    """One launch shape: keys per tile, warps, pipeline depth, and programs aimed at per SM
    (the split count is chosen to reach sm_count * programs_per_sm programs)."""

    block_n: int
    warps: int
    stages: int
    programs_per_sm: int


# Hopper's won `python -m implementations.decoding.tune` on an H100 (bf16, 32 query over 8 KV
# heads, D128, CUDA-graph replay; 16 candidates, 64-key tiles within 3%): 32 keys x 4 warps x
# 3 stages at 2 programs per SM, which at batch 1 makes 32 chunks, few enough for the combine
# to read a KV head's partials as one register tile. The others are untuned starting points.
CONFIGS = {
    "interpreter": DecodeConfig(block_n=16, warps=4, stages=1, programs_per_sm=1),
    "sm90": DecodeConfig(block_n=32, warps=4, stages=3, programs_per_sm=2),
    "sm100": DecodeConfig(block_n=32, warps=4, stages=3, programs_per_sm=2),
    "sm80": DecodeConfig(block_n=64, warps=4, stages=3, programs_per_sm=4),
    "sm8x": DecodeConfig(block_n=64, warps=4, stages=2, programs_per_sm=4),
    "other": DecodeConfig(block_n=32, warps=4, stages=2, programs_per_sm=2),
}


def choose_splits(sequences_x_kv_heads: int, max_len: int, block_n: int, sm_count: int,
                  programs_per_sm: int) -> int:
    """Enough chunks per sequence that sequences x KV heads x chunks programs about fill the GPU
    (sm_count * programs_per_sm), but never a chunk shorter than one tile, nor more than
    MAX_SPLITS partials for the combine to read. Above 16 chunks the count rounds down to a
    power of two, so the combine's tile of partials has no padding and fits in registers
    (33 chunks would pad to 64 and fall back to a row-at-a-time combine); below, padding is
    cheap, and rounding 3 down to 2 would idle a third of the GPU."""
    wanted = triton.cdiv(sm_count * programs_per_sm, sequences_x_kv_heads)
    if wanted > 16:
        wanted = 1 << (wanted.bit_length() - 1)
    return max(1, min(wanted, triton.cdiv(max_len, block_n), MAX_SPLITS))


@triton.jit
def _load_tile(Cache, BlockTable, batch, kv_head, tokens, in_range, dims,
               stride_page, stride_token, stride_head, stride_table,
               PAGE_SIZE: tl.constexpr, PAGED: tl.constexpr):
    """[BLOCK_N, HEAD_DIM] of K or V: contiguous, the batch is the 'page' and PAGE_SIZE is
    unused; paged, each token's page is looked up in the block table."""
    if PAGED:
        page = tl.load(BlockTable + batch * stride_table + tokens // PAGE_SIZE, mask=in_range, other=0)
        rows = page.to(tl.int64) * stride_page + (tokens % PAGE_SIZE) * stride_token
    else:
        rows = batch.to(tl.int64) * stride_page + tokens.to(tl.int64) * stride_token
    offsets = rows[:, None] + kv_head * stride_head + dims[None, :]
    return tl.load(Cache + offsets, mask=in_range[:, None], other=0.0)


@triton.jit
def _chunk(q, K, V, BlockTable, batch, kv_head, start, end, visible_end, dims,
           stride_kp, stride_kt, stride_kh, stride_vp, stride_vt, stride_vh, stride_table,
           qk_scale, phi,
           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
           PAGE_SIZE: tl.constexpr, PAGED: tl.constexpr, UNIFIED_MAX: tl.constexpr,
           DOT_PRECISION: tl.constexpr):
    """Keys [start, end) against the query rows. Returns the unnormalized accumulator, the
    row sums and the row maxima m, such that the chunk's softmax output is acc / l and its
    log2-sum-exp is m + log2(l). With UNIFIED_MAX every exponent is taken against phi (m is
    then the largest score seen, for the caller's range check); else against the running max."""
    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)  # finite: rows with no visible key stay NaN-free
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for tile_start in range(start, end, BLOCK_N):
        tokens = tile_start + tl.arange(0, BLOCK_N)
        in_range = tokens < end
        k = _load_tile(K, BlockTable, batch, kv_head, tokens, in_range, dims, stride_kp, stride_kt, stride_kh,
                       stride_table, PAGE_SIZE, PAGED)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        s = tl.where(tokens[None, :] < visible_end[:, None], s, float("-inf"))
        v = _load_tile(V, BlockTable, batch, kv_head, tokens, in_range, dims, stride_vp, stride_vt, stride_vh,
                       stride_table, PAGE_SIZE, PAGED)
        if UNIFIED_MAX:
            m_i = tl.maximum(m_i, tl.max(s, 1))
            p = tl.math.exp2(s - phi).to(v.dtype)  # the row sum adds the p the product uses, rounded
            l_i += tl.sum(p.to(tl.float32), 1)
            acc = tl.dot(p, v, acc, input_precision=DOT_PRECISION)
        else:
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.math.exp2(m_i - m_new)
            p = tl.math.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
            m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _split_kv_kernel(
    Q, K, V, CacheLens, BlockTable, Out, PartialOut, PartialLse, Arrivals, Fallbacks,
    stride_qb, stride_qh, stride_qm,
    stride_kp, stride_kt, stride_kh, stride_vp, stride_vt, stride_vh, stride_table,
    qk_scale, phi, lowest, highest, num_splits,
    KV_HEADS: tl.constexpr, GROUP: tl.constexpr, QUERY_LEN: tl.constexpr, HEAD_DIM: tl.constexpr,
    PAGE_SIZE: tl.constexpr, PAGED: tl.constexpr, ASYNC_SOFTMAX: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    batch_kv = tl.program_id(0)
    split = tl.program_id(1)
    batch = batch_kv // KV_HEADS
    kv_head = batch_kv % KV_HEADS
    length = tl.load(CacheLens + batch)
    # Each sequence splits its own length, so short sequences of a ragged batch get short chunks.
    chunk = tl.cdiv(tl.cdiv(length, num_splits), BLOCK_N) * BLOCK_N
    start = split * chunk
    end = tl.minimum(start + chunk, length)

    # Row r is query token r % Q of query head kv_head * GROUP + r // Q.
    rows = tl.arange(0, BLOCK_M)
    row_valid = rows < GROUP * QUERY_LEN
    head = kv_head * GROUP + rows // QUERY_LEN
    query = rows % QUERY_LEN
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + batch.to(tl.int64) * stride_qb + head[:, None] * stride_qh + query[:, None] * stride_qm
                + dims[None, :], mask=row_valid[:, None], other=0.0)
    visible_end = length - QUERY_LEN + 1 + query  # query i sees keys < L - Q + 1 + i

    acc, l_i, m_i = _chunk(q, K, V, BlockTable, batch, kv_head, start, end, visible_end, dims,
                           stride_kp, stride_kt, stride_kh, stride_vp, stride_vt, stride_vh, stride_table,
                           qk_scale, phi, BLOCK_M, BLOCK_N, HEAD_DIM, PAGE_SIZE, PAGED, ASYNC_SOFTMAX,
                           DOT_PRECISION)
    fell_back = 0
    if ASYNC_SOFTMAX:
        seen = m_i > -1.0e29  # rows with at least one visible key in this chunk
        out_of_window = row_valid & seen & ((m_i - phi > highest) | (m_i - phi < lowest))
        fell_back = tl.max(out_of_window.to(tl.int32), 0)
        if fell_back > 0:
            acc, l_i, m_i = _chunk(q, K, V, BlockTable, batch, kv_head, start, end, visible_end, dims,
                                   stride_kp, stride_kt, stride_kh, stride_vp, stride_vt, stride_vh, stride_table,
                                   qk_scale, phi, BLOCK_M, BLOCK_N, HEAD_DIM, PAGE_SIZE, PAGED, False,
                                   DOT_PRECISION)
        else:
            m_i = tl.where(seen, phi, m_i)
    tl.store(Fallbacks + batch_kv * num_splits + split, fell_back)  # every flag written: a kept workspace holds stale ones

    # Partial rows are indexed like the output: ((batch * H + head) * Q + query, split).
    out_row = (batch * KV_HEADS * GROUP + head) * QUERY_LEN + query
    lse = tl.where(l_i > 0, m_i + tl.math.log2(l_i), float("-inf"))  # an empty chunk weighs nothing
    o = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(PartialLse + out_row * num_splits + split, lse, mask=row_valid)
    tl.store(PartialOut + (out_row[:, None] * num_splits + split) * HEAD_DIM + dims[None, :], o,
             mask=row_valid[:, None])

    # The last chunk of this (sequence, KV head) to finish combines all of them, so decoding is
    # one launch (a second launch costs more host time than a 32K-token cache takes to read).
    # The barrier completes every thread's stores before the release; the combine reads in a
    # fixed order, so which program arrives last does not change a bit of the output.
    tl.debug_barrier()
    arrived = tl.atomic_add(Arrivals + batch_kv, 1, sem="acq_rel", scope="gpu")
    if arrived == num_splits - 1:
        first_row = (batch * KV_HEADS + kv_head) * GROUP * QUERY_LEN  # this KV head's rows are consecutive
        _combine(PartialOut, PartialLse, Out, first_row, num_splits, GROUP * QUERY_LEN, BLOCK_R, HEAD_DIM, BLOCK_S)
        tl.atomic_xchg(Arrivals + batch_kv, 0)  # ready for the next call


@triton.jit
def _combine(PartialOut, PartialLse, Out, first_row, num_splits,
             ROWS: tl.constexpr, BLOCK_R: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr):
    """Out[row] = sum over chunks of softmax(lse)[chunk] * partial[chunk], for the ROWS
    consecutive output rows of one (sequence, KV head). The combine runs at the very end of
    the kernel, after every chunk, so its cost is latency: when the rows' partials fit in
    registers ([ROWS, BLOCK_S, HEAD_DIM] up to 16K floats) they are read in one go, their loads
    issued together; otherwise a row at a time."""
    splits = tl.arange(0, BLOCK_S)
    dims = tl.arange(0, HEAD_DIM)
    if BLOCK_R * BLOCK_S * HEAD_DIM <= 16384:
        r = tl.arange(0, BLOCK_R)
        rows = (first_row + r).to(tl.int64)
        live = (r[:, None] < ROWS) & (splits[None, :] < num_splits)
        lse = tl.load(PartialLse + rows[:, None] * num_splits + splits[None, :], mask=live, other=float("-inf"),
                      cache_modifier=".cg")
        partial = tl.load(PartialOut + (rows[:, None, None] * num_splits + splits[None, :, None]) * HEAD_DIM
                          + dims[None, None, :], mask=live[:, :, None], other=0.0, cache_modifier=".cg")
        weight = tl.math.exp2(lse - tl.max(lse, 1)[:, None])
        weight = weight / tl.sum(weight, 1)[:, None]
        out = tl.sum(weight[:, :, None] * partial, 1)
        tl.store(Out + rows[:, None] * HEAD_DIM + dims[None, :], out.to(Out.dtype.element_ty),
                 mask=r[:, None] < ROWS)
    else:
        for r in range(ROWS):
            row = (first_row + r).to(tl.int64)
            lse = tl.load(PartialLse + row * num_splits + splits, mask=splits < num_splits, other=float("-inf"),
                          cache_modifier=".cg")
            weight = tl.math.exp2(lse - tl.max(lse, 0))
            weight = weight / tl.sum(weight, 0)
            partial = tl.load(PartialOut + (row * num_splits + splits[:, None]) * HEAD_DIM + dims[None, :],
                              mask=splits[:, None] < num_splits, other=0.0, cache_modifier=".cg")
            tl.store(Out + row * HEAD_DIM + dims, tl.sum(weight[:, None] * partial, 0).to(Out.dtype.element_ty))


def workspace_size(batch: int, kv_heads: int, num_splits: int = MAX_SPLITS) -> int:
    """int32 elements of the zeroed workspace: an arrival counter per (sequence, KV head), then
    a fallback flag per chunk."""
    return batch * kv_heads * (1 + num_splits)


def unsupported_reason(head_dim: int, query_len: int, group: int, dtype: torch.dtype) -> str | None:
    if head_dim not in HEAD_DIMS:
        return f"head dim {head_dim} is not supported (accepted: {', '.join(map(str, HEAD_DIMS))})"
    if dtype not in DTYPES:
        return f"dtype {dtype} is not supported (accepted: bfloat16, float16, float32)"
    if group * query_len > 128:
        return f"{group} query heads per KV head x {query_len} queries = {group * query_len} rows; at most 128"
    return None


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache_lens: torch.Tensor,
                     block_table: torch.Tensor | None = None, *, variant: str = "split-kv",
                     sm_scale: float | None = None, unified_max: float = 0.0, num_splits: int | None = None,
                     config: DecodeConfig | None = None, return_fallbacks: bool = False,
                     workspace: torch.Tensor | None = None):
    """Decoding attention (see reference.decode_attention for the shapes and the masking).

    variant: "split-kv" (FlashDecoding) or "async-softmax" (FlashDecoding++, exponents
    against `unified_max`, natural-log units of the scaled scores). num_splits and config
    default to the heuristic and the architecture's tiling. With return_fallbacks, also
    returns the async variant's per-(sequence x KV head, chunk) int32 fallback flags.
    workspace: a zeroed int32 buffer of at least workspace_size(B, H_KV) elements, kept by the
    caller across calls as a serving engine keeps its own (the kernel leaves it zeroed); without
    one, every call zeroes a fresh buffer, one more launch on the GPU.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} (accepted: {', '.join(VARIANTS)})")
    if q.dim() != 4 or k.dim() != 4 or k.shape != v.shape:
        raise ValueError(f"expected q [B, H, Q, D] and k, v of one 4-d shape, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    batch, heads, query_len, head_dim = q.shape
    paged = block_table is not None
    kv_heads = k.shape[2] if paged else k.shape[1]
    if heads % kv_heads or k.shape[3] != head_dim:
        raise ValueError(f"k, v {tuple(k.shape)} do not match q {tuple(q.shape)} (H must be a multiple of H_KV)")
    if cache_lens.shape != (batch,):
        raise ValueError(f"cache_lens must have shape ({batch},), got {tuple(cache_lens.shape)}")
    if paged and (block_table.dim() != 2 or block_table.shape[0] != batch):
        raise ValueError(f"block_table must be [{batch}, pages per sequence], got {tuple(block_table.shape)}")
    if not paged and k.shape[0] != batch:
        raise ValueError(f"a contiguous cache must be [{batch}, H_KV, N, D] for q's batch of {batch}, got {tuple(k.shape)}")
    if num_splits is not None and num_splits < 1:
        raise ValueError(f"num_splits must be at least 1, got {num_splits}")
    reason = unsupported_reason(head_dim, query_len, heads // kv_heads, q.dtype)
    if reason:
        raise ValueError(reason)
    capacity = block_table.shape[1] * k.shape[1] if paged else k.shape[2]
    config = config or CONFIGS[architecture()]
    if num_splits is None:
        sm_count = torch.cuda.get_device_properties(q.device).multi_processor_count if q.is_cuda else 8
        num_splits = choose_splits(batch * kv_heads, capacity, config.block_n, sm_count, config.programs_per_sm)

    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if cache_lens.dtype != torch.int32 or cache_lens.stride(0) != 1:
        cache_lens = cache_lens.to(torch.int32).contiguous()
    group = heads // kv_heads
    rows = batch * heads * query_len
    out = torch.empty(batch, heads, query_len, head_dim, device=q.device, dtype=q.dtype)
    partial_out = torch.empty(rows, num_splits, head_dim, device=q.device, dtype=torch.float32)
    partial_lse = torch.empty(rows, num_splits, device=q.device, dtype=torch.float32)
    # One zeroed buffer: the arrival counters, then (async variant) the fallback flags.
    needed = workspace_size(batch, kv_heads, num_splits)
    if workspace is None:
        counters = torch.zeros(needed, device=q.device, dtype=torch.int32)
    elif workspace.dtype != torch.int32 or workspace.numel() < needed or workspace.device != q.device:
        raise ValueError(f"workspace must be a zeroed int32 tensor of at least {needed} elements on {q.device}, "
                         f"got {workspace.dtype}, {workspace.numel()} on {workspace.device}")
    else:
        counters = workspace
    sequences_x_heads = batch * kv_heads
    arrivals = counters[:sequences_x_heads]
    fallbacks = counters[sequences_x_heads:needed].view(sequences_x_heads, num_splits)
    if paged:
        table = block_table  # the kernel steps along a row of the table with unit stride
        if table.dtype != torch.int32 or table.stride(1) != 1:
            table = table.to(torch.int32).contiguous()
        page_size, k_strides, v_strides = k.shape[1], (k.stride(0), k.stride(1), k.stride(2)), (v.stride(0), v.stride(1), v.stride(2))
    else:
        table = cache_lens  # never read
        page_size, k_strides, v_strides = 1, (k.stride(0), k.stride(2), k.stride(1)), (v.stride(0), v.stride(2), v.stride(1))
    lowest, highest = SAFE_WINDOW[q.dtype]
    scale = 1.0 / math.sqrt(head_dim) if sm_scale is None else sm_scale
    _split_kv_kernel[(batch * kv_heads, num_splits)](
        q, k, v, cache_lens, table, out, partial_out, partial_lse, arrivals, fallbacks,
        q.stride(0), q.stride(1), q.stride(2), *k_strides, *v_strides, table.stride(0),
        scale * LOG2E, unified_max * LOG2E, lowest * LOG2E, highest * LOG2E, num_splits,
        KV_HEADS=kv_heads, GROUP=group, QUERY_LEN=query_len, HEAD_DIM=head_dim,
        PAGE_SIZE=page_size, PAGED=paged, ASYNC_SOFTMAX=variant == "async-softmax",
        BLOCK_M=max(16, triton.next_power_of_2(group * query_len)), BLOCK_N=config.block_n,
        BLOCK_R=triton.next_power_of_2(group * query_len),
        BLOCK_S=triton.next_power_of_2(num_splits), DOT_PRECISION=dot_precision(q.dtype),
        num_warps=config.warps, num_stages=config.stages,
    )
    return (out, fallbacks) if return_fallbacks else out
