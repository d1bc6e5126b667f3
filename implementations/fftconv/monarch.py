"""The Monarch decomposition behind the FFT convolution's kernels (triton_fftconv.py): how an
FFT length is factored and launched (Plan, PLANS), and the constant tables the kernels read
(the DFT factors, the twiddles, the filter's spectrum in kernel order), built in float64.

Index convention. A sequence of length L is read as n = M n1 + N3 n2 + n3 (M = N2 N3), and
its spectrum comes out at k = k1 + N1 (k2 + N2 k3): the Cooley-Tukey digit reversal. One
(N1 = 1) or two (N1 >= 16) levels:

- in registers, a length-M sequence is a [N2, N3] tile Z[n2, n3] (row-major: a plain load).
  Its DFT is F2 @ Z (the N2-point DFT down the columns, giving rows k2), times the twiddles
  W_M^(n3 k2) elementwise, then @ F3 (the N3-point DFT along the rows, giving columns k3):
  the tile then holds the spectrum at k2 + N2 k3, transposed with respect to the input, and
  is never transposed back. The filter's spectrum is precomputed in the same order
  (filter_spectrum), so the product is elementwise, and the inverse mirrors the steps:
  @ conj(F3), conj twiddles, conj(F2) @, which lands back in natural order.
- above FUSED_MAX_L, an outer N1-point level goes through global memory: kernel 1 takes
  column blocks [N1, BLOCK_M] of the [N1, M] view of x, applies F1 @ and the twiddles
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
FP32_MAX_TILE = 2048  # elements of a float32 tile (n2 x n3): its FMA dots spill above (FP32_PLANS)
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
        return None


# Per FFT length: (n1, n2, n3, row-kernel warps[, chunk[, stages[, column block_m[, column warps]]]]). Up to FUSED_MAX_L one fused kernel; above,
# an outer factor of 16..128 through the column kernels. The tile's larger factor is n2 (the
# first product contracts only half of it, the last produces only half).
# Timed on the H100 (Triton 3.6; `python -m implementations.fftconv.tune --lengths 8192,16384`,
# bf16, gated): N = 8192 (16384) best at 32 rows a pass, 8 warps, 2 stages, 2.99 ms (its whole
# tile at 16 warps spilled: 19.1 ms); N = 16384 (32768) at 16 x 32 x 64, 4 warps, 2.89 ms.
# Whole 64-row tiles at 4 warps in the three-pass row kernel (16 x 64 x 16, 16 x 64 x 32) came
# out NaN, one with an illegal address: Triton 3.6's code, not the interpreter's (the CPU tests
# pass them), so the three-pass plans keep to 32-row tiles or chunks of 32 rows, and the
# 128 x 128 ones to one stage (at two, 264 KiB of shared memory: more than an H100's 227).
# Not every such tile faults (16 x 64 x 64 at 4 warps ran correct in one sweep at N = 32768:
# 4.47 ms, against 4.75 for 32 x 32 x 64), but 16 x 64 x 32 at 16384 faulted again; the sweep
# no longer offers three-pass 64-row tiles at 4 warps, and no plan uses them. Two rows a transform (the packing) since: at
# N = 8192 the same fused plan is best, 1.54 ms (was 2.99); at 16384, 16 x 32 x 64 again,
# 1.44 ms; at 2048 the whole 64 x 64 tile at 4 warps, 0.075 ms, where 8 warps (the unpaired
# kernel's best) took 0.136. The three passes' scratch in float16 since (this session's probe,
# B8 C512 gated, against torch.fft's 3.94 / 8.43 / 22.2 ms in the same run): 16384 at 1.20 ms
# (the float32 scratch's sweep: 1.44), 32768 at 2.40 (2.82), 65536 at 4.83 with 128-column
# blocks (64: 4.90); 128- and 256-column blocks and 8 column warps were no faster at 16384 and
# 32768. compute-sanitizer on the faulting plans (16 x 64 x 16 at 4 warps, the fused 128 x 32 at
# 16 warps) reports out-of-bounds __shared__ reads inside tl.dot (tiles.cdot): Triton 3.6's code
# for those operand shapes, not an access of the kernels'. The lengths not yet timed follow
# the timed ones' shapes.
_SM90 = {
    256: (1, 16, 16, 4), 512: (1, 32, 16, 4), 1024: (1, 32, 32, 4), 2048: (1, 64, 32, 4),
    4096: (1, 64, 64, 4), 8192: (1, 128, 64, 8), 16384: (1, 128, 128, 8, 32, 2),
    1 << 15: (16, 32, 64, 4), 1 << 16: (32, 32, 64, 4), 1 << 17: (64, 32, 64, 4, 0, 3, 128), 1 << 18: (16, 128, 128, 8, 32, 1),
    1 << 19: (32, 128, 128, 8, 32, 1), 1 << 20: (64, 128, 128, 8, 32, 1), 1 << 21: (128, 128, 128, 8, 32, 1),
}
PLANS = {"interpreter": _SM90, "sm90": _SM90, "sm100": _SM90, "sm80": _SM90, "sm8x": _SM90, "other": _SM90}

# float32 inputs run true float32 dots, which Triton lowers to FMA loops, not tensor cores: a
# tile takes several times the registers and shared memory of a 16-bit one. By the offline
# compile (`python -m implementations.fftconv.tune --offline sm90 --dtype float32`): no 128 x 128
# float32 tile fits an H100 (248-448 KiB of shared memory), a 64 x 64 one spills 25 KB a thread,
# so float32 keeps to tiles of at most FP32_MAX_TILE elements, fused to N = 1024 and in three
# passes above. On the H100 (docs/results/fftconv.md): the three-pass row kernel's 16 x 64 tile
# took 225 ms at 4 warps and 15.6 ms at 8 (N = 8192, B16 C768, gated); the full run's plans took
# 0.44-16 ms to N = 32768, but 376 ms at N = 65536 (64 x 32 x 64 at 16 warps, whose row kernel
# spills 3.4 KB a thread). Longer, by the offline compile (not yet timed): n1 = 128, its column
# kernels on 16 columns at 8 warps (64 columns at 4 warps spill 15-40 KB), and the least-spilling
# row tile (16 x 64: 0.7 KB; at N = 131072 no 2048-element tile spills under 3.4 KB).
# Two rows a transform (the packing) made float32 faster to N = 8192 (7.1 -> 4.4 ms at the
# headline) and 5-8x slower from N = 16384 (5.4 -> 41 ms; 68 -> 341 at 65536), where the
# column kernels' 64- and 128-row complex FMA dots take twice the registers of the real ones:
# those plans keep one row a transform (the ninth entry).
_SM90_FP32 = {
    256: (1, 16, 16, 4), 512: (1, 16, 32, 4), 1024: (1, 32, 32, 4), 2048: (1, 64, 32, 8),
    4096: (16, 16, 16, 4), 8192: (16, 16, 32, 4), 16384: (32, 16, 32, 4),
    1 << 15: (64, 16, 32, 4, 0, 3, 64, 4, False), 1 << 16: (64, 32, 32, 8, 0, 3, 64, 4, False),
    1 << 17: (128, 16, 64, 8, 0, 3, 16, 8, False), 1 << 18: (128, 32, 64, 16, 0, 3, 16, 8, False),
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
                f"float32 dots run as FMA loops, whose tiles spill past {FP32_MAX_TILE} elements, so 2N is at most "
                f"{FP32_MAX_L} = 128 x {FP32_MAX_TILE}")
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
                **dict(zip(("chunk", "num_stages", "block_m", "column_warps", "paired"), rest)))


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
def twiddles(rows: int, cols: int, length: int, device: torch.device) -> torch.Tensor:
    """W_length^(r c) = exp(-2 pi i r c / length) for a [rows, cols] tile, as [2, rows, cols] float32.
    The in-register level uses (N2, N3, M): row k2, column n3; the outer level (N1, M, L)."""
    r = torch.arange(rows, dtype=torch.int64)[:, None]
    c = torch.arange(cols, dtype=torch.int64)[None, :]
    re, im = _roots(length, r * c)
    return torch.stack([re, im]).to(dtype=torch.float32, device=device).contiguous()


def filter_spectrum(k: torch.Tensor, plan: Plan, dtype: torch.dtype) -> torch.Tensor:
    """The filter's L-point DFT in the kernels' order, [C, 2, N1, N2, N3] of `dtype`: element
    [c, :, k1, k2, k3] is the bin k1 + N1 (k2 + N2 k3). Computed in float64, outside the timing."""
    channels = k.shape[0]
    spectrum = torch.fft.fft(k.to(torch.float64), n=plan.length)  # [C, L]
    ordered = spectrum.reshape(channels, plan.n3, plan.n2, plan.n1).permute(0, 3, 2, 1)
    return torch.stack([ordered.real, ordered.imag], dim=1).to(dtype).contiguous()
