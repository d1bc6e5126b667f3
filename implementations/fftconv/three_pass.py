"""The three passes of the Monarch FFT convolution above FUSED_MAX_L: L = N1 x M (M = N2 N3).

A row is read as an [N1, M] array. The column pass applies F1 @ (the N1-point DFTs down its
columns, BLOCK_M of them at a time) and the twiddles W_L^(m k1); the row pass runs the
in-register transform, the filter's product and the inverse (tiles.row_transform) on each of
its N1 rows; the inverse column pass mirrors the first (conjugate twiddles, conj(F1) @) and
writes y. The passes meet in a scratch of the operand dtype: float16 for 16-bit inputs (for
a pair of rows of N tokens, 2N complex elements, 8N bytes, each written and read twice),
float32 for float32.

Scales (16-bit inputs). Each row is first brought to a fixed norm (row_scale: PAIRED_ROW_NORM
a row of a pair, HEADROOM a lone row), so the complex row has norm HEADROOM and, the column
DFTs being unitary, no scratch element exceeds it. The row pass takes each of its rows at that
scale (a norm and scale of its own per row cost 17% of the pass for no gain in error) and
divides the filter's product by KMAX; it stores its result still divided by KMAX, which keeps
it within the row's norm, and the inverse column pass multiplies KMAX back in with the row's
scale.

Orientation. The column forward pass holds its block transposed ([BLOCK_M, N1]) and the row
pass its tile ([N3, N2], tiles.row_transform), so their products have BLOCK_M or N3 rows and
run as Hopper's warpgroup MMA; the inverse column pass keeps [N1, BLOCK_M], which timed
faster (H100: 220 against 249 us at 16K).

Three kernels, one program per (pair of) rows and column block or row k1. One persistent
kernel taking (pairs of) rows in turn through all three passes, in a scratch of its own small
enough for L2, was 1.3-2.5x slower on the H100 (docs/results/fftconv.md): each program runs
its passes one after another, with the SM's few warps waiting on each.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from implementations.fftconv.monarch import io_rows
from implementations.fftconv.tiles import HEADROOM, PAIRED_ROW_NORM, cdot, input_row, load_pair, output_row, row_transform


@triton.jit
def _row_scale_kernel(U, W, RowScale, batch, length, target, stride_ub, stride_uc, stride_wb, stride_wc,
                      BLOCK: tl.constexpr, GATED: tl.constexpr):
    """RowScale[c batch + b] = target / |x| for row (b, c) of x = u (or u * w). The squares are
    summed in float64, whose range holds the square of any float32 (bfloat16-range squares
    overflow float32), lane by lane, with one reduction at the end: a reduction a block, or
    rescaling by the largest value seen so far (LAPACK's nrm2), held the loads up (H100: 54 us,
    76% of DRAM bandwidth, at 16K plain)."""
    pid = tl.program_id(0)
    b = (pid % batch).to(tl.int64)
    ch = (pid // batch).to(tl.int64)
    sum_sq = tl.zeros([BLOCK], dtype=tl.float64)
    for start in range(0, length, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        x = input_row(U, W, b, ch, stride_ub, stride_uc, stride_wb, stride_wc, offsets, offsets < length, GATED)
        x = x.to(tl.float64)
        sum_sq += x * x
    n = tl.sqrt(tl.sum(sum_sq, 0)).to(tl.float32)
    tl.store(RowScale + pid, target / tl.where(n > 0.0, n, 1.0))


@triton.jit
def _row_scale(RowScale, ch, b, batch, ROW_SCALED: tl.constexpr):
    scale = 1.0
    if ROW_SCALED:
        scale = tl.load(RowScale + ch * batch + tl.minimum(b, batch - 1))
    return scale


@triton.jit
def _item(S, groups, SCRATCH: tl.constexpr, PAIRED: tl.constexpr):
    """This program's work item (program_id 0) -> (b, ch, its scratch of SCRATCH elements in
    S): (pairs of) rows in channel-major order, so a channel's rows share its spectrum in L2;
    64-bit, since B C N may pass 2^31."""
    item = tl.program_id(0)
    ch = (item // groups).to(tl.int64)
    b = ((item % groups) * (2 if PAIRED else 1)).to(tl.int64)
    return b, ch, S + item.to(tl.int64) * SCRATCH


@triton.jit
def _column_block(N1: tl.constexpr, N1_IO: tl.constexpr, BLOCK_M: tl.constexpr):
    """The column kernels' indices: k1 (all N1 rows), n1 (the first N1_IO) and this program's
    BLOCK_M columns m (program_id 1)."""
    return tl.arange(0, N1), tl.arange(0, N1_IO), tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)


@triton.jit
def _outer_twiddles(TwLane, TwBlock, k1, m, N1: tl.constexpr, M: tl.constexpr, BLOCK_M: tl.constexpr):
    """W_L^(m k1) for the broadcastable index tiles k1 and m (this program's columns m = j
    BLOCK_M + lane, program_id 1 being j), as W_L^(lane k1) from a [N1, BLOCK_M] table times
    W_L^(j BLOCK_M k1) from a [M / BLOCK_M, N1] one: every program reads the same lane table,
    which stays in L1, where a whole [N1, M] table came from L2 at the scratch's bytes again
    (float32 tables, on the H100: within 2% of each other; docs/results/fftconv.md)."""
    lane_re, lane_im = load_pair(TwLane, k1 * BLOCK_M + m % BLOCK_M, N1 * BLOCK_M)
    block_re, block_im = load_pair(TwBlock, tl.program_id(1) * N1 + k1, M // BLOCK_M * N1)
    return lane_re * block_re - lane_im * block_im, lane_re * block_im + lane_im * block_re


@triton.jit
def _column_forward_kernel(U, W, S, RowScale, F1, TwLane, TwBlock, batch, groups, length, stride_ub, stride_uc,
                           stride_wb, stride_wc, N1: tl.constexpr, N1_IO: tl.constexpr, M: tl.constexpr, BLOCK_M: tl.constexpr,
                           PAIRED: tl.constexpr, GATED: tl.constexpr, ROW_SCALED: tl.constexpr,
                           PRECISION: tl.constexpr):
    """Columns [j BLOCK_M, (j + 1) BLOCK_M) of the [N1, M] view of row (b, c), or PAIRED of
    rows b and b + 1 as one complex row (work item i = program (i, j)): F1 @ (contracting n1
    over the first N1_IO rows: N1 / 2 where that is at least 16, the rest being zero padding),
    times W_L^(m k1), into the item's scratch."""
    b, ch, scratch = _item(S, groups, 2 * N1 * M, PAIRED)
    k1, n1, m = _column_block(N1, N1_IO, BLOCK_M)
    n = n1[None, :] * M + m[:, None]  # [BLOCK_M, N1_IO]: held transposed, as tiles.row_transform's
    operand = F1.dtype.element_ty
    x = input_row(U, W, b, ch, stride_ub, stride_uc, stride_wb, stride_wc, n, n < length, GATED)
    xr = (x * _row_scale(RowScale, ch, b, batch, ROW_SCALED)).to(operand)
    f_re = tl.load(F1 + n1[:, None] * N1 + k1[None, :])  # F1[:N1_IO, :] (a DFT matrix is symmetric)
    f_im = tl.load(F1 + N1 * N1 + n1[:, None] * N1 + k1[None, :])
    if PAIRED:
        partner = n < tl.where(b + 1 < batch, length, 0)  # row b + 1, if there is one
        x2 = input_row(U, W, b + 1, ch, stride_ub, stride_uc, stride_wb, stride_wc, n, partner, GATED)
        xi = (x2 * _row_scale(RowScale, ch, b + 1, batch, ROW_SCALED)).to(operand)
        zr, zi = cdot(xr, xi, f_re, f_im, PRECISION)
    else:
        zr = tl.dot(xr, f_re, input_precision=PRECISION)
        zi = tl.dot(xr, f_im, input_precision=PRECISION)
    tile = k1[None, :] * M + m[:, None]
    t_re, t_im = _outer_twiddles(TwLane, TwBlock, k1[None, :], m[:, None], N1, M, BLOCK_M)
    tl.store(scratch + tile, (zr * t_re - zi * t_im).to(scratch.dtype.element_ty))
    tl.store(scratch + N1 * M + tile, (zr * t_im + zi * t_re).to(scratch.dtype.element_ty))


@triton.jit
def _row_pass_kernel(S, KF, KMAX, F2, F3, TW, groups, N1: tl.constexpr, N2: tl.constexpr, N3: tl.constexpr,
                     CHUNK: tl.constexpr, PAIRED: tl.constexpr, SCALE: tl.constexpr, PRECISION: tl.constexpr):
    """Row k1 of item i's scratch (program (i, k1)) through row_transform, in place; with SCALE,
    its result is left divided by KMAX (the inverse column pass multiplies it back). The row
    is taken at the scale the column pass gave it: its elements are within HEADROOM already,
    and float16 keeps its relative precision down to 2^-26 of that (a row that small adds no
    more than that to the item's norm), so it needs no scale, nor norm, of its own."""
    M: tl.constexpr = N2 * N3
    _, ch, scratch = _item(S, groups, 2 * N1 * M, PAIRED)
    k1 = tl.program_id(1)
    row = scratch + k1 * M
    tile = tl.arange(0, N3)[:, None] + tl.arange(0, N2)[None, :] * N3  # transposed: tiles.row_transform
    xr = tl.load(row + tile)  # the scratch holds the operand dtype
    xi = tl.load(row + N1 * M + tile)
    filter_scale = 1.0
    if SCALE:
        filter_scale = tl.load(KMAX + ch)
        filter_scale = 1.0 / tl.where(filter_scale > 0.0, filter_scale, 1.0)
    out_r, out_i = row_transform(xr, xi, KF + ch * (2 * N1 * M) + k1 * M, filter_scale, F2, F3, TW, N1, N2, N3, N2,
                                 CHUNK, True, PRECISION)
    tl.debug_barrier()  # every thread has read the row before any thread overwrites it
    tl.store(row + tile, out_r.to(scratch.dtype.element_ty))
    tl.store(row + N1 * M + tile, out_i.to(scratch.dtype.element_ty))


@triton.jit
def _column_inverse_kernel(S, V, Y, RowScale, KMAX, F1, TwLane, TwBlock, batch, groups, length, stride_vb, stride_vc,
                           stride_yb, stride_yc, N1: tl.constexpr, N1_IO: tl.constexpr, M: tl.constexpr, BLOCK_M: tl.constexpr,
                           PAIRED: tl.constexpr, GATED: tl.constexpr, SCALE: tl.constexpr,
                           ROW_SCALED: tl.constexpr, PRECISION: tl.constexpr):
    """The inverse column pass on columns [j BLOCK_M, (j + 1) BLOCK_M) of item i (program (i,
    j)): conj twiddles, conj(F1) @ (contracting k1; only the first N1_IO output rows), the
    scales undone, the gate v, into y: the real part, or PAIRED the real part into row b and
    the imaginary part into row b + 1."""
    b, ch, scratch = _item(S, groups, 2 * N1 * M, PAIRED)
    k1, n1, m = _column_block(N1, N1_IO, BLOCK_M)
    tile = k1[:, None] * M + m[None, :]
    operand = F1.dtype.element_ty
    zr, zi = load_pair(scratch, tile, N1 * M)
    t_re, t_im = _outer_twiddles(TwLane, TwBlock, k1[:, None], m[None, :], N1, M, BLOCK_M)
    ar = (zr * t_re + zi * t_im).to(operand)  # within HEADROOM with SCALE: twiddles keep magnitudes
    ai = (zi * t_re - zr * t_im).to(operand)
    f_re = tl.load(F1 + n1[:, None] * N1 + k1[None, :])
    f_im = tl.load(F1 + N1 * N1 + n1[:, None] * N1 + k1[None, :])
    unscale = 1.0
    if SCALE:
        unscale = tl.load(KMAX + ch)
    n = n1[:, None] * M + m[None, :]
    if PAIRED:
        y, y2 = cdot(f_re, -f_im, ar, ai, PRECISION)  # Re and Im of conj(F1) @ Z
        partner = n < tl.where(b + 1 < batch, length, 0)  # row b + 1, if there is one
        y2 *= unscale / _row_scale(RowScale, ch, b + 1, batch, ROW_SCALED)
        output_row(Y, V, b + 1, ch, stride_yb, stride_yc, stride_vb, stride_vc, n, partner, y2, GATED)
    else:
        y = tl.dot(f_re, ar, input_precision=PRECISION)
        y = tl.dot(f_im, ai, y, input_precision=PRECISION)
    y *= unscale / _row_scale(RowScale, ch, b, batch, ROW_SCALED)
    output_row(Y, V, b, ch, stride_yb, stride_yc, stride_vb, stride_vc, n, n < length, y, GATED)


def three_pass(u: torch.Tensor, v: torch.Tensor, w: torch.Tensor, y: torch.Tensor, prepared, paired: bool,
               gated: bool, scale: bool, precision: str) -> None:
    """y = the convolution of u (gated: v * conv(u * w)) by `prepared`'s three-factor plan
    (triton_fftconv.fftconv's arguments)."""
    plan = prepared.plan
    batch, channels, length = u.shape
    groups = triton.cdiv(batch, 2) if paired else batch
    items = groups * channels
    m = plan.n2 * plan.n3
    strides = (u.stride(0), u.stride(1), w.stride(0), w.stride(1), v.stride(0), v.stride(1), y.stride(0), y.stride(1))
    row_scaled = paired or scale
    row_scale = y  # never read unless row_scaled
    if row_scaled:  # each row brought to one norm before its transform
        row_scale = torch.empty(batch * channels, device=u.device, dtype=torch.float32)
        target = (PAIRED_ROW_NORM if paired else HEADROOM).value if scale else 1.0
        _row_scale_kernel[(batch * channels,)](u, w, row_scale, batch, length, target, *strides[:4], BLOCK=2048,
                                               GATED=gated)
    sizes = dict(N1=plan.n1, N1_IO=io_rows(plan.n1), BLOCK_M=plan.block_m, PAIRED=paired, GATED=gated,
                 PRECISION=precision)
    operand = prepared.f1.dtype
    scratch = torch.empty(items, 2, plan.n1, m, device=u.device, dtype=operand)
    columns = (items, m // plan.block_m)
    _column_forward_kernel[columns](
        u, w, scratch, row_scale, prepared.f1, *prepared.outer_twiddles, batch, groups, length, *strides[:4], M=m,
        ROW_SCALED=row_scaled, **sizes, num_warps=plan.column_warps)
    _row_pass_kernel[(items, plan.n1)](
        scratch, prepared.k_f, prepared.k_max, prepared.f2, prepared.f3, prepared.inner_twiddles, groups, N1=plan.n1,
        N2=plan.n2, N3=plan.n3, CHUNK=plan.rows_per_pass, PAIRED=paired, SCALE=scale, PRECISION=precision,
        num_warps=plan.num_warps, num_stages=plan.num_stages, **plan.register_cap())
    _column_inverse_kernel[columns](
        scratch, v, y, row_scale, prepared.k_max, prepared.f1, *prepared.outer_twiddles, batch, groups, length,
        *strides[4:], M=m, SCALE=scale, ROW_SCALED=row_scaled, **sizes, num_warps=plan.column_warps)

