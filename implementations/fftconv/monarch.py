"""The Monarch decomposition behind the FFT convolution's kernels (triton_fftconv.py): how an
FFT length is factored and launched (Plan, PLANS), and the constant tables the kernels read
(the DFT factors, the twiddles, the filter's spectrum in kernel order), built in float64.

Index convention. A sequence of length L is read as n = M n1 + N3 n2 + n3 (M = N2 N3), and
its spectrum comes out at k = k1 + N1 (k2 + N2 k3): the Cooley-Tukey digit reversal. One
(N1 = 1) or two (N1 >= 16) levels:

- in registers, a length-M sequence is held as the [N3, N2] tile Z[n3, n2] (element N3 n2 + n3:
  the row-major [N2, N3] view transposed, so the products have N3 rows, the tensor cores' M).
  Its DFT is Z @ F2 (the N2-point DFT along the rows, giving columns k2; a DFT matrix is
  symmetric), times the twiddles W_M^(n3 k2) elementwise, then F3 @ (the N3-point DFT down the
  columns, giving rows k3): the tile then holds the spectrum at k2 + N2 k3 as [k3, k2], and is
  never reordered. The filter's spectrum is precomputed in that order (filter_spectrum), so
  the product is elementwise, and the inverse mirrors the steps: conj(F3) @, conj twiddles,
  @ conj(F2), which lands back in natural order.
- above FUSED_MAX_L, an outer N1-point level goes through global memory: kernel 1 takes
  column blocks of the [N1, M] view of x (held [BLOCK_M, N1]), applies the N1-point DFT and the twiddles
  W_L^(m k1), and writes a scratch (float16 for 16-bit inputs); kernel 2 runs the in-register
  transform, the filter's product and the inverse on each row k1 of it; kernel 3 mirrors
  kernel 1 (conj twiddles, conj(F1) @) and writes y (three_pass.py). Three passes over a row,
  where torch.fft's rfft, product and irfft each make at least one (and cuFFT several, at
  these lengths).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from implementations.triton_support import architecture

DTYPES = (torch.bfloat16, torch.float16, torch.float32)
MIN_L = 256  # 16 x 16: tl.dot's minimum of 16 on both factors
MAX_L = 1 << 21  # 128 x 128 x 128
MAX_N = MAX_L // 2
FP32_MAX_TILE = 2048  # elements of a float32 tile (n2 x n3): its tf32x3 dots spill above (FP32_PLANS)
FP32_MAX_L = 128 * FP32_MAX_TILE
FP32_MAX_N = FP32_MAX_L // 2


@dataclass(frozen=True)
class Plan:
    """How one FFT length is factored and launched: L = n1 * n2 * n3, n1 = 1 for the fused
    single-kernel path; the in-register tile is [n2, n3]; column kernels take [n1, block_m]."""

    n1: int
    n2: int
    n3: int
    num_warps: int = 4  # the in-register (row) kernel's
    block_m: int = 64  # the column kernels' block of the [n1, M] view
    column_warps: int = 4
    chunk: int = 0  # rows k2 of the tile the row transform takes at a time; 0: all n2 at once
    num_stages: int = 3  # the row transform's software pipelining of its chunk loop (Triton's default: 3)
    paired: bool = True  # two rows of a channel a transform, when the batch has two (triton_fftconv.py)
    # The row kernel's registers a thread, capped (Triton's maxnreg) to fit one more block an SM; 0: no cap.
    max_registers: int = 0

    def register_cap(self) -> dict[str, int]:
        """The row kernel's launch option capping its registers, if the plan caps them."""
        return {"maxnreg": self.max_registers} if self.max_registers else {}

    @property
    def rows_per_pass(self) -> int:
        return self.chunk or self.n2

    @property
    def length(self) -> int:
        return self.n1 * self.n2 * self.n3

    @property
    def levels(self) -> int:
        """2 for the fused single kernel (N2 x N3), 3 for the column passes around it."""
        return 2 if self.n1 == 1 else 3

    def problem(self) -> str | None:
        sizes = (self.n2, self.n3) + ((self.n1,) if self.n1 > 1 else ())
        if any(s < 16 or s & (s - 1) for s in sizes):
            return f"plan {self}: every factor must be a power of two of at least 16 (tl.dot's minimum)"
        if self.n1 > 1 and (self.block_m < 16 or self.block_m & (self.block_m - 1) or self.block_m > self.n2 * self.n3):
            return f"plan {self}: block_m must be a power of two from 16 to n2 * n3"
        if self.chunk and (self.chunk < 16 or self.chunk & (self.chunk - 1) or self.chunk > self.n2):
            return f"plan {self}: chunk must be 0 or a power of two from 16 to n2"
        if not 1 <= self.num_stages <= 4:
            return f"plan {self}: num_stages must be from 1 to 4"
        if self.max_registers and not 24 <= self.max_registers <= 255:
            return f"plan {self}: max_registers must be 0 (no cap) or from 24 to 255"
        return None


# Per FFT length: (n1, n2, n3, row-kernel warps[, chunk[, stages[, column block_m[, column warps[,
# paired[, max_registers]]]]]]). Up to FUSED_MAX_L one fused kernel; above, an outer factor of
# 16..128 through the column kernels. The tile is held [n3, n2] (tiles.row_transform), so n3 is
# the tensor cores' M: 64 or more runs Hopper's warpgroup MMA.
# Timed on the H100 (Triton 3.6), bf16, gated, with the tiles transposed (this session; before,
# the tiles were [n2, n3] and their products of 32-row chunks ran as mma.sync):
# `python -m implementations.fftconv.tune --lengths 1024,2048,4096` (B8 C512): 1024 at 32 x 64
# (0.040 ms; the [n2, n3] sweep's 64 x 32, 0.063 now), 2048 at 64 x 64 in 32-column chunks
# (0.086), 4096 at 128 x 64, 4 warps, 64-column chunks (0.161; 8 warps whole, 0.327);
# `--lengths 8192,16384,32768 --jobs 14`: N = 8192 best
# at 64 columns a pass, 8 warps, one stage, 1.147 ms (the [n2, n3] tile's 32 rows a pass, 2
# stages: 1.568; now 258 KiB of shared memory, more than the H100's 227); 16384 and 32768 keep
# 16 x 32 x 64 and 32 x 32 x 64 at 4 warps, whose row kernels capped at 128 registers fit 4
# blocks an SM (3 at their 124-131): 16384 1.080 -> 1.029 ms, 32768 2.124 -> 2.017, 65536
# 4.378 -> 4.171 (with 128-column blocks; 16384 too, 1.016). Above, B1 C256 gated (one plan a
# process, the harness's timer): 128 x 128 row tiles in chunks no longer fit shared
# memory (232-246 KiB) and whole ones spill, so N = 131072 runs 64 x 64 x 64 at 4 warps (1.13
# ms, against 1.95 for the [n2, n3] 16 x 128 x 128), 262144 128 x 64 x 64 (2.36), 524288
# 128 x 64 x 128 at 8 warps (5.55) and 1048576, whose only factoring is 128^3, the whole tile
# at 8 warps (18.8 ms, against 15.3 for the [n2, n3] tile in 32-row chunks: the one length the
# transposed tile made slower). Some plans fault the GPU with illegal addresses or return NaN
# on the H100, never in the CPU interpreter (e.g. 16 x 32 x 64 at 8 warps, 64 x 64 x 64 in
# 16-column chunks at 8): compute-sanitizer placed the earlier ones in out-of-bounds __shared__
# reads inside tl.dot (tiles.cdot), Triton 3.6's code for those operand shapes, not an access
# of the kernels'; the sweep isolates them (tune.py), no plan uses them, and
# `python -m implementations.fftconv.check_plans` runs every plan once against the reference.
# The lengths not yet timed follow the timed ones' shapes.
_SM90 = {
    256: (1, 16, 16, 4), 512: (1, 16, 32, 4), 1024: (1, 32, 32, 4), 2048: (1, 32, 64, 4),
    4096: (1, 64, 64, 4, 32, 1), 8192: (1, 128, 64, 4, 64, 1), 16384: (1, 128, 128, 8, 64, 1),
    1 << 15: (16, 32, 64, 4, 0, 3, 128, 4, True, 128), 1 << 16: (32, 32, 64, 4, 0, 3, 64, 4, True, 128),
    1 << 17: (64, 32, 64, 4, 0, 3, 128, 4, True, 128), 1 << 18: (64, 64, 64, 4), 1 << 19: (128, 64, 64, 4),
    1 << 20: (128, 64, 128, 8), 1 << 21: (128, 128, 128, 8),
}
PLANS = {"interpreter": _SM90, "sm90": _SM90, "sm100": _SM90, "sm80": _SM90, "sm8x": _SM90, "other": _SM90}

# float32 inputs run their dots as three TF32 tensor-core products each ('tf32x3',
# triton_fftconv.DOT_PRECISION): a tile holds each operand's high and low parts, three times a
# 16-bit tile's registers, so float32 keeps to tiles of at most FP32_MAX_TILE elements (by the
# offline compile, 64 x 64 spills 2 KB a thread fused; 128 x 16 row tiles 18-44 KB) and to
# three passes from N = 2048. `python -m implementations.fftconv.tune --dtype float32` on the
# H100 (Triton 3.6, B8 C512 gated; B16 C768 at 8192), against torch.fft beside it: N = 512
# 0.067 ms (torch.fft 0.088), 1024 0.165 (0.191), 2048 0.572 (0.385), 4096 0.670 (0.759), 8192
# at 32 x 32 x 16 3.79 (4.43), 16384 at 32 x 64 x 16 3.19 (3.19), 32768 at 32 x 32 x 64 7.13
# (6.95; the sweep's budget ended before the 64 x ... factorings). Two rows a transform beat one
# by 1.6-1.9x at every length, and 16 warps were slowest or faulted. Before (true float32 dots,
# FMA loops), the full tiers' plans took 1.04-39x torch.fft's time (docs/results/fftconv.md).
# Chosen by the offline compile, not swept: N = 65536 at 64 x 32 x 64 with 16-column blocks
# (n1 = 128's paired column kernels spill 0.8-1.9 KB; the full tier: 18.05 ms plain, torch.fft
# 17.02) and 131072 one row a transform (paired, its inverse spills; checked, not timed).
_SM90_FP32 = {
    256: (1, 16, 16, 4), 512: (1, 16, 32, 4), 1024: (1, 64, 16, 4), 2048: (1, 32, 64, 4),
    4096: (16, 16, 16, 4, 0, 3, 64, 4, True), 8192: (16, 32, 16, 4, 0, 3, 64, 4, True),
    16384: (32, 32, 16, 4, 0, 3, 64, 4, True), 1 << 15: (32, 64, 16, 4, 0, 3, 64, 4, True),
    1 << 16: (32, 32, 64, 4, 0, 3, 64, 4, True), 1 << 17: (64, 32, 64, 4, 0, 3, 16, 4, True),
    1 << 18: (128, 32, 64, 4, 0, 3, 16, 8, False),
}
FP32_PLANS = {arch: _SM90_FP32 for arch in PLANS}
FUSED_MAX_L = 16384


def fft_length(length: int) -> int:
    """L: a power of two of at least 2N (so the circular convolution is causal) and MIN_L."""
    return max(MIN_L, 1 << max(0, (2 * length - 1).bit_length()))


def io_rows(factor: int) -> int:
    """The rows of an outermost factor that hold input (and are wanted as output): half, since
    L >= 2N, where that half is still tl.dot's minimum of 16."""
    return factor // 2 if factor >= 32 else factor


def unsupported_reason(length: int, dtype: torch.dtype) -> str | None:
    if dtype not in DTYPES:
        return f"dtype {dtype} is not supported (accepted: bfloat16, float16, float32)"
    if length > MAX_N:
        return (f"N={length} is longer than the Monarch kernels' {MAX_N}: the FFT length 2N is at most "
                f"{MAX_L} = 128 x 128 x 128")
    if dtype == torch.float32 and length > FP32_MAX_N:
        return (f"N={length} is longer than the float32 kernels' {FP32_MAX_N} (16-bit inputs go to {MAX_N}): "
                f"float32 dots hold three TF32 parts of each operand, whose tiles spill past {FP32_MAX_TILE} "
                f"elements, so 2N is at most {FP32_MAX_L} = 128 x {FP32_MAX_TILE}")
    return None


def make_plan(length: int, dtype: torch.dtype = torch.bfloat16) -> Plan:
    """The plan for sequences of `length` and inputs of `dtype` on this architecture (read at
    launch, not import): float32 inputs have their own table (FP32_PLANS)."""
    reason = unsupported_reason(length, dtype)
    if reason:
        raise ValueError(reason)
    tables = FP32_PLANS if dtype == torch.float32 else PLANS
    n1, n2, n3, warps, *rest = tables[architecture()][fft_length(length)]
    return Plan(n1, n2, n3, num_warps=warps,
                **dict(zip(("chunk", "num_stages", "block_m", "column_warps", "paired", "max_registers"), rest)))


# --- the constant tables, built once in float64 and rounded -----------------------------------


def _roots(n: int, exponents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of -2 pi e / n, the exponents reduced mod n in exact integer arithmetic."""
    angle = (exponents % n).to(torch.float64) * (-2.0 * math.pi / n)
    return torch.cos(angle), torch.sin(angle)


@functools.lru_cache(maxsize=None)
def dft_factor(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The unitary n-point DFT matrix exp(-2 pi i j k / n) / sqrt(n) as [2, n, n] (real, imaginary)."""
    j = torch.arange(n, dtype=torch.int64)
    re, im = _roots(n, j[:, None] * j[None, :])
    return (torch.stack([re, im]) / math.sqrt(n)).to(dtype=dtype, device=device).contiguous()


@functools.lru_cache(maxsize=None)
def twiddles(rows: int, cols: int, length: int, device: torch.device,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """W_length^(r c) = exp(-2 pi i r c / length) for a [rows, cols] tile, as [2, rows, cols] of
    `dtype` (the kernels multiply in float32 whatever the table holds). The in-register level
    uses (N2, N3, M): row k2, column n3; the outer level (N1, M, L)."""
    r = torch.arange(rows, dtype=torch.int64)[:, None]
    c = torch.arange(cols, dtype=torch.int64)[None, :]
    re, im = _roots(length, r * c)
    return torch.stack([re, im]).to(dtype=dtype, device=device).contiguous()


def filter_spectrum(k: torch.Tensor, plan: Plan, dtype: torch.dtype) -> torch.Tensor:
    """The filter's L-point DFT in the kernels' order, [C, 2, N1, N2, N3] of `dtype`: element
    [c, :, k1, k2, k3] is the bin k1 + N1 (k2 + N2 k3). Computed in float64, outside the timing."""
    channels = k.shape[0]
    spectrum = torch.fft.fft(k.to(torch.float64), n=plan.length)  # [C, L]
    ordered = spectrum.reshape(channels, plan.n3, plan.n2, plan.n1).permute(0, 3, 2, 1)
    return torch.stack([ordered.real, ordered.imag], dim=1).to(dtype).contiguous()
