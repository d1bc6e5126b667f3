"""The Triton device functions both decompositions share (triton_fftconv.py's fused kernel,
three_pass.py's passes): complex tile products, the rows' loads and stores, and the in-register
transform of one tile, held [N3, N2], with the filter's product (`row_transform`).

Precision. The DFT factors are unitary (each scaled by 1/sqrt(n)), so every stage preserves
a row's L2 norm, and twiddles have unit modulus; the filter's spectrum is unscaled. 16-bit
inputs run float16 operands on the tensor cores (float32 accumulation): a row is scaled once
so that its norm is HEADROOM and the filter's product divided by KMAX (the channel's largest
spectral magnitude), so no element of any later stage exceeds HEADROOM and every rounding to
float16 is a plain cast, whatever bfloat16's range put in the row.
"""

from __future__ import annotations

import triton
import triton.language as tl

# The bound on a tile's magnitudes before its float16 rounding: far below 65504 (the stages'
# own roundings may pass a norm's bound by a part in a thousand), and values 2^-26 of it still
# normal (float16's smallest normal is 2^-14), since a norm can be sqrt(M) = 128 times a tile's
# largest element.
HEADROOM = tl.constexpr(4096.0)
# Each row of a pair is brought to this norm, so the pair's complex row has norm HEADROOM.
PAIRED_ROW_NORM = tl.constexpr(HEADROOM.value * 0.70710678)


@triton.jit
def norm(x):
    """The L2 norm of the tile x, summed on x divided by its largest magnitude (the squares of
    bfloat16-range values overflow float32)."""
    peak = tl.max(tl.abs(x))
    peak = tl.where(peak > 0.0, peak, 1.0)
    x = x / peak
    return peak * tl.sqrt(tl.sum(x * x))


@triton.jit
def cdot(ar, ai, br, bi, PRECISION: tl.constexpr):
    """(ar + i ai) @ (br + i bi) with four real dots, accumulated in float32."""
    re = tl.dot(ar, br, input_precision=PRECISION)
    re = tl.dot(-ai, bi, re, input_precision=PRECISION)
    im = tl.dot(ar, bi, input_precision=PRECISION)
    im = tl.dot(ai, br, im, input_precision=PRECISION)
    return re, im


@triton.jit
def load_pair(ptr, offsets, plane):
    """The real and imaginary planes of a [2, ...] table at `offsets`, in float32."""
    return tl.load(ptr + offsets).to(tl.float32), tl.load(ptr + plane + offsets).to(tl.float32)


@triton.jit
def input_row(U, W, b, ch, stride_ub, stride_uc, stride_wb, stride_wc, offsets, live, GATED: tl.constexpr):
    """Row (b, ch) of x = u (or u * w) at `offsets`, in float32."""
    x = tl.load(U + b * stride_ub + ch * stride_uc + offsets, mask=live, other=0.0).to(tl.float32)
    if GATED:
        x *= tl.load(W + b * stride_wb + ch * stride_wc + offsets, mask=live, other=0.0).to(tl.float32)
    return x


@triton.jit
def output_row(Y, V, b, ch, stride_yb, stride_yc, stride_vb, stride_vc, offsets, live, y, GATED: tl.constexpr):
    """y (times v) into row (b, ch) of Y at `offsets`."""
    if GATED:
        y *= tl.load(V + b * stride_vb + ch * stride_vc + offsets, mask=live, other=0.0).to(tl.float32)
    tl.store(Y + b * stride_yb + ch * stride_yc + offsets, y.to(Y.dtype.element_ty), mask=live)


@triton.jit
def row_transform(xr, xi, k_f, filter_scale, F2, F3, TW, N1: tl.constexpr, N2: tl.constexpr, N3: tl.constexpr,
                  N2_IO: tl.constexpr, CHUNK: tl.constexpr, COMPLEX: tl.constexpr, PRECISION: tl.constexpr):
    """The length-M (= N2 N3) transform of the operand tile (xr, xi) [N3, N2_IO] (element
    [n3, n2] is the sequence's N3 n2 + n3; its columns past N2_IO are zero), the product with
    the filter's spectrum k_f (its [2, N1, M] table at this row's k1, times filter_scale) and
    the inverse: (out_r, out_i) [N3, N2_IO], the first N2_IO columns, in float32. COMPLEX: the
    operand's imaginary part and the result's are used (else xi is ignored and only out_r is
    meant: one real row's real output).

    The tile is held transposed (n3 down its rows) so that every product has N3 rows, the
    tensor cores' M: Hopper's warpgroup MMA takes 64 rows or more a warpgroup, and a tile of
    N2 rows chunked by CHUNK ran its products as Ampere's mma.sync (docs/results/fftconv.md).

    CHUNK columns k2 of the spectrum at a time (all N2 when CHUNK = N2): each chunk's
    contribution is summed, for fewer live registers than the whole [N3, N2] tile at once, for
    the same arithmetic. A whole tile runs straight, not as a loop of one iteration."""
    if CHUNK == N2:
        out_r, out_i = _chunk(0, xr, xi, k_f, filter_scale, F2, F3, TW, N1, N2, N3, N2_IO, CHUNK, COMPLEX, PRECISION)
    else:
        out_r = tl.zeros([N3, N2_IO], dtype=tl.float32)
        out_i = tl.zeros([N3, N2_IO], dtype=tl.float32)
        for c0 in range(0, N2, CHUNK):
            part_r, part_i = _chunk(c0, xr, xi, k_f, filter_scale, F2, F3, TW, N1, N2, N3, N2_IO, CHUNK, COMPLEX,
                                    PRECISION)
            out_r += part_r
            out_i += part_i
    return out_r, out_i


@triton.jit
def _chunk(c0, xr, xi, k_f, filter_scale, F2, F3, TW, N1: tl.constexpr, N2: tl.constexpr, N3: tl.constexpr,
           N2_IO: tl.constexpr, CHUNK: tl.constexpr, COMPLEX: tl.constexpr, PRECISION: tl.constexpr):
    """Columns k2 in [c0, c0 + CHUNK) of the spectrum through the twiddles, F3 @, the filter's
    product, conj(F3) @ and the conjugate twiddles, and their contribution to @ conj(F2)."""
    M: tl.constexpr = N2 * N3
    io = tl.arange(0, N2_IO)
    n3 = tl.arange(0, N3)
    operand = F2.dtype.element_ty
    ks = c0 + tl.arange(0, CHUNK)
    chunk = ks[None, :] * N3 + n3[:, None]  # [N3, CHUNK] of the [k2, n3]-ordered tables (twiddles, spectrum)
    # Forward: @ F2 contracts n2 (columns k2 out; a DFT matrix is symmetric), the twiddles
    # W_M^(n3 k2), F3 @ contracts n3 (rows k3 out).
    f_re = tl.load(F2 + io[:, None] * N2 + ks[None, :])  # F2[:N2_IO, ks]
    f_im = tl.load(F2 + N2 * N2 + io[:, None] * N2 + ks[None, :])
    if COMPLEX:
        zr, zi = cdot(xr, xi, f_re, f_im, PRECISION)
    else:
        zr = tl.dot(xr, f_re, input_precision=PRECISION)
        zi = tl.dot(xr, f_im, input_precision=PRECISION)
    t_re, t_im = load_pair(TW, chunk, M)
    zr, zi = zr * t_re - zi * t_im, zr * t_im + zi * t_re
    g_re = tl.load(F3 + n3[:, None] * N3 + n3[None, :])
    g_im = tl.load(F3 + N3 * N3 + n3[:, None] * N3 + n3[None, :])
    zr, zi = cdot(g_re, g_im, zr.to(operand), zi.to(operand), PRECISION)

    # The filter's spectrum, in the same digit-reversed order; the product in float32.
    kr, ki = load_pair(k_f, chunk, N1 * M)
    kr *= filter_scale
    ki *= filter_scale
    zr, zi = zr * kr - zi * ki, zr * ki + zi * kr

    # Inverse: conj(F3) @, the conjugate twiddles, @ conj(F2) (natural order again). The
    # factors and twiddles are loaded again (from L2) rather than kept live across the product.
    g_re = tl.load(F3 + n3[:, None] * N3 + n3[None, :])
    g_im = tl.load(F3 + N3 * N3 + n3[:, None] * N3 + n3[None, :])
    zr, zi = cdot(g_re, -g_im, zr.to(operand), zi.to(operand), PRECISION)
    t_re, t_im = load_pair(TW, chunk, M)
    zr, zi = zr * t_re + zi * t_im, zi * t_re - zr * t_im
    ar = zr.to(operand)
    ai = zi.to(operand)
    f_re = tl.load(F2 + ks[:, None] * N2 + io[None, :])  # F2[ks, :N2_IO]
    f_im = tl.load(F2 + N2 * N2 + ks[:, None] * N2 + io[None, :])
    if COMPLEX:
        part_r, part_i = cdot(ar, ai, f_re, -f_im, PRECISION)
    else:
        # One real row: only the real part is wanted, Re(E @ conj(F2)) = Er @ F2r + Ei @ F2i.
        part_r = tl.dot(ar, f_re, input_precision=PRECISION)
        part_r = tl.dot(ai, f_im, part_r, input_precision=PRECISION)
        part_i = part_r
    return part_r, part_i
