"""FlashFFTConv's long convolution in Triton: the FFT of length L = N1 x N2 x N3 written as
matrix products with small DFT matrices (a Monarch decomposition), so the transforms run on
tensor cores and the product with the filter's spectrum and Hyena's gates are fused in.

The convolution (reference.py): y = irfft(rfft(x, L) * rfft(k, L))[:N] with x = u (or u * w,
then y * v) and L >= 2N a power of two, so the circular convolution is the causal one.

The decomposition (index convention, plans, the DFT factors, twiddles and the filter's
spectrum in kernel order) is monarch.py's. Up to FUSED_MAX_L one kernel runs the whole
convolution of a row on an [N2, N3] tile; above, two column kernels around it make the
outer N1-point level, through a float32 scratch: three passes over a row, where torch.fft's
rfft, product and irfft each make at least one (and cuFFT several, at these lengths).

Two rows a transform. Rows b and b + 1 of a channel share its filter, and the filter is real,
so conv(x_b + i x_{b+1}) = conv(x_b) + i conv(x_{b+1}): one complex transform does both rows,
its result's real part row b's and its imaginary part row b + 1's (FlashFFTConv's packing).
Each row is first scaled to the same norm, so the roundings of the shared complex tiles are
relative to both rows alike. A batch of one (or a plan with paired=False) runs a real row alone.

Real and imaginary parts are separate real tiles: a complex product is 4 real tl.dot (a lone
real row's first product and its real output's last, 2). The input is real and its second
half is zero padding, so the first product reads only the first half of the input rows (N2/2
or N1/2 of them, when that is at least tl.dot's 16), and only the first half of the output
rows is computed and stored.

Precision. The DFT factors are unitary (each scaled by 1/sqrt(n)), so every stage preserves
a row's L2 norm; the filter's spectrum is unscaled. fp32 inputs use fp32 factors and true
fp32 dots (triton_support.dot_precision). bf16 and fp16 inputs use float16 factors and
operands on the tensor cores, with float32 accumulation, twiddles and products: float16 has
3 more mantissa bits than bfloat16, so the kernel's many roundings (about 10 against the
reference's 4) stay small beside bfloat16's; to keep bfloat16's range, each tile is scaled
before it is rounded to float16, and the dot's float32 result scaled back. The column kernels
scale each block by its largest magnitude (a max-reduction), or, paired, each row by the
RowScale a norm kernel computed first. The row kernel scales once a row:
its input so that the row's L2 norm is HEADROOM, and the filter's product by 1 / KMAX (the
channel's largest spectral magnitude); its DFT stages are unitary and its twiddles of unit
modulus, so no element of any later stage exceeds HEADROOM, and every rounding is a plain
cast (a max-reduction before each of its three roundings a pass cost six reductions a pass).
OPERAND says which dtype each input dtype uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from implementations.fftconv.monarch import Plan, dft_factor, filter_spectrum, make_plan, twiddles, unsupported_reason
from implementations.triton_support import dot_precision

OPERAND = {torch.bfloat16: torch.float16, torch.float16: torch.float16, torch.float32: torch.float32}
# The bound on a tile's magnitudes before its float16 rounding: far below 65504 (the stages'
# own roundings may pass a norm's bound by a part in a thousand), and values 2^-26 of it still
# normal (float16's smallest normal is 2^-14), since a norm can be sqrt(M) = 128 times a tile's
# largest element.
HEADROOM = tl.constexpr(4096.0)
# Each row of a pair is brought to this norm, so the pair's complex row has norm HEADROOM.
PAIRED_ROW_NORM = tl.constexpr(HEADROOM.value * 0.70710678)


# --- the kernels ------------------------------------------------------------------------------


@triton.jit
def _operand(xr, xi, F, SCALE: tl.constexpr):
    """(xr, xi) rounded to the dot's operand dtype (that of the DFT factor F), and the factor
    the dot's result is to be multiplied by. With SCALE (float16 operands) the pair is first
    scaled so its largest magnitude is HEADROOM, so any float32 value fits float16's range."""
    unscale = 1.0
    if SCALE:
        peak = tl.maximum(tl.max(tl.max(tl.abs(xr), axis=1), axis=0), tl.max(tl.max(tl.abs(xi), axis=1), axis=0))
        peak = tl.where(peak > 0.0, peak, 1.0)
        xr = xr * (HEADROOM / peak)
        xi = xi * (HEADROOM / peak)
        unscale = peak / HEADROOM
    return xr.to(F.dtype.element_ty), xi.to(F.dtype.element_ty), unscale


@triton.jit
def _real_operand(x, F, SCALE: tl.constexpr):
    unscale = 1.0
    if SCALE:
        peak = tl.max(tl.max(tl.abs(x), axis=1), axis=0)
        peak = tl.where(peak > 0.0, peak, 1.0)
        x = x * (HEADROOM / peak)
        unscale = peak / HEADROOM
    return x.to(F.dtype.element_ty), unscale


@triton.jit
def _norm(x):
    """The L2 norm of the tile x, summed on x divided by its largest magnitude (the squares of
    bfloat16-range values overflow float32)."""
    peak = tl.max(tl.abs(x))
    peak = tl.where(peak > 0.0, peak, 1.0)
    x = x / peak
    return peak * tl.sqrt(tl.sum(x * x))


@triton.jit
def _cdot(ar, ai, br, bi, PRECISION: tl.constexpr):
    """(ar + i ai) @ (br + i bi) with four real dots, accumulated in float32."""
    re = tl.dot(ar, br, input_precision=PRECISION)
    re = tl.dot(-ai, bi, re, input_precision=PRECISION)
    im = tl.dot(ar, bi, input_precision=PRECISION)
    im = tl.dot(ai, br, im, input_precision=PRECISION)
    return re, im


@triton.jit
def _load_pair(ptr, offsets, plane):
    """The real and imaginary planes of a [2, ...] table at `offsets`."""
    return tl.load(ptr + offsets), tl.load(ptr + plane + offsets)


@triton.jit
def _input_row(U, W, b, ch, stride_ub, stride_uc, stride_wb, stride_wc, offsets, live, GATED: tl.constexpr):
    """Row (b, ch) of x = u (or u * w) at `offsets`, in float32."""
    x = tl.load(U + b * stride_ub + ch * stride_uc + offsets, mask=live, other=0.0).to(tl.float32)
    if GATED:
        x *= tl.load(W + b * stride_wb + ch * stride_wc + offsets, mask=live, other=0.0).to(tl.float32)
    return x


@triton.jit
def _output_row(Y, V, b, ch, stride_yb, stride_yc, stride_vb, stride_vc, offsets, live, y, GATED: tl.constexpr):
    """y (times v) into row (b, ch) of Y at `offsets`."""
    if GATED:
        y *= tl.load(V + b * stride_vb + ch * stride_vc + offsets, mask=live, other=0.0).to(tl.float32)
    tl.store(Y + b * stride_yb + ch * stride_yc + offsets, y.to(Y.dtype.element_ty), mask=live)


@triton.jit
def _row_kernel(U, W, V, Y, S, KF, KMAX, F2, F3, TW, batch, groups, length,
                stride_ub, stride_uc, stride_wb, stride_wc, stride_vb, stride_vc, stride_yb, stride_yc,
                N1: tl.constexpr, N2: tl.constexpr, N3: tl.constexpr, M: tl.constexpr, N2_IO: tl.constexpr,
                CHUNK: tl.constexpr, FUSED: tl.constexpr, PAIRED: tl.constexpr, COMPLEX: tl.constexpr,
                GATED: tl.constexpr, SCALE: tl.constexpr, PRECISION: tl.constexpr):
    """One length-M (= N2 N3) transform, product with the filter's spectrum and inverse, on a
    [N2, N3] tile. FUSED (N1 = 1): the whole convolution of row (b, c), from u (and w) to y
    (and v), reading and writing only the first N2_IO rows (N2 / 2 where that is at least 16:
    the rest is zero padding, or outputs past N); PAIRED, of rows b and b + 1 at once, as the
    real and imaginary parts of one complex row. Else: row k1 of the scratch S
    [groups x C, 2, N1, M] that the column kernels read and write (N2_IO = N2). COMPLEX (PAIRED,
    or a scratch row): the first product's operand and the last product's result are complex."""
    pid = tl.program_id(0)  # (pairs of) rows in channel-major order: a channel's rows share its spectrum
    group = pid % groups  # a row, or PAIRED a pair of rows b, b + 1
    ch = (pid // groups).to(tl.int64)  # 64-bit offsets: B C N may pass 2^31
    b = (group * (2 if PAIRED else 1)).to(tl.int64)
    k1 = tl.program_id(1)
    rows = tl.arange(0, N2)
    io_rows = tl.arange(0, N2_IO)
    cols = tl.arange(0, N3)
    tile = rows[:, None] * N3 + cols[None, :]
    io_tile = io_rows[:, None] * N3 + cols[None, :]
    scratch = S + pid.to(tl.int64) * (2 * N1 * M) + k1 * M
    out_r = tl.zeros([N2_IO, N3], dtype=tl.float32)
    out_i = tl.zeros([N2_IO, N3], dtype=tl.float32)

    # The operand of the first product: u (times w) of one row, real, or of two rows as one
    # complex row; or row k1 of the scratch. Its scales: SCALE, the tile's norm becomes
    # HEADROOM and the filter's product is divided by KMAX, so every later rounding is a plain
    # cast; PAIRED, each row of the pair is brought to the same norm first, so neither row's
    # roundings are set by the other's magnitude. The output is scaled back once, at the end.
    scale_r = 1.0
    scale_i = 1.0
    filter_scale = 1.0
    if FUSED:
        live = io_tile < length
        xr = _input_row(U, W, b, ch, stride_ub, stride_uc, stride_wb, stride_wc, io_tile, live, GATED)
        if PAIRED:
            partner = io_tile < tl.where(b + 1 < batch, length, 0)  # row b + 1, if there is one
            xi = _input_row(U, W, b + 1, ch, stride_ub, stride_uc, stride_wb, stride_wc, io_tile, partner, GATED)
            target = PAIRED_ROW_NORM if SCALE else 1.0
            norm_r = _norm(xr)
            norm_i = _norm(xi)
            scale_r = target / tl.where(norm_r > 0.0, norm_r, 1.0)
            scale_i = target / tl.where(norm_i > 0.0, norm_i, 1.0)
        elif SCALE:
            norm = _norm(xr)
            scale_r = HEADROOM / tl.where(norm > 0.0, norm, 1.0)
    else:
        xr, xi = _load_pair(scratch, tile, N1 * M)
        if SCALE:
            norm_r = _norm(xr)
            norm_i = _norm(xi)
            norm = tl.sqrt(norm_r * norm_r + norm_i * norm_i)
            scale_r = HEADROOM / tl.where(norm > 0.0, norm, 1.0)
            scale_i = scale_r
    if SCALE:
        filter_scale = tl.load(KMAX + ch)
        filter_scale = 1.0 / tl.where(filter_scale > 0.0, filter_scale, 1.0)
    operand = F2.dtype.element_ty
    xr_s = (xr * scale_r).to(operand)
    if COMPLEX:
        xi_s = (xi * scale_i).to(operand)

    # CHUNK rows k2 of the spectrum at a time (all N2 when CHUNK = N2): each goes through the
    # twiddles, @ F3, the filter's product, @ conj(F3) and the conjugate twiddles on its own,
    # and the last product, conj(F2) @, sums the chunks' contributions. Fewer live registers
    # than the whole [N2, N3] tile at once, for the same arithmetic.
    for c0 in range(0, N2, CHUNK):
        ks = c0 + tl.arange(0, CHUNK)
        chunk = ks[:, None] * N3 + cols[None, :]
        # Forward: F2 @ Z contracts n2 (rows k2 out), the twiddles, @ F3 contracts n3 (columns k3 out).
        f_re, f_im = _load_pair(F2, ks[:, None] * N2 + io_rows[None, :], N2 * N2)  # F2[ks, :N2_IO]
        if COMPLEX:
            zr, zi = _cdot(f_re, f_im, xr_s, xi_s, PRECISION)
        else:
            zr = tl.dot(f_re, xr_s, input_precision=PRECISION)
            zi = tl.dot(f_im, xr_s, input_precision=PRECISION)
        t_re, t_im = _load_pair(TW, chunk, M)
        zr, zi = zr * t_re - zi * t_im, zr * t_im + zi * t_re
        g_re, g_im = _load_pair(F3, cols[:, None] * N3 + cols[None, :], N3 * N3)
        zr, zi = _cdot(zr.to(operand), zi.to(operand), g_re, g_im, PRECISION)

        # The filter's spectrum, in the same digit-reversed order; the product in float32.
        k_f = KF + ch * (2 * N1 * M) + k1 * M
        kr, ki = _load_pair(k_f, chunk, N1 * M)
        kr = kr.to(tl.float32) * filter_scale
        ki = ki.to(tl.float32) * filter_scale
        zr, zi = zr * kr - zi * ki, zr * ki + zi * kr

        # Inverse: @ conj(F3), the conjugate twiddles, conj(F2) @ (natural order again). The
        # factors and twiddles are loaded again (from L2) rather than kept live across the product.
        g_re, g_im = _load_pair(F3, cols[:, None] * N3 + cols[None, :], N3 * N3)
        zr, zi = _cdot(zr.to(operand), zi.to(operand), g_re, -g_im, PRECISION)
        t_re, t_im = _load_pair(TW, chunk, M)
        zr, zi = zr * t_re + zi * t_im, zi * t_re - zr * t_im
        ar = zr.to(operand)
        ai = zi.to(operand)
        f_re, f_im = _load_pair(F2, io_rows[:, None] * N2 + ks[None, :], N2 * N2)  # F2[:N2_IO, ks]
        if COMPLEX:
            part_r, part_i = _cdot(f_re, -f_im, ar, ai, PRECISION)
            out_r += part_r
            out_i += part_i
        else:
            # One real row: only the real part is wanted, Re(conj(F2) @ E) = F2r @ Er + F2i @ Ei.
            out_r = tl.dot(f_re, ar, out_r, input_precision=PRECISION)
            out_r = tl.dot(f_im, ai, out_r, input_precision=PRECISION)

    out_r *= 1.0 / (scale_r * filter_scale)
    if FUSED:
        _output_row(Y, V, b, ch, stride_yb, stride_yc, stride_vb, stride_vc, io_tile, live, out_r, GATED)
        if PAIRED:
            out_i *= 1.0 / (scale_i * filter_scale)
            _output_row(Y, V, b + 1, ch, stride_yb, stride_yc, stride_vb, stride_vc, io_tile, partner, out_i, GATED)
    else:
        out_i *= 1.0 / (scale_i * filter_scale)
        tl.store(scratch + tile, out_r)
        tl.store(scratch + N1 * M + tile, out_i)


@triton.jit
def _row_scale_kernel(U, W, RowScale, batch, length, target, stride_ub, stride_uc, stride_wb, stride_wc,
                      BLOCK: tl.constexpr, GATED: tl.constexpr):
    """RowScale[c batch + b] = target / |x| for row (b, c) of x = u (or u * w): the scale the
    paired column kernel brings each row to before two rows share one complex row. The norm
    is summed as LAPACK's nrm2 does, on values divided by the largest seen so far, so the
    squares of bfloat16-range values cannot overflow."""
    pid = tl.program_id(0)
    b = (pid % batch).to(tl.int64)
    ch = (pid // batch).to(tl.int64)
    peak = 0.0
    sum_sq = 0.0  # of x / peak
    for start in range(0, length, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        x = tl.abs(_input_row(U, W, b, ch, stride_ub, stride_uc, stride_wb, stride_wc, offsets, offsets < length,
                              GATED))
        new_peak = tl.maximum(peak, tl.max(x, 0))
        ratio = tl.where(new_peak > 0.0, peak / new_peak, 0.0)
        x = x / tl.where(new_peak > 0.0, new_peak, 1.0)
        sum_sq = sum_sq * ratio * ratio + tl.sum(x * x, 0)
        peak = new_peak
    norm = peak * tl.sqrt(sum_sq)
    tl.store(RowScale + pid, target / tl.where(norm > 0.0, norm, 1.0))


@triton.jit
def _column_forward_kernel(U, W, S, RowScale, F1, TW, batch, groups, length, stride_ub, stride_uc, stride_wb, stride_wc,
                           N1: tl.constexpr, N1_IO: tl.constexpr, M: tl.constexpr, BLOCK_M: tl.constexpr,
                           PAIRED: tl.constexpr, GATED: tl.constexpr, SCALE: tl.constexpr, PRECISION: tl.constexpr):
    """The outer level's forward on columns [j BLOCK_M, (j + 1) BLOCK_M) of the [N1, M] view
    of row (b, c), or PAIRED of rows b and b + 1 as one complex row (each at its RowScale):
    F1 @ (contracting n1 over the first N1_IO rows: N1 / 2 where that is at least 16, the rest
    being zero padding), times W_L^(m k1), into the scratch S [groups x C, 2, N1, M]."""
    pid = tl.program_id(0)
    group = pid % groups
    ch = (pid // groups).to(tl.int64)  # 64-bit offsets: B C N may pass 2^31
    b = (group * (2 if PAIRED else 1)).to(tl.int64)
    k1 = tl.arange(0, N1)
    n1 = tl.arange(0, N1_IO)
    m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    n = n1[:, None] * M + m[None, :]
    live = n < length
    x = _input_row(U, W, b, ch, stride_ub, stride_uc, stride_wb, stride_wc, n, live, GATED)
    f_re, f_im = _load_pair(F1, k1[:, None] * N1 + n1[None, :], N1 * N1)
    if PAIRED:
        partner = n < tl.where(b + 1 < batch, length, 0)  # row b + 1, if there is one
        x2 = _input_row(U, W, b + 1, ch, stride_ub, stride_uc, stride_wb, stride_wc, n, partner, GATED)
        xr = (x * tl.load(RowScale + ch * batch + b)).to(F1.dtype.element_ty)
        xi = (x2 * tl.load(RowScale + ch * batch + tl.minimum(b + 1, batch - 1))).to(F1.dtype.element_ty)
        zr, zi = _cdot(f_re, f_im, xr, xi, PRECISION)
    else:
        xs, unscale = _real_operand(x, F1, SCALE)
        zr = tl.dot(f_re, xs, input_precision=PRECISION) * unscale
        zi = tl.dot(f_im, xs, input_precision=PRECISION) * unscale
    tile = k1[:, None] * M + m[None, :]
    t_re, t_im = _load_pair(TW, tile, N1 * M)
    scratch = S + pid.to(tl.int64) * (2 * N1 * M)
    tl.store(scratch + tile, zr * t_re - zi * t_im)
    tl.store(scratch + N1 * M + tile, zr * t_im + zi * t_re)


@triton.jit
def _column_inverse_kernel(S, V, Y, RowScale, F1, TW, batch, groups, length, stride_vb, stride_vc, stride_yb, stride_yc,
                           N1: tl.constexpr, N1_IO: tl.constexpr, M: tl.constexpr, BLOCK_M: tl.constexpr,
                           PAIRED: tl.constexpr, GATED: tl.constexpr, SCALE: tl.constexpr, PRECISION: tl.constexpr):
    """The outer level's inverse: conj twiddles, conj(F1) @ (contracting k1; only the first
    N1_IO output rows), the gate v, into y: the real part, or PAIRED the real part into row b
    and the imaginary part into row b + 1, each scaled back from its RowScale."""
    pid = tl.program_id(0)
    group = pid % groups
    ch = (pid // groups).to(tl.int64)  # 64-bit offsets: B C N may pass 2^31
    b = (group * (2 if PAIRED else 1)).to(tl.int64)
    k1 = tl.arange(0, N1)
    n1 = tl.arange(0, N1_IO)
    m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    tile = k1[:, None] * M + m[None, :]
    scratch = S + pid.to(tl.int64) * (2 * N1 * M)
    zr, zi = _load_pair(scratch, tile, N1 * M)
    t_re, t_im = _load_pair(TW, tile, N1 * M)
    zr, zi = zr * t_re + zi * t_im, zi * t_re - zr * t_im
    ar, ai, unscale = _operand(zr, zi, F1, SCALE)
    f_re, f_im = _load_pair(F1, n1[:, None] * N1 + k1[None, :], N1 * N1)
    n = n1[:, None] * M + m[None, :]
    live = n < length
    if PAIRED:
        y, y2 = _cdot(f_re, -f_im, ar, ai, PRECISION)  # Re and Im of conj(F1) @ Z
        partner = n < tl.where(b + 1 < batch, length, 0)  # row b + 1, if there is one
        y *= unscale / tl.load(RowScale + ch * batch + b)
        y2 *= unscale / tl.load(RowScale + ch * batch + tl.minimum(b + 1, batch - 1))
        _output_row(Y, V, b + 1, ch, stride_yb, stride_yc, stride_vb, stride_vc, n, partner, y2, GATED)
    else:
        y = tl.dot(f_re, ar, input_precision=PRECISION)
        y = tl.dot(f_im, ai, y, input_precision=PRECISION) * unscale
    _output_row(Y, V, b, ch, stride_yb, stride_yc, stride_vb, stride_vc, n, live, y, GATED)


# --- the launcher -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """What a call needs besides the inputs, built outside the timing: the plan, the filter's
    spectrum in kernel order, the DFT factors and twiddles."""

    plan: Plan
    k_f: torch.Tensor
    k_max: torch.Tensor  # [C] float32: each channel's largest spectral magnitude (the row kernel's KMAX)
    f1: torch.Tensor | None
    f2: torch.Tensor
    f3: torch.Tensor
    inner_twiddles: torch.Tensor
    outer_twiddles: torch.Tensor | None


def prepare(k: torch.Tensor, length: int, dtype: torch.dtype, plan: Plan | None = None) -> Prepared:
    """The filter k [C, K] made ready for inputs of `dtype` and `length` (N)."""
    reason = unsupported_reason(length, dtype)
    if reason:
        raise ValueError(reason)
    plan = plan or make_plan(length, dtype)
    problem = plan.problem()
    if problem:
        raise ValueError(problem)
    if plan.length < 2 * length:
        raise ValueError(f"plan {plan} is too short for N={length}: the FFT length must be at least 2N")
    if k.shape[1] > length:
        raise ValueError(f"the filter is longer ({k.shape[1]}) than the sequence ({length})")
    operand, device, m = OPERAND[dtype], k.device, plan.n2 * plan.n3
    k_f = filter_spectrum(k, plan, dtype)
    spectrum = k_f.float()
    return Prepared(
        plan=plan,
        k_f=k_f,
        k_max=spectrum[:, 0].hypot(spectrum[:, 1]).flatten(1).amax(dim=1).contiguous(),
        f1=dft_factor(plan.n1, operand, device) if plan.n1 > 1 else None,
        f2=dft_factor(plan.n2, operand, device),
        f3=dft_factor(plan.n3, operand, device),
        inner_twiddles=twiddles(plan.n2, plan.n3, m, device),
        outer_twiddles=twiddles(plan.n1, m, plan.length, device) if plan.n1 > 1 else None,
    )


def _half(factor: int) -> int:
    """The rows of an outermost factor that hold input (and are wanted as output): half, since
    L >= 2N, where that half is still tl.dot's minimum of 16."""
    return factor // 2 if factor >= 32 else factor


def _rows_view(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def fftconv(u: torch.Tensor, prepared: Prepared, v: torch.Tensor | None = None,
            w: torch.Tensor | None = None) -> torch.Tensor:
    """y [B, C, N] = conv(u) or v * conv(u * w) (reference.fftconv) with the filter `prepared`."""
    batch, channels, length = u.shape
    plan = prepared.plan
    if prepared.k_f.shape[0] != channels or plan.length < 2 * length:
        raise ValueError(f"the filter was prepared for {prepared.k_f.shape[0]} channels and FFT length "
                         f"{plan.length}; u is {tuple(u.shape)}")
    if OPERAND[u.dtype] != prepared.f2.dtype:
        raise ValueError(f"the filter was prepared for {prepared.f2.dtype} operands, u is {u.dtype}")
    gated = v is not None
    u = _rows_view(u)
    v, w = (_rows_view(v), _rows_view(w)) if gated else (u, u)  # never read when not gated
    y = torch.empty_like(u, memory_format=torch.contiguous_format)
    rows = batch * channels
    if rows == 0 or length == 0:
        return y
    scale = prepared.f2.dtype == torch.float16
    precision = dot_precision(prepared.f2.dtype)
    m = plan.n2 * plan.n3
    strides = (u.stride(0), u.stride(1), w.stride(0), w.stride(1), v.stride(0), v.stride(1), y.stride(0), y.stride(1))
    # Two rows of a channel (the same filter) go through one complex transform as its real and
    # imaginary parts (FlashFFTConv's packing): the middle products and the scratch per row halve.
    paired = batch > 1 and plan.paired
    groups = triton.cdiv(batch, 2) if paired else batch
    programs = groups * channels
    if plan.n1 == 1:
        _row_kernel[(programs, 1)](
            u, w, v, y, y, prepared.k_f, prepared.k_max, prepared.f2, prepared.f3, prepared.inner_twiddles, batch, groups,
            length, *strides, N1=1, N2=plan.n2, N3=plan.n3, M=m, N2_IO=_half(plan.n2), CHUNK=plan.rows_per_pass,
            FUSED=True, PAIRED=paired, COMPLEX=paired, GATED=gated, SCALE=scale, PRECISION=precision,
            num_warps=plan.num_warps, num_stages=plan.num_stages)
        return y
    row_scale = y  # never read unpaired
    if paired:  # each row brought to one norm before it shares a complex row
        row_scale = torch.empty(rows, device=u.device, dtype=torch.float32)
        _row_scale_kernel[(rows,)](u, w, row_scale, batch, length, PAIRED_ROW_NORM.value if scale else 1.0,
                                   *strides[:4], BLOCK=1024, GATED=gated)
    scratch = torch.empty(programs, 2, plan.n1, m, device=u.device, dtype=torch.float32)
    columns = (programs, m // plan.block_m)
    _column_forward_kernel[columns](
        u, w, scratch, row_scale, prepared.f1, prepared.outer_twiddles, batch, groups, length, *strides[:4],
        N1=plan.n1, N1_IO=_half(plan.n1), M=m, BLOCK_M=plan.block_m, PAIRED=paired, GATED=gated, SCALE=scale,
        PRECISION=precision, num_warps=plan.column_warps)
    _row_kernel[(programs, plan.n1)](
        u, w, v, y, scratch, prepared.k_f, prepared.k_max, prepared.f2, prepared.f3, prepared.inner_twiddles, batch,
        groups, length, *strides, N1=plan.n1, N2=plan.n2, N3=plan.n3, M=m, N2_IO=plan.n2, CHUNK=plan.rows_per_pass,
        FUSED=False, PAIRED=paired, COMPLEX=True, GATED=gated, SCALE=scale, PRECISION=precision,
        num_warps=plan.num_warps, num_stages=plan.num_stages)
    _column_inverse_kernel[columns](
        scratch, v, y, row_scale, prepared.f1, prepared.outer_twiddles, batch, groups, length, *strides[4:],
        N1=plan.n1, N1_IO=_half(plan.n1), M=m, BLOCK_M=plan.block_m, PAIRED=paired, GATED=gated, SCALE=scale,
        PRECISION=precision, num_warps=plan.column_warps)
    return y


def monarch_fftconv(u: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None = None, w: torch.Tensor | None = None,
                    plan: Plan | None = None) -> torch.Tensor:
    """prepare and fftconv in one call (the filter's spectrum recomputed every time)."""
    if (v is None) != (w is None):
        raise ValueError("the gated form takes both v and w (or neither)")
    return fftconv(u, prepare(k, u.shape[-1], u.dtype, plan), v, w)
