"""FlashFFTConv's long convolution in Triton: the FFT of length L = N1 x N2 x N3 written as
matrix products with small DFT matrices (a Monarch decomposition), so the transforms run on
tensor cores and the product with the filter's spectrum and Hyena's gates are fused in.

The convolution (reference.py): y = irfft(rfft(x, L) * rfft(k, L))[:N] with x = u (or u * w,
then y * v) and L >= 2N a power of two, so the circular convolution is the causal one.

The decomposition (index convention, plans, the DFT factors, twiddles and the filter's
spectrum in kernel order) is monarch.py's. Up to FUSED_MAX_L one kernel (here) runs the
whole convolution of a row on one tile (held [N3, N2]); above, the outer N1-point level makes three
passes over a row (three_pass.py), where torch.fft's rfft, product and irfft each make at
least one (and cuFFT several, at these lengths). The tile's transform is tiles.row_transform.

Two rows a transform. Rows b and b + 1 of a channel share its filter, and the filter is real,
so conv(x_b + i x_{b+1}) = conv(x_b) + i conv(x_{b+1}): one complex transform does both rows,
its result's real part row b's and its imaginary part row b + 1's (FlashFFTConv's packing).
Each row is first scaled to the same norm, so the roundings of the shared complex tiles are
relative to both rows alike. A batch of one (or a plan with paired=False) runs a real row alone.

Real and imaginary parts are separate real tiles: a complex product is 4 real tl.dot (a lone
real row's first product and its real output's last, 2). The input is real and its second
half is zero padding, so the first product reads only the first half of the outer index n2
(or n1: N2/2 or N1/2 values, when that is at least tl.dot's 16), and only the first half of
the output's is computed and stored.

Precision (tiles.py). fp32 inputs use fp32 factors and tables, and their dots run as three TF32
tensor-core products ('tf32x3': each operand split into a TF32 high part and the TF32 of its
remainder, the low-by-low product dropped), about 22 of float32's 24 bits a product, with errors
of 3e-7 to 9e-7 against float64 where torch.fft's are 3e-7 to 5e-7 (H100); true float32 dots
('ieee') are FMA loops, up to 39x torch.fft's time (DOT_PRECISION). bf16 and fp16 inputs use
float16 factors, twiddles and operands on the tensor cores, with float32 accumulation and
products: float16 has 3 more mantissa bits than bfloat16, so the kernel's many roundings (about
10 against the reference's 4) stay small beside bfloat16's; bfloat16's range is kept by scaling
each row once to a fixed norm (tiles.HEADROOM) and dividing the filter's product by KMAX.
OPERAND says which dtype each input dtype uses. float16 twiddles, against float32 ones, halve
the twiddle tables' loads and layout conversions, the passes' bottleneck (Nsight Compute: L1 at
83-89%). With three_pass's float64 row norm, on the H100: 16K plain 0.910 -> 0.795-0.807
ms, gated 1.009-1.017 -> 0.908, the error 2.43e-3 -> 2.45e-3.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from implementations.fftconv.monarch import (Plan, dft_factor, filter_spectrum, io_rows, make_plan, twiddles,
                                             unsupported_reason)
from implementations.fftconv.three_pass import three_pass
from implementations.fftconv.tiles import HEADROOM, PAIRED_ROW_NORM, input_row, norm, output_row, row_transform

OPERAND = {torch.bfloat16: torch.float16, torch.float16: torch.float16, torch.float32: torch.float32}
# tl.dot's input_precision by operand dtype; Triton ignores it for 16-bit operands.
DOT_PRECISION = {torch.float16: "tf32", torch.float32: "tf32x3"}


@triton.jit
def _fused_kernel(U, W, V, Y, KF, KMAX, F2, F3, TW, batch, groups, length,
                  stride_ub, stride_uc, stride_wb, stride_wc, stride_vb, stride_vc, stride_yb, stride_yc,
                  N2: tl.constexpr, N3: tl.constexpr, N2_IO: tl.constexpr, CHUNK: tl.constexpr, PAIRED: tl.constexpr,
                  GATED: tl.constexpr, SCALE: tl.constexpr, PRECISION: tl.constexpr):
    """The whole convolution of row (b, c), or PAIRED of rows b and b + 1 as the real and
    imaginary parts of one complex row, from u (and w) to y (and v), on an [N3, N2] tile,
    reading and writing only its first N2_IO columns (N2 / 2 where that is at least 16: the rest
    is zero padding, or outputs past N)."""
    pid = tl.program_id(0)  # (pairs of) rows in channel-major order: a channel's rows share its spectrum
    ch = (pid // groups).to(tl.int64)  # 64-bit offsets: B C N may pass 2^31
    b = ((pid % groups) * (2 if PAIRED else 1)).to(tl.int64)
    io_tile = tl.arange(0, N3)[:, None] + tl.arange(0, N2_IO)[None, :] * N3  # transposed: tiles.row_transform
    live = io_tile < length
    xr = input_row(U, W, b, ch, stride_ub, stride_uc, stride_wb, stride_wc, io_tile, live, GATED)
    xi = xr  # unused unless PAIRED
    # The scales: SCALE, the row's norm becomes HEADROOM and the filter's product is divided by
    # KMAX, so every later rounding is a plain cast; PAIRED, each row of the pair is brought to
    # the same norm first, so neither row's roundings are set by the other's magnitude.
    scale_r = 1.0
    scale_i = 1.0
    filter_scale = 1.0
    if PAIRED:
        partner = io_tile < tl.where(b + 1 < batch, length, 0)  # row b + 1, if there is one
        xi = input_row(U, W, b + 1, ch, stride_ub, stride_uc, stride_wb, stride_wc, io_tile, partner, GATED)
        target = PAIRED_ROW_NORM if SCALE else 1.0
        norm_r = norm(xr)
        norm_i = norm(xi)
        scale_r = target / tl.where(norm_r > 0.0, norm_r, 1.0)
        scale_i = target / tl.where(norm_i > 0.0, norm_i, 1.0)
    elif SCALE:
        norm_r = norm(xr)
        scale_r = HEADROOM / tl.where(norm_r > 0.0, norm_r, 1.0)
    if SCALE:
        filter_scale = tl.load(KMAX + ch)
        filter_scale = 1.0 / tl.where(filter_scale > 0.0, filter_scale, 1.0)
    operand = F2.dtype.element_ty
    out_r, out_i = row_transform((xr * scale_r).to(operand), (xi * scale_i).to(operand), KF + ch * (2 * N2 * N3),
                                 filter_scale, F2, F3, TW, 1, N2, N3, N2_IO, CHUNK, PAIRED, PRECISION)
    output_row(Y, V, b, ch, stride_yb, stride_yc, stride_vb, stride_vc, io_tile, live,
               out_r * (1.0 / (scale_r * filter_scale)), GATED)
    if PAIRED:
        output_row(Y, V, b + 1, ch, stride_yb, stride_yc, stride_vb, stride_vc, io_tile, partner,
                   out_i * (1.0 / (scale_i * filter_scale)), GATED)


@dataclass(frozen=True)
class Prepared:
    """What a call needs besides the inputs, built outside the timing: the plan, the filter's
    spectrum in kernel order, the DFT factors and twiddles."""

    plan: Plan
    k_f: torch.Tensor
    k_max: torch.Tensor  # [C] float32: each channel's largest spectral magnitude (KMAX)
    f1: torch.Tensor | None
    f2: torch.Tensor
    f3: torch.Tensor
    inner_twiddles: torch.Tensor
    outer_twiddles: tuple[torch.Tensor, torch.Tensor] | None  # W_L^(m k1) as its lane and block factors (three_pass.py)


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
        inner_twiddles=twiddles(plan.n2, plan.n3, m, device, operand),
        outer_twiddles=((twiddles(plan.n1, plan.block_m, plan.length, device, operand),
                         twiddles(m // plan.block_m, plan.n1, plan.length // plan.block_m, device, operand))
                        if plan.n1 > 1 else None),
    )


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
    precision = DOT_PRECISION[prepared.f2.dtype]
    # Two rows of a channel (the same filter) go through one complex transform as its real and
    # imaginary parts (FlashFFTConv's packing): the middle products and the scratch per row halve.
    paired = batch > 1 and plan.paired
    if plan.n1 > 1:
        three_pass(u, v, w, y, prepared, paired, gated, scale, precision)
        return y
    groups = triton.cdiv(batch, 2) if paired else batch
    _fused_kernel[(groups * channels,)](
        u, w, v, y, prepared.k_f, prepared.k_max, prepared.f2, prepared.f3, prepared.inner_twiddles, batch, groups,
        length, u.stride(0), u.stride(1), w.stride(0), w.stride(1), v.stride(0), v.stride(1), y.stride(0), y.stride(1),
        N2=plan.n2, N3=plan.n3, N2_IO=io_rows(plan.n2), CHUNK=plan.rows_per_pass, PAIRED=paired, GATED=gated,
        SCALE=scale, PRECISION=precision, num_warps=plan.num_warps, num_stages=plan.num_stages, **plan.register_cap())
    return y


def monarch_fftconv(u: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None = None, w: torch.Tensor | None = None,
                    plan: Plan | None = None) -> torch.Tensor:
    """prepare and fftconv in one call (the filter's spectrum recomputed every time)."""
    if (v is None) != (w is None):
        raise ValueError("the gated form takes both v and w (or neither)")
    return fftconv(u, prepare(k, u.shape[-1], u.dtype, plan), v, w)
